"""One vector per sequence: :func:`pool_sequences` (mean, max, CLS, last, learned-query attention) and
the pooling registry (:data:`POOLINGS`, :func:`register_pooling`, :func:`create_pooling`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from longseq.core.packing import PackedBatch, segment_ids, segment_mean, segment_softmax, segment_sum
from longseq.core.reduction.varlen import (
    _check_prefix,
    _check_tokenwise,
)

# ruff: noqa: N806  (B, L, D, T, H, P, S follow the shape-comment convention)

PoolKind = Literal["mean", "max", "cls", "last", "attention"]
#: The kinds :func:`pool_sequences` computes.
POOL_KINDS: tuple[str, ...] = ("mean", "max", "cls", "last", "attention")


# --------------------------------------------------------------------------------------------
# sequence pooling
# --------------------------------------------------------------------------------------------


class AttentionPool(nn.Module):
    """Learned-query attention pooling: per head, a softmax over a sequence's tokens weights its features.

    ``score_t = (W_k x_t) . q / sqrt(D/H)`` per head; the output for head ``h`` is the weighted sum of
    that head's ``D/H`` channels of ``x``.
    """

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.randn(num_heads, dim // num_heads) * 0.02)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> ``(..., H)`` attention logits."""
        k = self.key(x).unflatten(-1, (self.num_heads, -1))  # (..., H, D/H)
        return (k * self.query).sum(-1) * k.shape[-1] ** -0.5

    def weighted(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., D)`` times per-head ``weights`` ``(..., H)``."""
        return (x.unflatten(-1, (self.num_heads, -1)) * weights[..., None]).flatten(-2)


def _first_last_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first and last True of each row of a bool ``(B, L)`` mask."""
    first = mask.int().argmax(1)
    last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
    return first, last


def pool_sequences(
    x: torch.Tensor,
    kind: PoolKind,
    *,
    packed: PackedBatch | None = None,
    mask: torch.Tensor | None = None,
    num_prefix_tokens: int = 0,
    attn: AttentionPool | None = None,
    sizes: torch.Tensor | None = None,
) -> torch.Tensor:
    """One vector per sequence: ``(B, L, D)`` (with optional ``mask``) or packed ``(T, D)`` -> ``(B|N, D)``.

    ``"mean"``, ``"max"`` and ``"attention"`` pool a sequence's real tokens after its ``num_prefix_tokens``
    prefix tokens; ``"cls"`` takes its first real token, ``"last"`` its last real token. ``sizes``
    (``(B, L, 1)`` / ``(T, 1)``, from token merging) weight ``"mean"`` and add ``log(size)`` to the
    ``"attention"`` logits, so both equal pooling over the unmerged tokens; ``"max"`` needs no weights. A
    sequence without content tokens gives zeros for ``"mean"`` and ``"max"``; ``"cls"``/``"last"`` need
    every sequence non-empty.
    """
    if kind not in POOL_KINDS:
        raise ValueError(f"unknown pooling {kind!r}; choose one of {POOL_KINDS}")
    if kind == "attention" and attn is None:
        raise ValueError("attention pooling needs its AttentionPool module (attn=...)")
    if packed is not None:
        return _pool_packed(x, kind, packed, num_prefix_tokens, attn, sizes)
    if x.dim() != 3:
        raise ValueError(f"padded features must be (B, L, D), got shape {tuple(x.shape)}")
    b, l = x.shape[:2]
    if mask is None:
        mask = torch.ones(b, l, dtype=torch.bool, device=x.device)
    elif mask.shape != (b, l) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool ({b}, {l}), got {mask.dtype} {tuple(mask.shape)}")
    _check_tokenwise(sizes, (b, l), "sizes", (1,))
    first, last = _first_last_index(mask)
    if kind in ("cls", "last"):
        return x[torch.arange(b, device=x.device), first if kind == "cls" else last]  # (B, D)
    content = mask & (mask.cumsum(1) > num_prefix_tokens)  # (B, L) real tokens after the prefix
    if kind == "mean":
        w = content.to(x.dtype)[..., None] if sizes is None else (sizes * content[..., None]).to(x.dtype)
        return (x * w).sum(1) / w.sum(1).clamp_min(torch.finfo(w.dtype).tiny if sizes is not None else 1)
    if kind == "max":
        out = x.masked_fill(~content[..., None], float("-inf")).amax(1)  # (B, D)
        return torch.where(content.any(1, keepdim=True), out, 0.0)
    scores = attn.scores(x).float()  # (B, L, H)
    if sizes is not None:
        scores = scores + sizes.float().log()
    weights = scores.masked_fill(~content[..., None], float("-inf")).softmax(dim=1).to(x.dtype)
    return attn.weighted(x, weights).sum(1)


def _pool_packed(
    x: torch.Tensor,
    kind: str,
    packed: PackedBatch,
    num_prefix_tokens: int,
    attn: AttentionPool | None,
    sizes: torch.Tensor | None,
) -> torch.Tensor:
    if x.dim() != 2 or x.shape[0] != packed.num_tokens:
        raise ValueError(f"packed features must be ({packed.num_tokens}, D), got shape {tuple(x.shape)}")
    _check_tokenwise(sizes, (packed.num_tokens,), "sizes", (1,))
    cu = packed.cu_seqlens
    if kind in ("cls", "last"):
        if not torch.compiler.is_compiling() and bool((packed.seqlens == 0).any()):
            raise ValueError(f"{kind!r} pooling needs every sequence non-empty, got lengths {packed.seqlens.tolist()}")
        return x[cu[:-1].long() if kind == "cls" else cu[1:].long() - 1]  # (N, D)
    content = packed.position_ids >= num_prefix_tokens  # (T,)
    if kind == "mean":
        if sizes is None:
            return segment_mean(x, cu, mask=content)
        w = (sizes * content[:, None]).to(x.dtype)  # (T, 1)
        return segment_sum(x * w, cu) / segment_sum(w, cu).clamp_min(torch.finfo(w.dtype).tiny)
    if kind == "max":
        seg = segment_ids(cu, x.shape[0])
        out = x.new_zeros(packed.num_seqs, x.shape[1])
        idx = seg[content][:, None].expand(-1, x.shape[1])
        return out.scatter_reduce(0, idx, x[content], "amax", include_self=False)  # empty: stays 0
    scores = attn.scores(x).float()  # (T, H)
    if sizes is not None:
        scores = scores + sizes.float().log()
    weights = segment_softmax(scores.masked_fill(~content[:, None], float("-inf")), cu).to(x.dtype)
    return segment_sum(attn.weighted(x, weights), cu)  # (N, D)


#: Registered sequence poolings: name -> module class (see :func:`register_pooling`).
POOLINGS: dict[str, type[SequencePool]] = {}


def register_pooling(name: str) -> Callable[[type[SequencePool]], type[SequencePool]]:
    """Class decorator registering a :class:`SequencePool` subclass under ``name`` for :func:`create_pooling`."""

    def deco(cls: type[SequencePool]) -> type[SequencePool]:
        if name in POOLINGS:
            raise ValueError(f"pooling {name!r} is already registered (by {POOLINGS[name].__name__})")
        POOLINGS[name] = cls
        return cls

    return deco


def list_poolings() -> list[str]:
    """Names of the registered poolings, sorted."""
    return sorted(POOLINGS)


def create_pooling(name: str, dim: int | None = None, **kwargs) -> SequencePool:
    """Build a registered pooling: ``create_pooling("attention", dim=768, num_heads=4, num_prefix_tokens=1)``.

    Args:
        name: one of :func:`list_poolings`.
        dim: feature width, needed by poolings with weights (``"attention"``).
        kwargs: the class's other arguments (``num_prefix_tokens``, ``num_heads``).
    """
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; registered: {list_poolings()}")
    cls = POOLINGS[name]
    return cls(dim=dim, **kwargs) if cls.needs_dim else cls(**kwargs)


class SequencePool(nn.Module):
    """Base of the registered poolings: ``forward(x, *, mask=None, packed=None, sizes=None) -> (B|N, D)``.

    Args:
        num_prefix_tokens: prefix tokens skipped by ``mean``, ``max`` and ``attention`` pooling.
    """

    kind: str = ""
    needs_dim: bool = False

    def __init__(self, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        _check_prefix(num_prefix_tokens)
        self.num_prefix_tokens = num_prefix_tokens

    def extra_repr(self) -> str:
        return f"num_prefix_tokens={self.num_prefix_tokens}"

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
        sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pool padded ``(B, L, D)`` (optional ``mask``) or packed ``(T, D)`` features; see :func:`pool_sequences`."""
        attn = getattr(self, "attn", None)
        return pool_sequences(
            x,
            self.kind,
            packed=packed,
            mask=mask,
            num_prefix_tokens=self.num_prefix_tokens,
            attn=attn,
            sizes=sizes,
        )


@register_pooling("mean")
class MeanPool(SequencePool):
    """Mean of the content tokens (size-weighted when ``sizes`` are given)."""

    kind = "mean"


@register_pooling("max")
class MaxPool(SequencePool):
    """Channel-wise max over the content tokens."""

    kind = "max"


@register_pooling("cls")
class ClsPool(SequencePool):
    """The first real token of each sequence (the class token)."""

    kind = "cls"


@register_pooling("last")
class LastPool(SequencePool):
    """The last real token of each sequence (causal models)."""

    kind = "last"


@register_pooling("attention")
class AttentionPooling(SequencePool):
    """Learned-query attention pooling over the content tokens (:class:`AttentionPool`).

    Args:
        dim: feature width D.
        num_heads: query heads (each weights its own ``D/H`` channels).
        num_prefix_tokens: prefix tokens skipped.
    """

    kind = "attention"
    needs_dim = True

    def __init__(self, dim: int | None = None, num_heads: int = 1, num_prefix_tokens: int = 0) -> None:
        super().__init__(num_prefix_tokens)
        if dim is None:
            raise ValueError("attention pooling needs dim (the feature width)")
        self.attn = AttentionPool(dim, num_heads)
