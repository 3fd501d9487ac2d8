"""Mamba (v1) mixer: the selective state space layer of Gu & Dao (2023) on the longseq kernels.

``x -> in_proj -> [x, z]``; ``x -> causal conv1d + SiLU -> x_proj -> (dt, B, C)``;
``y = selective_scan(x, dt_proj(dt), A, B, C, D, z, softplus)``; ``out_proj(y)``. Parameterisation
and initialisation as ``mamba_ssm.modules.mamba_simple.Mamba``: ``A = -exp(A_log)`` with
``A_log = log(1..N)`` per channel, ``D = 1``, ``dt_proj.bias = softplus^-1(dt)`` for ``dt``
log-uniform in ``[dt_min, dt_max]``.

Implements the mixer protocol (:mod:`longseq.core.mixers.base`): padded ``(B, L, D)`` or packed
``(T, D)`` input (the state restarts at every sequence of the pack), ``allocate_cache`` /
``forward(x, cache=...)`` (prefill, or continue from the cache) / ``step``. Also holds the pieces
the Mamba-2 mixer shares (:func:`inverse_softplus_dt`, :func:`conv_with_state`, :class:`ConvSSMCache`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from longseq.core.packing import PackedBatch, segment_ids
from longseq.core.registry import register_mixer
from longseq.kernels.causal_conv1d import causal_conv1d_fn, causal_conv1d_update
from longseq.kernels.selective_scan import selective_scan_fn, selective_state_update

__all__ = ["ConvSSMCache", "Mamba", "MambaConfig", "conv_with_state", "inverse_softplus_dt"]


@dataclass
class ConvSSMCache:
    """Decoding state of a Mamba layer.

    Attributes:
        conv_state: ``(B, C_conv, W - 1)`` the last inputs of the short convolution, oldest first.
        ssm_state: fp32 SSM state, ``(B, D_inner, N)`` (Mamba) or ``(B, H, P, N)`` (Mamba-2).
        seqlen: tokens consumed so far (host-side count).
    """

    conv_state: torch.Tensor
    ssm_state: torch.Tensor
    seqlen: int = 0

    @classmethod
    def zeros(
        cls,
        module: nn.Module,
        conv_shape: tuple[int, int, int],
        ssm_shape: tuple[int, ...],
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> ConvSSMCache:
        """A zero cache: conv state in ``dtype``, fp32 SSM state; dtype and device default to the
        parameters' of ``module``."""
        ref = next(module.parameters())
        dtype = ref.dtype if dtype is None else dtype
        device = ref.device if device is None else torch.device(device)
        return cls(
            conv_state=torch.zeros(conv_shape, dtype=dtype, device=device),
            ssm_state=torch.zeros(ssm_shape, dtype=torch.float32, device=device),
        )


def inverse_softplus_dt(n: int, dt_min: float, dt_max: float, dt_init_floor: float) -> torch.Tensor:
    """``softplus^-1(dt)`` for ``n`` values of ``dt`` log-uniform in ``[dt_min, dt_max]`` (floored)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def conv_with_state(
    x: torch.Tensor,
    conv: nn.Conv1d,
    seq_idx: torch.Tensor | None = None,
    cache: ConvSSMCache | None = None,
) -> torch.Tensor:
    """Causal depthwise conv + SiLU of ``x`` ``(B, C, L)``; with ``cache``, continue from its conv
    state (the state is prepended, so a zero state is the zero padding) and store the new one."""
    weight = conv.weight[:, 0]  # (C, W)
    W = weight.shape[1]
    if cache is None:
        return causal_conv1d_fn(x, weight, conv.bias, seq_idx=seq_idx, activation="silu")
    full = torch.cat([cache.conv_state.to(x.dtype), x], dim=-1)  # (B, C, W - 1 + L)
    cache.conv_state.copy_(full[..., full.shape[-1] - (W - 1) :].detach())
    return causal_conv1d_fn(full, weight, conv.bias, activation="silu")[..., W - 1 :]


def check_input(x: torch.Tensor, dim: int, packed: PackedBatch | None, cache: ConvSSMCache | None) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, L, dim)``, or ``(T, dim)`` with ``packed`` and no cache."""
    if packed is not None:
        if x.dim() != 2 or x.shape != (packed.x.shape[0], dim):
            raise ValueError(f"packed input must be (T, D) = ({packed.x.shape[0]}, {dim}), got {tuple(x.shape)}")
        if cache is not None:
            raise ValueError("a decoding cache needs padded (B, L, D) input, got packed input")
    elif x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"input must be (B, L, D) with D = {dim}, or (T, D) with packed=, got {tuple(x.shape)}")


def packed_rows(x: torch.Tensor, packed: PackedBatch | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x as (B, L, D), seq_idx)``: a packed ``(T, D)`` becomes one row ``(1, T, D)`` with ``seq_idx``.

    The boundaries were validated when the :class:`PackedBatch` was built, so this adds no device sync
    (every layer of a packed model calls it; the kernels' public ``seq_idx_from_cu_seqlens``, meant for
    unchecked user boundaries, would cost three syncs per layer)."""
    if packed is None:
        return x, None
    if x.shape[0] != packed.num_tokens:
        raise ValueError(f"packed input must have {packed.num_tokens} tokens (the batch's), got {x.shape[0]}")
    seq_idx = segment_ids(packed.cu_seqlens.to(x.device), x.shape[0]).to(torch.int32)  # (T,)
    return x.unsqueeze(0), seq_idx[None]


@dataclass
class MambaConfig:
    """Configuration of :class:`Mamba` (``mamba_ssm``'s defaults).

    Attributes:
        dim: model width D.
        d_state: SSM state size N per channel.
        d_conv: width of the causal convolution (1..8).
        expand: inner width ``D_inner = expand * dim``.
        dt_rank: rank of the ``dt`` projection; ``"auto"`` is ``ceil(dim / 16)``.
        dt_min, dt_max: range of the initial ``dt`` (log-uniform); dt_init_floor: its floor.
        dt_init: ``"random"`` (uniform ``dt_proj.weight`` of std ``dt_rank**-0.5 * dt_scale``) or ``"constant"``.
        dt_scale: scale of that initialisation.
        conv_bias, bias: biases of the convolution and of the in/out projections.
    """

    dim: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("dim", "d_state", "expand"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.d_conv <= 8:
            raise ValueError(f"d_conv must be in [1, 8], got {self.d_conv}")
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.dim / 16)
        if not isinstance(self.dt_rank, int) or self.dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or an int >= 1, got {self.dt_rank!r}")
        if self.dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {self.dt_init!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    @property
    def d_inner(self) -> int:
        """Inner width ``expand * dim``."""
        return self.expand * self.dim


@register_mixer("mamba")
class Mamba(nn.Module):
    """The Mamba-1 selective SSM mixer; see :class:`MambaConfig` for the options."""

    def __init__(self, dim: int, **options) -> None:
        super().__init__()
        cfg = self.config = MambaConfig(dim=dim, **options)
        d_inner, N, R = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=cfg.bias)
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, cfg.d_conv, groups=d_inner, padding=cfg.d_conv - 1, bias=cfg.conv_bias
        )
        self.x_proj = nn.Linear(d_inner, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, d_inner, bias=True)
        std = R**-0.5 * cfg.dt_scale
        with torch.no_grad():
            if cfg.dt_init == "constant":
                nn.init.constant_(self.dt_proj.weight, std)
            else:
                nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(inverse_softplus_dt(d_inner, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
        self.dt_proj.bias._no_reinit = True
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(d_inner, 1)  # (D_inner, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d_inner))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(d_inner, dim, bias=cfg.bias)

    def allocate_cache(
        self, batch_size: int, max_len: int, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> ConvSSMCache:
        """Zero conv state ``(B, D_inner, W-1)`` in ``dtype`` and fp32 SSM state ``(B, D_inner, N)``
        (``max_len`` is not needed: the state has a fixed size); dtype and device default to the parameters'."""
        cfg = self.config
        conv_shape = (batch_size, cfg.d_inner, cfg.d_conv - 1)
        return ConvSSMCache.zeros(self, conv_shape, (batch_size, cfg.d_inner, cfg.d_state), dtype, device)

    def forward(
        self, x: torch.Tensor, *, packed: PackedBatch | None = None, cache: ConvSSMCache | None = None
    ) -> torch.Tensor:
        """Mix ``x`` ``(B, L, D)`` or packed ``(T, D)``; with ``cache``, start from its state and
        leave the state after the last token in it."""
        check_input(x, self.config.dim, packed, cache)
        x3, seq_idx = packed_rows(x, packed)
        N, R = self.config.d_state, self.config.dt_rank
        xz = self.in_proj(x3).transpose(1, 2)  # (B, 2 D_inner, L), channel-last
        u, z = xz.chunk(2, dim=1)  # (B, D_inner, L) each
        u = conv_with_state(u, self.conv1d, seq_idx, cache)
        x_dbl = self.x_proj(u.transpose(1, 2))  # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [R, N, N], dim=-1)
        delta = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, D_inner, L)
        A = -torch.exp(self.A_log.float())  # (D_inner, N)
        y = selective_scan_fn(
            u, delta, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z,
            delta_bias=self.dt_proj.bias.float(), delta_softplus=True, return_last_state=cache is not None,
            initial_state=None if cache is None else cache.ssm_state, seq_idx=seq_idx,
        )  # fmt: skip
        if cache is not None:
            y, last = y
            cache.ssm_state.copy_(last.detach())
            cache.seqlen += x3.shape[1]
        out = self.out_proj(y.transpose(1, 2))  # (B, L, D)
        return out.squeeze(0) if packed is not None else out

    def step(self, x_t: torch.Tensor, cache: ConvSSMCache) -> tuple[torch.Tensor, ConvSSMCache]:
        """Decode one token per row: ``x_t`` ``(B, D)`` -> ``(y_t (B, D), cache)``."""
        if x_t.dim() != 2 or x_t.shape[1] != self.config.dim:
            raise ValueError(f"step takes x_t of shape (B, D={self.config.dim}), got {tuple(x_t.shape)}")
        N, R = self.config.d_state, self.config.dt_rank
        u, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, D_inner) each
        u = causal_conv1d_update(u, cache.conv_state, self.conv1d.weight[:, 0], self.conv1d.bias, "silu")
        dt, B, C = torch.split(self.x_proj(u), [R, N, N], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # (B, D_inner)
        A = -torch.exp(self.A_log.float())
        y = selective_state_update(
            cache.ssm_state, u, delta, A, B, C, self.D.float(), z, self.dt_proj.bias.float(), dt_softplus=True
        )
        cache.seqlen += 1
        return self.out_proj(y), cache
