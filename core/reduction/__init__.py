"""Token reduction layers on padded ``(B, L, D)`` input; each returns what it kept or merged.

Prefix tokens (CLS, registers) are never reduced and stay first. See :class:`ReductionOutput`.
"""

from longseq.core.reduction.base import ReductionOutput, compose_merge_maps, unmerge
from longseq.core.reduction.merge import (
    Merge,
    TokenMerging,
    bipartite_soft_matching,
    merge_wavg,
    proportional_attention_bias,
    proportional_attention_score_mod,
)

__all__ = [
    "Merge",
    "ReductionOutput",
    "TokenMerging",
    "bipartite_soft_matching",
    "compose_merge_maps",
    "merge_wavg",
    "proportional_attention_bias",
    "proportional_attention_score_mod",
    "unmerge",
]
