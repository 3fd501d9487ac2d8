"""Token reduction layers; each returns what it kept or merged (:class:`ReductionOutput`).

Prefix tokens (CLS, registers) are never reduced and stay first.

* merging: :class:`TokenMerging` (ToMe) and its parts (``merge.py``);
* pruning by attention: :class:`AttentiveTokenPruning` (EViT), :class:`LearnedTokenPruning` (LTP) (``prune.py``);
* dropping for training: :class:`PatchDropout`, :class:`StructuredPatchout`, :class:`RandomLTD` (``drop.py``);
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
from longseq.core.reduction.prune import (
    AttentiveTokenPruning,
    LearnedTokenPruning,
    VarlenOutput,
    attention_received,
    attentive_prune,
    attentive_prune_packed,
    cls_attention,
    evit_num_kept,
    ltp_regularization_loss,
)

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
    "cls_attention",
    "compose_merge_maps",
    "evit_num_kept",
    "gather_tokens",
    "ltp_regularization_loss",
    "merge_wavg",
    "proportional_attention_bias",
    "proportional_attention_score_mod",
    "random_keep_index",
    "random_ltd_forward",
    "remove_token_reduction",
    "scatter_tokens",
    "unmerge",
]
