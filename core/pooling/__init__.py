"""Pooling: one vector per sequence, and token pooling between stages.

Sequence pooling (:func:`pool_sequences`, registry :data:`POOLINGS` and :func:`create_pooling`): ``mean``,
``max``, ``cls``, ``last`` and learned-query ``attention`` pooling of padded ``(B, L, D)`` features (with an
optional bool ``mask``, True at real tokens) or packed ``(T, D)`` features with their
:class:`~longseq.core.packing.PackedBatch`. Token ``sizes`` from merging (:mod:`longseq.core.reduction`)
weight ``mean`` and ``attention`` pooling, so a merged token counts as the tokens it stands for.

Token pooling between stages, each returning a :class:`~longseq.core.reduction.ReductionOutput` (what went
where, token sizes) and keeping prefix tokens (CLS, registers) first and unchanged:

* :func:`token_pool` / :class:`TokenPool`: mean or max over windows of ``stride`` consecutive tokens;
* :class:`FunnelQueryPool` (Funnel Transformer, Dai et al. 2020): pool the queries, attend to all keys;
* :class:`HierarchicalStages` (HVT, Pan et al. 2021): block stages with max-pooling between them;
* :class:`DynamicTokenPooling` (Nawrot et al. 2023): learned segment boundaries, segment means, and
  :func:`upsample` back to the original positions.

Packed input gives the same result as running every sequence alone; ragged outputs come as
:class:`~longseq.core.reduction.VarlenOutput` (padded with a ``mask``, or packed with new boundaries).
"""

from longseq.core.pooling.dynamic import DynamicPoolingOutput, DynamicTokenPooling, upsample
from longseq.core.pooling.sequence import (
    POOL_KINDS,
    POOLINGS,
    AttentionPool,
    AttentionPooling,
    ClsPool,
    LastPool,
    MaxPool,
    MeanPool,
    SequencePool,
    create_pooling,
    list_poolings,
    pool_sequences,
    register_pooling,
)
from longseq.core.pooling.stages import FunnelQueryPool, HierarchicalStages, TokenPool, token_pool

__all__ = [
    "POOLINGS",
    "POOL_KINDS",
    "AttentionPool",
    "AttentionPooling",
    "ClsPool",
    "DynamicPoolingOutput",
    "DynamicTokenPooling",
    "FunnelQueryPool",
    "HierarchicalStages",
    "LastPool",
    "MaxPool",
    "MeanPool",
    "SequencePool",
    "TokenPool",
    "create_pooling",
    "list_poolings",
    "pool_sequences",
    "register_pooling",
    "token_pool",
    "upsample",
]
