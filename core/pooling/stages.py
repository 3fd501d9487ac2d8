"""Token pooling between stages: windows of ``stride`` tokens (:func:`token_pool`), Funnel query pooling
and HVT-style hierarchical stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from longseq.core.attention import attention
from longseq.core.packing import PackedBatch, packed_to_pad, segment_ids
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
    varlen_to_padded,
)

# ruff: noqa: N806  (B, L, D, T, H, P, S follow the shape-comment convention)

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
