"""Token reduction layers on padded ``(B, L, D)`` input; each returns what it kept or merged.

Prefix tokens (CLS, registers) are never reduced and stay first. See :class:`ReductionOutput`.
"""

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
from longseq.core.reduction.timm import ToMeState, apply_token_reduction, remove_token_reduction

__all__ = [
    "Merge",
    "PatchDropout",
    "RandomLTD",
    "ReductionOutput",
    "StructuredPatchout",
    "TokenMerging",
    "bipartite_soft_matching",
    "compose_merge_maps",
    "gather_tokens",
    "merge_wavg",
    "proportional_attention_bias",
    "proportional_attention_score_mod",
    "random_keep_index",
    "random_ltd_forward",
    "scatter_tokens",
    "unmerge",
    "ToMeState",
    "apply_token_reduction",
    "remove_token_reduction",
]
