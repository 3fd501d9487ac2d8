"""Hyena mixer (Poli et al. 2023): gated long convolutions with implicitly parametrised filters.

For order N (default 2)::

    u = in_proj(x)                                  # (B, (N+1) D, L), computed channel-major
    x_0, ..., x_{N-1}, v = split(short_conv(u))     # causal depthwise conv of width short_filter_order
    for i = N-1 .. 1:  v = long_conv(v * x_i, h_i) + D_i * v * x_i
    y = out_proj(v * x_0)

``h_i`` come from :class:`~longseq.core.mixers._hyena_filter.HyenaFilter` (positional features -> MLP
with sine activations -> exponential decay window). The long convolutions run through
``longseq.kernels.fftconv.fftconv``, which fuses the skip term ``D_i`` and both gates (the last
iteration's post-gate ``x_0`` included) into the transform, reading and writing each tensor once.

Options beyond the paper's defaults: ``num_heads`` shares each filter across heads (channel ``c`` uses
filter ``c % (dim / num_heads)``, as in Safari's multi-head Hyena); ``bidirectional`` adds an
anti-causal filter (for encoders): ``y[t] += sum_{s>=1} g[s] u[t+s]``, computed as a causal
convolution of the time-reversed input.

Mixer protocol (:mod:`longseq.core.mixers.base`): padded ``(B, L, D)`` or packed ``(T, D)`` input (no
convolution, short or long, crosses a sequence boundary); ``allocate_cache`` / ``forward(x,
cache=...)`` / ``step`` for decoding. Decoding is exact, without a distilled recurrence: the cache
keeps the input of every long convolution for every past position; ``step`` evaluates the new
position's convolution sums directly (O(t D) per token and order), and ``forward`` with a filled cache
(chunked prefill) recomputes the convolutions over the cached prefix and the new chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from longseq.core.mixers._hyena_filter import HyenaFilter
from longseq.core.mixers.mamba import check_input
from longseq.core.packing import PackedBatch
from longseq.core.registry import register_mixer
from longseq.kernels.fftconv import fftconv

__all__ = ["HyenaCache", "HyenaConfig", "HyenaOperator"]


@dataclass
class HyenaConfig:
    """Configuration of :class:`HyenaOperator` (Safari's defaults unless noted).

    Attributes:
        dim: model width D.
        order: depth N of the recurrence (N - 1 long convolutions, N + 1 projections), >= 2.
        max_len: longest sequence (the implicit filters' length). Not in the paper: a default of 1024
            so that ``"hyena"`` works from a bare mixer pattern; long-sequence models set it.
        filter_order: hidden width of the filter MLP.
        short_filter_order: width of the causal depthwise convolution after the input projection.
        num_heads: filters are shared across heads (``dim`` must divide by it); 1 = one filter per channel.
        bidirectional: add an anti-causal filter per channel (non-causal mixer; no decoding).
        emb_dim: positional feature size of the filter MLP (odd, >= 3).
        num_inner_mlps: hidden layers of the filter MLP after the first.
        sin_freq: initial frequency of its sine activations.
        modulate: multiply the filters by the exponential decay window.
        fast_decay_pct, slow_decay_pct, decay_target, decay_shift: the window (see ``HyenaFilter``).
        dropout: dropout on ``v * x_i`` before each long convolution (unfuses the pre-gate when active).
        bias: biases of the input and output projections.
        filter_fp32: compute the implicit filters in fp32 even under autocast. Off by default, as in the
            Safari/HyenaDNA code, where the filter MLP follows autocast: in bf16 its positional features
            round to steps of ~1/256 of ``max_len``, so a model trained that way scores differently when
            evaluated in fp32 (E. coli, HyenaDNA-tiny: 1.86 bits/base in bf16, 1.93 in fp32). On, training
            and every evaluation precision see the same filters (and, in our E. coli runs, reach a worse
            held-out bits/base at equal steps: see docs/genomics.md).
    """

    dim: int
    order: int = 2
    max_len: int = 1024
    filter_order: int = 64
    short_filter_order: int = 3
    num_heads: int = 1
    bidirectional: bool = False
    emb_dim: int = 3
    num_inner_mlps: int = 2
    sin_freq: float = 1.0
    modulate: bool = True
    fast_decay_pct: float = 0.3
    slow_decay_pct: float = 1.5
    decay_target: float = 1e-2
    decay_shift: float = 0.0
    dropout: float = 0.0
    bias: bool = True
    filter_fp32: bool = False

    def __post_init__(self) -> None:
        for name in ("dim", "max_len", "filter_order", "short_filter_order", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.order < 2:
            raise ValueError(f"order must be >= 2 (one long convolution at least), got {self.order}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} must be divisible by num_heads {self.num_heads}")
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd and >= 3 (time, cosine, sine features), got {self.emb_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        """Channels per head (= filters per long convolution)."""
        return self.dim // self.num_heads


@dataclass
class HyenaCache:
    """Decoding state of a Hyena layer.

    Attributes:
        conv_state: ``(B, (N+1) D, W - 1)`` the last projected inputs of the short convolution, oldest first.
        history: ``(N - 1, B, D, max_len)`` the input ``v * x_i`` of every long convolution at every past position.
        filters: ``(N - 1, D, max_len)`` the long filters, computed at the first use (inference weights).
        seqlen: tokens consumed so far.
    """

    conv_state: torch.Tensor
    history: torch.Tensor
    filters: torch.Tensor | None = None
    seqlen: int = 0


def _short_conv(u: torch.Tensor, conv: nn.Conv1d, position_ids: torch.Tensor | None) -> torch.Tensor:
    """Causal depthwise convolution of ``u`` ``(B, C, L)``; with ``position_ids`` ``(L,)`` (one packed row)
    every tap reaching before its sequence's start reads zero.

    The lead may swap this for ``longseq.kernels.causal_conv1d`` (``seq_idx`` support); it is kept on
    plain PyTorch here so the mixer does not depend on that kernel.
    """
    W = conv.kernel_size[0]
    if position_ids is None:
        return F.conv1d(F.pad(u, (W - 1, 0)), conv.weight, conv.bias, groups=u.shape[1])
    weight = conv.weight[:, 0]  # (C, W); tap j multiplies u[t - (W - 1 - j)]
    y = u * weight[:, W - 1, None]
    for s in range(1, W):
        shifted = F.pad(u, (s, 0))[..., : u.shape[-1]] * (position_ids >= s)  # u[t - s] inside the sequence
        y = y + shifted * weight[:, W - 1 - s, None]
    return y if conv.bias is None else y + conv.bias[:, None]


@register_mixer("hyena")
class HyenaOperator(nn.Module):
    """The Hyena operator of order N; see :class:`HyenaConfig` for the options."""

    def __init__(self, dim: int, **options) -> None:
        super().__init__()
        cfg = self.config = HyenaConfig(dim=dim, **options)
        width = (cfg.order + 1) * dim
        self.in_proj = nn.Linear(dim, width, bias=cfg.bias)
        self.short_filter = nn.Conv1d(width, width, cfg.short_filter_order, groups=width)
        directions = 2 if cfg.bidirectional else 1
        self.filter = HyenaFilter(
            directions * (cfg.order - 1) * cfg.head_dim,
            cfg.max_len,
            emb_dim=cfg.emb_dim,
            width=cfg.filter_order,
            num_inner=cfg.num_inner_mlps,
            sin_freq=cfg.sin_freq,
            modulate=cfg.modulate,
            fast_decay_pct=cfg.fast_decay_pct,
            slow_decay_pct=cfg.slow_decay_pct,
            target=cfg.decay_target,
            shift=cfg.decay_shift,
            fp32=cfg.filter_fp32,
        )
        self.skip = nn.Parameter(torch.randn(cfg.order - 1, cfg.head_dim))  # the D term of each long conv
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_proj = nn.Linear(dim, dim, bias=cfg.bias)

    # ---------------------------------------------------------------- pieces

    def filters(self, L: int) -> torch.Tensor:
        """Long filters ``(directions, N - 1, D, L)``, shared across heads."""
        cfg = self.config
        h = self.filter(L).view(-1, cfg.order - 1, cfg.head_dim, L)
        return h.repeat(1, 1, cfg.num_heads, 1)

    def _skip(self) -> torch.Tensor:
        return self.skip.repeat(1, self.config.num_heads)  # (N - 1, D)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """``in_proj`` of ``x`` ``(B, L, D)`` as ``(B, (N+1) D, L)`` (``W @ x^T``: no transpose copy)."""
        u = torch.matmul(self.in_proj.weight, x.transpose(1, 2))  # (B, (N+1) D, L)
        return u if self.in_proj.bias is None else u + self.in_proj.bias[:, None].to(u.dtype)

    def _long_conv(self, v, h, skip, pre_gate, gate, packed: PackedBatch | None) -> torch.Tensor:
        """``gate * (conv(v * pre_gate, h[0]) + skip * v * pre_gate)`` (+ the anti-causal ``h[1]``); ``(B, D, L)``."""
        if self.training and self.config.dropout > 0:
            v, pre_gate = self.dropout(v * pre_gate), None
        if packed is None:
            y = fftconv(v, h[0], skip, gate=gate, pre_gate=pre_gate)
        else:  # one packed row: (1, D, T) -> (D, T) with boundaries
            kw = {"cu_seqlens": packed.cu_seqlens.to(v.device), "max_seqlen": packed.max_seqlen}
            row = [None if t is None else t[0] for t in (v, gate, pre_gate)]
            y = fftconv(row[0], h[0], skip, gate=row[1], pre_gate=row[2], **kw)[None]
        if self.config.bidirectional:
            y = y + self._anti_causal(v, h[1], pre_gate, gate, packed)
        return y

    def _anti_causal(self, v, g, pre_gate, gate, packed: PackedBatch | None) -> torch.Tensor:
        """``gate * sum_{s>=1} g[s] (v * pre_gate)[t + s]``: a causal conv of the reversed signals."""
        g = F.pad(g[:, 1:], (1, 0))  # lag 0 belongs to the causal filter
        rev = [None if t is None else t.flip(-1) for t in (v, gate, pre_gate)]
        if packed is None:
            return fftconv(rev[0], g, gate=rev[1], pre_gate=rev[2]).flip(-1)
        cu = packed.cu_seqlens.to(v.device)
        cu_rev = (cu[-1] - cu.flip(0)).to(torch.int32)  # boundaries of the reversed row
        kw = {"cu_seqlens": cu_rev, "max_seqlen": packed.max_seqlen}
        row = [None if t is None else t[0] for t in rev]
        return fftconv(row[0], g, gate=row[1], pre_gate=row[2], **kw).flip(-1)[None]

    def _check_length(self, length: int) -> None:
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds the Hyena filter length max_len={self.config.max_len}")

    # ---------------------------------------------------------------- forward

    def forward(
        self, x: torch.Tensor, *, packed: PackedBatch | None = None, cache: HyenaCache | None = None
    ) -> torch.Tensor:
        """Mix ``x`` ``(B, L, D)`` or packed ``(T, D)``; with ``cache``, continue from it and store this chunk."""
        cfg = self.config
        check_input(x, cfg.dim, packed, cache)
        if cache is not None:
            return self._forward_cached(x, cache)
        x3 = x.unsqueeze(0) if packed is not None else x  # (B, L, D); packed is one row
        L = packed.max_seqlen if packed is not None else x3.shape[1]
        self._check_length(L)
        positions = None if packed is None else packed.position_ids.to(x.device)
        u = _short_conv(self._project(x3), self.short_filter, positions)  # (B, (N+1) D, L)
        *xs, v = u.split(cfg.dim, dim=1)  # N gates and v, (B, D, L) each
        h = self.filters(max(L, 1))  # (directions, N - 1, D, L)
        skip = self._skip()
        for o, x_i in enumerate(reversed(xs[1:])):
            last = o == cfg.order - 2
            v = self._long_conv(v, h[:, o], skip[o], x_i, xs[0] if last else None, packed)
        y = F.linear(v.transpose(1, 2), self.out_proj.weight, self.out_proj.bias)  # (B, L, D)
        return y.squeeze(0) if packed is not None else y

    # ---------------------------------------------------------------- decoding

    def allocate_cache(self, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device) -> HyenaCache:
        """A zero cache for ``batch_size`` sequences of up to ``max_len`` (<= the filter length) tokens."""
        cfg = self.config
        if cfg.bidirectional:
            raise ValueError("a bidirectional Hyena mixer sees future tokens and cannot decode step by step")
        self._check_length(max_len)
        width = (cfg.order + 1) * cfg.dim
        return HyenaCache(
            conv_state=torch.zeros(batch_size, width, cfg.short_filter_order - 1, dtype=dtype, device=device),
            history=torch.zeros(cfg.order - 1, batch_size, cfg.dim, max_len, dtype=dtype, device=device),
        )

    def _cache_filters(self, cache: HyenaCache) -> torch.Tensor:
        if cache.filters is None:
            cache.filters = self.filters(cache.history.shape[-1])[0].detach()  # (N - 1, D, max_len)
        return cache.filters

    def _forward_cached(self, x: torch.Tensor, cache: HyenaCache) -> torch.Tensor:
        """Prefill (or continue) with the cache: convolutions over the cached prefix and this chunk."""
        cfg = self.config
        S, L = cache.seqlen, x.shape[1]
        capacity = cache.history.shape[-1]
        if capacity < S + L:
            raise ValueError(f"cache holds {capacity} tokens; {S} used, {L} more given")
        full = torch.cat([cache.conv_state.to(x.dtype), self._project(x)], dim=-1)  # (B, C, W - 1 + L)
        cache.conv_state.copy_(full[..., full.shape[-1] - cache.conv_state.shape[-1] :].detach())
        u = F.conv1d(full, self.short_filter.weight, self.short_filter.bias, groups=full.shape[1])  # (B, C, L)
        *xs, v = u.split(cfg.dim, dim=1)
        h, skip = self._cache_filters(cache), self._skip()
        for o, x_i in enumerate(reversed(xs[1:])):
            cache.history[o, :, :, S : S + L] = (v * x_i).detach()
            past = cache.history[o, :, :, : S + L]  # (B, D, S + L)
            v = fftconv(past, h[o, :, : S + L], skip[o])[..., S:]
        cache.seqlen = S + L
        return F.linear((v * xs[0]).transpose(1, 2), self.out_proj.weight, self.out_proj.bias)

    def step(self, x_t: torch.Tensor, cache: HyenaCache) -> tuple[torch.Tensor, HyenaCache]:
        """Decode one token ``x_t`` ``(B, D)``: the new position's convolution sums over the cached inputs."""
        cfg = self.config
        S = cache.seqlen
        if cache.history.shape[-1] <= S:
            raise ValueError(f"cache is full ({S} tokens)")
        u_t = F.linear(x_t, self.in_proj.weight, self.in_proj.bias)  # (B, C)
        window = torch.cat([cache.conv_state.to(u_t.dtype), u_t[..., None]], dim=-1)  # (B, C, W)
        cache.conv_state.copy_(window[..., 1:])
        u_t = (window * self.short_filter.weight[:, 0]).sum(-1)
        if self.short_filter.bias is not None:
            u_t = u_t + self.short_filter.bias
        *xs, v = u_t.split(cfg.dim, dim=-1)  # (B, D) each
        h, skip = self._cache_filters(cache), self._skip()
        for o, x_i in enumerate(reversed(xs[1:])):
            w = v * x_i
            cache.history[o, :, :, S] = w
            past = cache.history[o, :, :, : S + 1]  # (B, D, S + 1), oldest first
            v = (past * h[o, :, : S + 1].flip(-1).to(past.dtype)).sum(-1) + skip[o] * w  # sum_s h[s] w[S - s]
        cache.seqlen = S + 1
        return self.out_proj(v * xs[0]), cache
