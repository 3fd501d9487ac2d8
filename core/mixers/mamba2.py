"""Mamba-2 mixer: the state space duality layer of Dao & Gu (2024) on the longseq kernels.

``x -> in_proj -> [z, xBC, dt]``; ``xBC -> causal conv1d + SiLU -> [x, B, C]``;
``y = SSD(x (heads of P), dt, A, B, C (G groups), D, dt_bias, softplus)``; a gated RMSNorm
``rmsnorm(y * silu(z)) * weight`` per group; ``out_proj``. Parameterisation and initialisation as
``mamba_ssm.modules.mamba2.Mamba2``: a scalar ``A = -exp(A_log)`` per head with ``A`` uniform in
``A_init_range``, ``D = 1``, ``dt_bias = softplus^-1(dt)`` for ``dt`` log-uniform in ``[dt_min, dt_max]``.

Implements the mixer protocol like :class:`longseq.core.mixers.mamba.Mamba` (packed input restarts
the state at every sequence; ``allocate_cache`` / ``forward(cache=...)`` / ``step``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from longseq.core.mixers.mamba import ConvSSMCache, check_input, conv_with_state, inverse_softplus_dt, packed_rows
from longseq.core.packing import PackedBatch
from longseq.core.registry import register_mixer
from longseq.kernels.causal_conv1d import causal_conv1d_update
from longseq.kernels.rmsnorm import rms_norm
from longseq.kernels.ssd import mamba_chunk_scan_combined, ssd_step
from longseq.kernels.ssd.triton import CHUNK_SIZES

__all__ = ["Mamba2", "Mamba2Config"]


@dataclass
class Mamba2Config:
    """Configuration of :class:`Mamba2` (``mamba_ssm``'s defaults).

    Attributes:
        dim: model width D.
        d_state: SSM state size N per head.
        d_conv: width of the causal convolution (1..8).
        expand: inner width ``D_inner = expand * dim``; heads ``H = D_inner / headdim``.
        headdim: channels P per head.
        ngroups: groups G of ``B``/``C`` (and of the gated norm); divides H.
        A_init_range: range of the initial ``-A`` (uniform).
        D_has_hdim: one skip ``D`` per channel instead of per head.
        dt_min, dt_max: range of the initial ``dt`` (log-uniform); dt_init_floor: its floor.
        dt_limit: clamp of ``dt`` after the softplus (off by default).
        conv_bias, bias: biases of the convolution and of the in/out projections.
        chunk_size: SSD chunk length (16, 32, 64, 128 or 256).
        norm_eps: epsilon of the gated RMSNorm.
    """

    dim: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    A_init_range: tuple[float, float] = (1.0, 16.0)
    D_has_hdim: bool = False
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_limit: tuple[float, float] = (0.0, float("inf"))
    conv_bias: bool = True
    bias: bool = False
    chunk_size: int = 256
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("dim", "d_state", "expand", "headdim", "ngroups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.d_conv <= 8:
            raise ValueError(f"d_conv must be in [1, 8], got {self.d_conv}")
        if self.d_inner % self.headdim:
            raise ValueError(f"expand * dim = {self.d_inner} must be a multiple of headdim {self.headdim}")
        if self.nheads % self.ngroups:
            raise ValueError(f"ngroups {self.ngroups} must divide the number of heads {self.nheads}")
        if self.chunk_size not in CHUNK_SIZES:
            raise ValueError(f"chunk_size must be one of {CHUNK_SIZES}, got {self.chunk_size}")
        if not 0 < self.A_init_range[0] <= self.A_init_range[1]:
            raise ValueError(f"A_init_range must be 0 < lo <= hi, got {self.A_init_range}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    @property
    def d_inner(self) -> int:
        """Inner width ``expand * dim``."""
        return self.expand * self.dim

    @property
    def nheads(self) -> int:
        """Number of SSM heads H."""
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the convolution: ``x``, ``B`` and ``C``."""
        return self.d_inner + 2 * self.ngroups * self.d_state


@register_mixer("mamba2")
class Mamba2(nn.Module):
    """The Mamba-2 SSD mixer; see :class:`Mamba2Config` for the options."""

    def __init__(self, dim: int, **options) -> None:
        super().__init__()
        cfg = self.config = Mamba2Config(dim=dim, **options)
        H = cfg.nheads
        self.in_proj = nn.Linear(dim, cfg.d_inner + cfg.conv_dim + H, bias=cfg.bias)  # [z, xBC, dt]
        self.conv1d = nn.Conv1d(
            cfg.conv_dim, cfg.conv_dim, cfg.d_conv, groups=cfg.conv_dim, padding=cfg.d_conv - 1, bias=cfg.conv_bias
        )
        self.dt_bias = nn.Parameter(inverse_softplus_dt(H, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor))
        self.dt_bias._no_weight_decay = True
        A = torch.empty(H).uniform_(*cfg.A_init_range)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(cfg.d_inner if cfg.D_has_hdim else H))
        self.D._no_weight_decay = True
        self.norm_weight = nn.Parameter(torch.ones(cfg.d_inner))
        self.out_proj = nn.Linear(cfg.d_inner, dim, bias=cfg.bias)

    def _gated_norm(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``rmsnorm(y * silu(z)) * weight`` over each of the G groups of channels (``norm_before_gate=False``)."""
        G = self.config.ngroups
        g = y * F.silu(z)
        if G == 1:
            return rms_norm(g, self.norm_weight, self.config.norm_eps)
        return rms_norm(g.unflatten(-1, (G, -1)), None, self.config.norm_eps).flatten(-2) * self.norm_weight

    def _D(self) -> torch.Tensor:
        cfg = self.config
        return self.D.float().view(cfg.nheads, cfg.headdim) if cfg.D_has_hdim else self.D.float()

    def allocate_cache(
        self, batch_size: int, max_len: int, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> ConvSSMCache:
        """Zero conv state ``(B, C_conv, W-1)`` in ``dtype`` and fp32 SSM state ``(B, H, P, N)``
        (``max_len`` is not needed: the state has a fixed size); dtype and device default to the parameters'."""
        cfg = self.config
        conv_shape = (batch_size, cfg.conv_dim, cfg.d_conv - 1)
        ssm_shape = (batch_size, cfg.nheads, cfg.headdim, cfg.d_state)
        return ConvSSMCache.zeros(self, conv_shape, ssm_shape, dtype, device)

    def forward(
        self, x: torch.Tensor, *, packed: PackedBatch | None = None, cache: ConvSSMCache | None = None
    ) -> torch.Tensor:
        """Mix ``x`` ``(B, L, D)`` or packed ``(T, D)``; with ``cache``, start from its state and
        leave the state after the last token in it."""
        cfg = self.config
        check_input(x, cfg.dim, packed, cache)
        x3, seq_idx = packed_rows(x, packed)
        batch, L, _ = x3.shape
        G, N, H, P = cfg.ngroups, cfg.d_state, cfg.nheads, cfg.headdim
        z, xBC, dt = torch.split(self.in_proj(x3), [cfg.d_inner, cfg.conv_dim, H], dim=-1)
        xBC = conv_with_state(xBC.transpose(1, 2), self.conv1d, seq_idx, cache).transpose(1, 2)  # (B, L, C_conv)
        xs, B, C = torch.split(xBC, [cfg.d_inner, G * N, G * N], dim=-1)
        limit = {} if cfg.dt_limit == (0.0, float("inf")) else {"dt_limit": cfg.dt_limit}
        y = mamba_chunk_scan_combined(
            xs.unflatten(-1, (H, P)), dt, -torch.exp(self.A_log.float()), B.unflatten(-1, (G, N)),
            C.unflatten(-1, (G, N)), cfg.chunk_size, D=self._D(), dt_bias=self.dt_bias, seq_idx=seq_idx,
            initial_states=None if cache is None else cache.ssm_state, dt_softplus=True,
            return_final_states=cache is not None, **limit,
        )  # fmt: skip
        if cache is not None:
            y, final = y
            cache.ssm_state.copy_(final.detach())
            cache.seqlen += L
        out = self.out_proj(self._gated_norm(y.flatten(-2), z))  # (B, L, D)
        return out.squeeze(0) if packed is not None else out

    def step(self, x_t: torch.Tensor, cache: ConvSSMCache) -> tuple[torch.Tensor, ConvSSMCache]:
        """Decode one token per row: ``x_t`` ``(B, D)`` -> ``(y_t (B, D), cache)``."""
        cfg = self.config
        if x_t.dim() != 2 or x_t.shape[1] != cfg.dim:
            raise ValueError(f"step takes x_t of shape (B, D={cfg.dim}), got {tuple(x_t.shape)}")
        if cfg.dt_limit != (0.0, float("inf")):
            raise NotImplementedError("step does not apply dt_limit; use forward(x, cache=...) one token at a time")
        G, N, H, P = cfg.ngroups, cfg.d_state, cfg.nheads, cfg.headdim
        z, xBC, dt = torch.split(self.in_proj(x_t), [cfg.d_inner, cfg.conv_dim, H], dim=-1)
        xBC = causal_conv1d_update(xBC, cache.conv_state, self.conv1d.weight[:, 0], self.conv1d.bias, "silu")
        xs, B, C = torch.split(xBC, [cfg.d_inner, G * N, G * N], dim=-1)
        y = ssd_step(
            cache.ssm_state, xs.unflatten(-1, (H, P)), dt, -torch.exp(self.A_log.float()), B.unflatten(-1, (G, N)),
            C.unflatten(-1, (G, N)), self._D(), dt_bias=self.dt_bias, dt_softplus=True,
        )  # fmt: skip
        cache.seqlen += 1
        return self.out_proj(self._gated_norm(y.flatten(-2), z)), cache
