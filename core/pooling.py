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

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from longseq.core.attention import attention
from longseq.core.packing import PackedBatch, packed_to_pad, segment_ids, segment_mean, segment_softmax, segment_sum
from longseq.core.reduction.base import ReductionOutput, compose_merge_maps
from longseq.core.reduction.varlen import (
    VarlenOutput,
    _acc_sizes,
    _check_mask,
    _check_packed,
    _check_padded,
    _check_prefix,
    _check_tokenwise,
    _packed_output,
    padded_to_packed,
    scatter_to_padded,
    varlen_to_padded,
)

# ruff: noqa: N806  (B, L, D, T, H, P, S follow the shape-comment convention)

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


# --------------------------------------------------------------------------------------------
# token pooling over windows (Funnel, HVT)
# --------------------------------------------------------------------------------------------


def _reduce(
    x: torch.Tensor, index: torch.Tensor, out_len: int, mode: str, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool ``x`` ``(B, L, D)`` into ``(B, out_len, D)`` groups by ``index`` ``(B, L)``; sizes add up.

    ``"mean"`` is size-weighted (in at least fp32), ``"max"`` channel-wise; every group must be non-empty.
    """
    B, _, D = x.shape
    idx = index[..., None]
    out_sizes = sizes.new_zeros(B, out_len, 1).scatter_add(1, idx, sizes)
    if mode == "mean":
        num = sizes.new_zeros(B, out_len, D).scatter_add(1, idx.expand(-1, -1, D), x.to(sizes.dtype) * sizes)
        return (num / out_sizes).to(x.dtype), out_sizes
    out = x.new_zeros(B, out_len, D).scatter_reduce(1, idx.expand(-1, -1, D), x, "amax", include_self=False)
    return out, out_sizes


def _window_index(pos: torch.Tensor, num_prefix_tokens: int, stride: int) -> torch.Tensor:
    """Output slot of every position within its sequence: prefix tokens alone, then windows of ``stride``."""
    P = num_prefix_tokens
    return torch.where(pos < P, pos, P + torch.div(pos - P, stride, rounding_mode="floor"))


def token_pool(
    x: torch.Tensor,
    stride: int,
    *,
    mode: Literal["mean", "max"] = "mean",
    num_prefix_tokens: int = 0,
    mask: torch.Tensor | None = None,
    packed: PackedBatch | None = None,
    sizes: torch.Tensor | None = None,
) -> ReductionOutput:
    """Pool every window of ``stride`` consecutive non-prefix tokens into one (the last window may be short).

    A sequence of ``P + n`` tokens becomes ``P + ceil(n / stride)``. ``"mean"`` is size-weighted, ``"max"``
    channel-wise; the output sizes add up the window's sizes.

    Args:
        x: padded ``(B, L, D)`` (with optional ``mask``, True at real tokens) or packed ``(T, D)``.
        stride: window length, ``>= 1``.
        mode: ``"mean"`` (Funnel) or ``"max"`` (HVT).
        num_prefix_tokens: leading tokens kept alone and unchanged.
        mask: bool ``(B, L)`` for padded input with padding.
        packed: boundaries of packed ``x``.
        sizes: ``(B, L, 1)`` / ``(T, 1)`` token sizes (default ones).

    Returns:
        ``merge_map`` ``(B, L)`` (packed: ``(T,)`` packed positions). Padded input without ``mask``: a
        :class:`ReductionOutput` of ``(B, L', D)``; otherwise a :class:`VarlenOutput`.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    if mode not in ("mean", "max"):
        raise ValueError(f"mode must be 'mean' or 'max', got {mode!r}")
    _check_prefix(num_prefix_tokens)
    P = num_prefix_tokens
    if packed is None:
        _check_padded(x, P)
        _check_mask(mask, x)
        B, L, _ = x.shape
        _check_tokenwise(sizes, (B, L), "sizes", (1,))
        if mask is not None:
            flat = padded_to_packed(x, mask)
            flat_sizes = None if sizes is None else padded_to_packed(sizes, mask).x
            out = token_pool(flat.x, stride, mode=mode, num_prefix_tokens=P, packed=flat, sizes=flat_sizes)
            return varlen_to_padded(out, flat, mask, (B, L))
        index = _window_index(torch.arange(L, device=x.device), P, stride).expand(B, L)
        out_len = P + -(-(L - P) // stride)
        y, out_sizes = _reduce(x, index, out_len, mode, _acc_sizes(x, sizes))
        return ReductionOutput(x=y, sizes=out_sizes, merge_map=index, keep_index=None)
    if mask is not None:
        raise ValueError("mask is for padded input; packed input has its boundaries in packed")
    _check_packed(x, packed, P)
    T = packed.num_tokens
    _check_tokenwise(sizes, (T,), "sizes", (1,))
    lengths = packed.seqlens.long()
    out_lengths = P + torch.div(lengths - P + stride - 1, stride, rounding_mode="floor")
    out_cu = torch.nn.functional.pad(out_lengths.cumsum(0), (1, 0))
    index = out_cu[segment_ids(packed.cu_seqlens, T)] + _window_index(packed.position_ids.long(), P, stride)
    T_out = int(out_cu[-1])
    y, out_sizes = _reduce(x[None], index[None], T_out, mode, _acc_sizes(x, sizes)[None])
    return VarlenOutput(
        x=y[0], sizes=out_sizes[0], merge_map=index, keep_index=None, packed=_packed_output(y[0], out_lengths)
    )


class TokenPool(nn.Module):
    """:func:`token_pool` as a layer (HVT's max-pooling between stages with ``mode="max"``).

    Args:
        stride: window length.
        mode: ``"mean"`` or ``"max"``.
        num_prefix_tokens: leading tokens kept unchanged.
    """

    def __init__(self, stride: int = 2, mode: Literal["mean", "max"] = "max", num_prefix_tokens: int = 0) -> None:
        super().__init__()
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        if mode not in ("mean", "max"):
            raise ValueError(f"mode must be 'mean' or 'max', got {mode!r}")
        _check_prefix(num_prefix_tokens)
        self.stride, self.mode, self.num_prefix_tokens = stride, mode, num_prefix_tokens

    def extra_repr(self) -> str:
        return f"stride={self.stride}, mode={self.mode!r}, num_prefix_tokens={self.num_prefix_tokens}"

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
        sizes: torch.Tensor | None = None,
    ) -> ReductionOutput:
        """Pool padded ``(B, L, D)`` or packed ``(T, D)`` tokens; see :func:`token_pool`."""
        return token_pool(
            x,
            self.stride,
            mode=self.mode,
            num_prefix_tokens=self.num_prefix_tokens,
            mask=mask,
            packed=packed,
            sizes=sizes,
        )


class FunnelQueryPool(nn.Module):
    """Funnel Transformer's pooling step: strided-pooled queries attend to every unpooled key.

    ``y = pool(x) + W_o attention(W_q pool(x), W_k x, W_v x)`` with ``pool`` = :func:`token_pool` (mean,
    ``stride``), non-causal. Funnel adds a post-LayerNorm to this residual; in a pre-norm stack the next
    block's norm takes that role, so none is applied here. Token ``sizes`` weight the pooled mean and add
    ``log(size)`` to the keys' logits (proportional attention).

    Args:
        dim: feature width D.
        num_heads: attention heads (divide ``dim``).
        stride: query pooling window.
        num_prefix_tokens: leading tokens kept alone (they still attend to all keys).
        bias: biases in the projections.
        backend: attention backend name (``"auto"``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        stride: int = 2,
        *,
        num_prefix_tokens: int = 0,
        bias: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.pool = TokenPool(stride, "mean", num_prefix_tokens)
        self.num_heads, self.backend = num_heads, backend
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
        sizes: torch.Tensor | None = None,
    ) -> ReductionOutput:
        """Pool padded ``(B, L, D)`` (optional ``mask``) or packed ``(T, D)`` tokens; returns :func:`token_pool`'s
        output with ``x`` replaced by the attended queries (zeros at padding)."""
        out = self.pool(x, mask=mask, packed=packed, sizes=sizes)
        H = self.num_heads
        q = self.q(out.x).unflatten(-1, (H, -1))  # (B, L', H, Dh) or (T', H, Dh)
        k, v = self.kv(x).unflatten(-1, (2, H, -1)).unbind(-3)  # (B, L, H, Dh) each
        if packed is None:
            bias = None
            if sizes is not None:
                bias = sizes[..., 0].float().log()
            if mask is not None:
                pad = torch.zeros(mask.shape, device=x.device).masked_fill(~mask, float("-inf"))
                bias = pad if bias is None else bias + pad
            bias = None if bias is None else bias[:, None, None, :].to(q.dtype)  # (B, 1, 1, L)
            o = attention(q, k, v, bias=bias, backend=self.backend)
        else:
            score_mod = None
            if sizes is not None:
                table, _ = packed_to_pad(sizes[:, 0].float().log(), packed.cu_seqlens)  # (N, L_max)

                def score_mod(score, b, h, q_idx, kv_idx):
                    return score + table[b, kv_idx].to(score.dtype)

            o = attention(
                q,
                k,
                v,
                score_mod=score_mod,
                cu_seqlens_q=out.packed.cu_seqlens,
                cu_seqlens_k=packed.cu_seqlens,
                max_seqlen_q=out.packed.max_seqlen,
                max_seqlen_k=packed.max_seqlen,
                backend=self.backend,
            )
        y = out.x + self.proj(o.flatten(-2))
        if isinstance(out, VarlenOutput):
            if out.mask is not None:
                y = y * out.mask[..., None]
            pk = None if out.packed is None else out.packed.with_x(y)
            return VarlenOutput(x=y, sizes=out.sizes, merge_map=out.merge_map, mask=out.mask, packed=pk)
        return ReductionOutput(x=y, sizes=out.sizes, merge_map=out.merge_map)


class HierarchicalStages(nn.Module):
    """HVT-style hierarchy: run each stage's blocks, max-pool the tokens by ``stride`` between stages.

    Blocks are called ``block(x)`` on padded ``(B, L, D)`` input and ``block(x, packed=batch)`` on packed
    input (the batch of the current, pooled tokens), like :class:`longseq.core.block.Block`. HVT's 1-D
    max-pool windows may overlap; windows here do not (kernel = stride), so every token belongs to one output
    token and the merge map stays exact.

    Args:
        stages: a sequence of stages, each a sequence of blocks.
        stride: pooling window between stages.
        mode: ``"max"`` (HVT) or ``"mean"``.
        num_prefix_tokens: leading tokens never pooled.
    """

    def __init__(
        self,
        stages: Sequence[Sequence[nn.Module]],
        stride: int = 2,
        mode: Literal["mean", "max"] = "max",
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        if len(stages) == 0:
            raise ValueError("stages must hold at least one stage")
        self.stages = nn.ModuleList(nn.ModuleList(s) for s in stages)
        self.pool = TokenPool(stride, mode, num_prefix_tokens)

    def forward(self, x: torch.Tensor, *, packed: PackedBatch | None = None) -> ReductionOutput:
        """Run the stages on padded ``(B, L, D)`` or packed ``(T, D)`` ``x``.

        Returns:
            The final tokens with the composed ``merge_map`` from input positions to final tokens and their
            ``sizes``; packed input gives a :class:`VarlenOutput` with the final ``packed`` boundaries.
        """
        if packed is None and x.dim() != 3:
            raise ValueError(f"x must be padded (B, L, D) or packed (T, D) with packed=..., got {tuple(x.shape)}")
        sizes = merge_map = None
        for i, stage in enumerate(self.stages):
            if i > 0:
                out = self.pool(x, packed=packed, sizes=sizes)
                x, sizes = out.x, out.sizes
                if packed is None:
                    merge_map = out.merge_map if merge_map is None else compose_merge_maps(merge_map, out.merge_map)
                else:
                    merge_map = out.merge_map if merge_map is None else out.merge_map[merge_map]
                    packed = out.packed
            for block in stage:
                x = block(x) if packed is None else block(x, packed=packed)
        if merge_map is None:  # a single stage: nothing pooled
            n = x.shape[0] if packed is not None else x.shape[1]
            merge_map = torch.arange(n, device=x.device)
            merge_map = merge_map if packed is not None else merge_map.expand(x.shape[0], n)
            sizes = _acc_sizes(x, None)
        if packed is not None:
            return VarlenOutput(x=x, sizes=sizes, merge_map=merge_map, packed=packed.with_x(x))
        return ReductionOutput(x=x, sizes=sizes, merge_map=merge_map)


# --------------------------------------------------------------------------------------------
# dynamic token pooling
# --------------------------------------------------------------------------------------------


@dataclass
class DynamicPoolingOutput(VarlenOutput):
    """:class:`VarlenOutput` of :class:`DynamicTokenPooling`, plus what :func:`upsample` needs.

    Attributes:
        boundaries: fp32 ``(B, L)`` / ``(T,)``, 1 where a token starts a segment (straight-through: the hard
            value with the Gumbel-sigmoid's gradient in training); 0 at prefix tokens and padding.
        weights: fp32 ``(B, L)`` / ``(T,)``, 1 at every real token with the gradient of its segment
            coordinate (so upsampling passes gradients to the boundary predictor); 0 at padding.
    """

    boundaries: torch.Tensor | None = None
    weights: torch.Tensor | None = None


def upsample(y: torch.Tensor, out: DynamicPoolingOutput) -> torch.Tensor:
    """Map pooled tokens back to the input positions: position ``t`` gets ``y[merge_map[t]]`` (its segment).

    Args:
        y: per-output values, shaped like ``out.x`` (``(B, L', D)`` or packed ``(T', D)``).
        out: the :class:`DynamicPoolingOutput` that produced the pooled tokens.

    Returns:
        ``(B, L, D)`` (zeros at input padding) or ``(T, D)``. Non-causal: a position sees its own segment's
        mean (the paper's language models shift by one segment so no token sees its future).
    """
    if y.shape[:-1] != out.x.shape[:-1]:
        raise ValueError(
            f"y must be shaped like the pooled tokens {tuple(out.x.shape[:-1])} + (D,), got {tuple(y.shape)}"
        )
    if y.dim() == 3:
        gathered = y.gather(1, out.merge_map[..., None].expand(-1, -1, y.shape[-1]))  # (B, L, D)
    else:
        gathered = y[out.merge_map]  # (T, D)
    return gathered * out.weights[..., None].to(y.dtype)


class DynamicTokenPooling(nn.Module):
    """Dynamic token pooling (Nawrot et al. 2023): a learned boundary predictor segments the tokens, and
    every segment becomes the mean of its tokens.

    A 2-layer MLP gives a boundary logit per token; a boundary starts a new segment (the first content token
    always does). Training samples hard boundaries from a Gumbel-sigmoid at ``temperature`` with the
    straight-through gradient; eval thresholds ``sigmoid(logit) > threshold`` (deterministic). Segment means
    weight each token by ``1 + c_t - stop_grad(c_t)`` (value 1), where ``c_t`` is its segment coordinate
    ``cumsum(boundaries) - 1``: that is how gradients of the pooled tokens reach the predictor, as in the
    paper's code. :meth:`regularization_loss` is the paper's binomial prior on the number of boundaries,
    ``-log Binomial(k; n, prior) / n``, which steers the shortening rate to about ``1 / prior``.

    Args:
        dim: feature width D.
        hidden: the predictor's hidden width (default ``dim``).
        prior: target fraction of tokens that start a segment, in ``(0, 1)``.
        temperature: Gumbel-sigmoid temperature, ``> 0``.
        threshold: eval boundary probability threshold, in ``(0, 1)``.
        num_prefix_tokens: leading tokens kept alone and unchanged.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int | None = None,
        prior: float = 0.2,
        temperature: float = 0.5,
        threshold: float = 0.5,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < prior < 1:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        _check_prefix(num_prefix_tokens)
        hidden = dim if hidden is None else hidden
        self.predictor = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.prior, self.temperature, self.threshold = prior, temperature, threshold
        self.num_prefix_tokens = num_prefix_tokens
        self._prior_loss: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return (
            f"prior={self.prior}, temperature={self.temperature}, threshold={self.threshold}, "
            f"num_prefix_tokens={self.num_prefix_tokens}"
        )

    def boundary_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> fp32 ``(...)`` boundary logits."""
        return self.predictor(x)[..., 0].float()

    def sample_boundaries(self, logits: torch.Tensor) -> torch.Tensor:
        """Hard 0/1 boundaries: Gumbel-sigmoid with straight-through gradient (training) or a threshold (eval)."""
        if not self.training:
            return (torch.sigmoid(logits) > self.threshold).float()
        u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logits + u.log() - (-u).log1p()) / self.temperature)
        hard = (soft > 0.5).float()
        return hard + (soft - soft.detach())  # exactly 0/1 in value, the soft gradient

    def regularization_loss(self) -> torch.Tensor:
        """The binomial prior loss of the last forward, averaged over sequences with content tokens."""
        if self._prior_loss is None:
            raise RuntimeError("regularization_loss() needs a forward pass first")
        return self._prior_loss

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
        sizes: torch.Tensor | None = None,
    ) -> DynamicPoolingOutput:
        """Segment and pool padded ``(B, L, D)`` (optional ``mask``) or packed ``(T, D)`` tokens.

        Returns:
            A :class:`DynamicPoolingOutput`: ``[prefix, segment means]`` per sequence, ``sizes`` the segment
            lengths (summed sizes), ``merge_map`` token -> segment (``0`` at input padding), padded with
            ``mask`` or packed with ``packed``.
        """
        P = self.num_prefix_tokens
        if packed is not None:
            if mask is not None:
                raise ValueError("mask is for padded input; packed input has its boundaries in packed")
            _check_packed(x, packed, P)
            _check_tokenwise(sizes, (packed.num_tokens,), "sizes", (1,))
            return self._forward_packed(x, packed, sizes)
        _check_padded(x, P)
        _check_mask(mask, x)
        B, L, _ = x.shape
        _check_tokenwise(sizes, (B, L), "sizes", (1,))
        flat = padded_to_packed(x, mask)
        out = self._forward_packed(flat.x, flat, None if sizes is None else padded_to_packed(sizes, mask).x)
        padded = varlen_to_padded(out, flat, mask, (B, L))
        return DynamicPoolingOutput(
            x=padded.x,
            sizes=padded.sizes,
            merge_map=padded.merge_map,
            mask=padded.mask,
            boundaries=scatter_to_padded(out.boundaries, mask, (B, L)),
            weights=scatter_to_padded(out.weights, mask, (B, L)),
        )

    def _forward_packed(self, x: torch.Tensor, packed: PackedBatch, sizes: torch.Tensor | None) -> DynamicPoolingOutput:
        P = self.num_prefix_tokens
        T = packed.num_tokens
        cu = packed.cu_seqlens
        seg = segment_ids(cu, T)
        pos = packed.position_ids.long()
        content = pos >= P
        b = self.sample_boundaries(self.boundary_logits(x))  # (T,)
        b = torch.where(pos == P, 1.0, b) * content  # the first content token starts a segment
        hard = b.detach()
        n_seg = segment_sum(hard, cu)  # (N,) segments per sequence
        lengths = P + n_seg.round().long()
        # output slot: P prefix slots per sequence before it and its own, plus all earlier segments
        coord = b.cumsum(0) - 1 + P * (seg + 1)  # (T,) content tokens: their segment's slot (differentiable)
        seg_before = (n_seg.cumsum(0) - n_seg)[seg]
        slot = torch.where(content, coord.detach().round(), seg_before + P * seg + pos).long()
        weights = torch.where(content, 1.0 + coord - coord.detach(), 1.0)  # value 1, gradient of coord
        T_out = int(lengths.sum())
        acc = _acc_sizes(x, sizes)
        w = weights[:, None].to(acc.dtype) * acc  # (T, 1) size-weighted segment means
        num = acc.new_zeros(T_out, x.shape[1]).index_add(0, slot, x.to(acc.dtype) * w)
        den = acc.new_zeros(T_out, 1).index_add(0, slot, w)
        y = (num / den).to(x.dtype)
        out_sizes = acc.new_zeros(T_out, 1).index_add(0, slot, acc)
        n = segment_sum(content.float(), cu)
        valid = n > 0
        if bool(valid.any()):
            k = segment_sum(b, cu)[valid]  # boundaries per sequence (straight-through)
            prior = torch.tensor(self.prior, device=x.device)
            binomial = torch.distributions.Binomial(total_count=n[valid], probs=prior, validate_args=False)
            self._prior_loss = (-binomial.log_prob(k) / n[valid]).mean()
        else:
            self._prior_loss = x.new_zeros((), dtype=torch.float32)
        return DynamicPoolingOutput(
            x=y,
            sizes=out_sizes,
            merge_map=slot,
            keep_index=None,
            packed=_packed_output(y, lengths),
            boundaries=b,
            weights=weights,
        )
