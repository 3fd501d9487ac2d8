"""Attention for longseq: one spec, sibling backends (``math``, ``sdpa``, ``flex``, ``flash``), mask
patterns, positional schemes, ProbSparse and the ``Attention`` mixer. See docs/attention.md.

>>> out = attention(q, k, v, causal=True, window=(256, 0))          # (B, L, H, D) in, same out
>>> layer = Attention(512, 8, num_kv_heads=2, positions="rope", causal=True)
"""

# Importing the backend modules registers them.
from longseq.core.attention import flash as _flash  # noqa: F401
from longseq.core.attention import flex as _flex  # noqa: F401
from longseq.core.attention import sdpa as _sdpa  # noqa: F401
from longseq.core.attention.base import (
    FEATURES,
    AttentionBackend,
    AttentionSpec,
    MaskMod,
    ScoreMod,
    get_backend,
    list_backends,
    register_backend,
)
from longseq.core.attention.functional import (
    AUTO_ORDER,
    ENV_VAR,
    attend,
    attention,
    reset_fallback_warnings,
    select_backend,
)
from longseq.core.attention.layer import Attention, AttentionConfig, KVCache
from longseq.core.attention.math import attention_ref
from longseq.core.attention.positions import PositionScheme, create_positions, list_positions, register_positions
from longseq.core.attention.probsparse import probsparse_attention
from longseq.core.attention.support import format_support_matrix, markdown_support_matrix, support_matrix

__all__ = [
    "AUTO_ORDER",
    "ENV_VAR",
    "FEATURES",
    "Attention",
    "AttentionBackend",
    "AttentionConfig",
    "AttentionSpec",
    "KVCache",
    "MaskMod",
    "PositionScheme",
    "ScoreMod",
    "attend",
    "attention",
    "attention_ref",
    "create_positions",
    "format_support_matrix",
    "get_backend",
    "list_backends",
    "list_positions",
    "markdown_support_matrix",
    "probsparse_attention",
    "register_backend",
    "register_positions",
    "reset_fallback_warnings",
    "select_backend",
    "support_matrix",
]
