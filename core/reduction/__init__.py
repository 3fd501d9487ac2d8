"""Token reduction layers; each returns what it kept or merged (:class:`ReductionOutput`).

Prefix tokens (CLS, registers) are never reduced and stay first.

* merging: :class:`TokenMerging` (ToMe) and its parts (``merge.py``);
* pruning by attention: :class:`AttentiveTokenPruning` (EViT), :class:`LearnedTokenPruning` (LTP) (``prune.py``);
* dropping for training: :class:`PatchDropout`, :class:`StructuredPatchout`, :class:`RandomLTD` (``drop.py``);
* packed ``(T, D)`` input for merging and dropping, per sequence (``packed.py``; the layers above dispatch to
  it with ``packed=``); EViT, LTP and pooling take ``packed=`` in their own files;
* timm ViTs patched in place: :func:`apply_token_reduction` (``timm.py``; imported on first use, so this
  package does not import timm until a timm name is asked for).
"""

from __future__ import annotations

import importlib
from typing import Any

from longseq.core.reduction.base import ReductionOutput, compose_merge_maps, unmerge
from longseq.core.reduction.drop import (
    PatchDropout,
    RandomLTD,
    StructuredPatchout,
    gather_tokens,
    random_keep_index,
    random_ltd_forward,
    scatter_tokens,
)
from longseq.core.reduction.merge import (
    Merge,
    TokenMerging,
    bipartite_soft_matching,
    merge_wavg,
    proportional_attention_bias,
    proportional_attention_score_mod,
)
from longseq.core.reduction.packed import (
    PackedMerge,
    bipartite_soft_matching_packed,
    merge_wavg_packed,
    patch_dropout_packed,
    random_keep_index_packed,
    random_ltd_forward_packed,
    structured_patchout_packed,
    token_merging_packed,
)
from longseq.core.reduction.prune import (
    AttentiveTokenPruning,
    LearnedTokenPruning,
    attention_received,
    attentive_prune,
    attentive_prune_packed,
    cls_attention,
    evit_num_kept,
    ltp_regularization_loss,
)
from longseq.core.reduction.varlen import VarlenOutput

_TIMM_NAMES = ("EViTState", "ToMeState", "apply_token_reduction", "remove_token_reduction")


def __getattr__(name: str) -> Any:
    """Import ``timm.py`` (and timm) on first access of one of its names."""
    if name in _TIMM_NAMES:
        return getattr(importlib.import_module("longseq.core.reduction.timm"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttentiveTokenPruning",
    "EViTState",
    "LearnedTokenPruning",
    "Merge",
    "PackedMerge",
    "PatchDropout",
    "RandomLTD",
    "ReductionOutput",
    "StructuredPatchout",
    "ToMeState",
    "TokenMerging",
    "VarlenOutput",
    "apply_token_reduction",
    "attention_received",
    "attentive_prune",
    "attentive_prune_packed",
    "bipartite_soft_matching",
    "bipartite_soft_matching_packed",
    "cls_attention",
    "compose_merge_maps",
    "evit_num_kept",
    "gather_tokens",
    "ltp_regularization_loss",
    "merge_wavg",
    "merge_wavg_packed",
    "patch_dropout_packed",
    "proportional_attention_bias",
    "proportional_attention_score_mod",
    "random_keep_index",
    "random_keep_index_packed",
    "random_ltd_forward",
    "random_ltd_forward_packed",
    "remove_token_reduction",
    "scatter_tokens",
    "structured_patchout_packed",
    "token_merging_packed",
    "unmerge",
]
