"""Hyena's implicit long filter: ``h(t) = MLP(pos(t)) * window(t)`` (Poli et al. 2023, as in the
Safari/HyenaDNA code).

* :func:`positional_features`: ``[t, cos(f_k w t), -sin(f_k w t)]`` with ``t`` normalised to ``[0, 1]``
  over ``max_len``, so the filter value at a position does not depend on the sequence length asked for.
* :class:`Sin`: ``sin(freq * x)`` with a learnable frequency per feature (one instance shared by every
  layer of the MLP, as in the reference code).
* :class:`HyenaFilter`: the MLP ``Linear -> Sin -> (Linear -> Sin) * num_inner -> Linear`` and the
  exponential decay window ``exp(-t |delta_c|) + shift`` with per-channel rates spread between a slow
  and a fast decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["HyenaFilter", "Sin", "positional_features"]


def positional_features(max_len: int, emb_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, t)``: features ``(max_len, emb_dim)`` and normalised time ``(max_len, 1)``.

    ``z = [t, Re e^{-i f_k w}, Im e^{-i f_k w}]`` with ``w = 2 pi n / max_len`` at position ``n`` and
    ``(emb_dim - 1) / 2`` frequencies ``f_k`` spread over ``[1e-4, bands - 1]``.
    """
    bands = (emb_dim - 1) // 2
    t = torch.linspace(0, 1, max_len)[:, None]  # (L, 1)
    w = 2 * math.pi * torch.arange(max_len, dtype=torch.float32)[:, None] / max_len  # (L, 1)
    f = torch.linspace(1e-4, bands - 1, bands)[None, :]  # (1, bands)
    return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1), t


class Sin(nn.Module):
    """``sin(freq * x)`` with a learnable frequency per feature, initialised to ``w``."""

    def __init__(self, dim: int, w: float = 1.0) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((dim,), float(w)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class HyenaFilter(nn.Module):
    """Implicit filters of ``channels`` channels up to ``max_len`` taps.

    Args:
        channels: number of filters produced.
        max_len: longest filter (the positional features are precomputed for it).
        emb_dim: positional feature size (odd, >= 3).
        width: hidden width of the MLP (Hyena's ``filter_order``).
        num_inner: hidden ``Linear -> Sin`` layers after the first.
        sin_freq: initial frequency of the sine activation.
        modulate: apply the exponential decay window.
        fast_decay_pct, slow_decay_pct, target: the fastest and slowest channels decay to ``target``
            at these fractions of ``max_len``.
        shift: added to the window (a floor on it).
        fp32: compute the filters with autocast off (see ``HyenaConfig.filter_fp32``).
    """

    def __init__(
        self,
        channels: int,
        max_len: int,
        *,
        emb_dim: int = 3,
        width: int = 64,
        num_inner: int = 2,
        sin_freq: float = 1.0,
        modulate: bool = True,
        fast_decay_pct: float = 0.3,
        slow_decay_pct: float = 1.5,
        target: float = 1e-2,
        shift: float = 0.0,
        fp32: bool = False,
    ) -> None:
        super().__init__()
        self.channels, self.max_len, self.modulate, self.shift = channels, max_len, modulate, shift
        self.fp32 = fp32
        z, t = positional_features(max_len, emb_dim)
        self.register_buffer("z", z, persistent=False)  # (max_len, emb_dim)
        self.register_buffer("t", t, persistent=False)  # (max_len, 1)
        act = Sin(width, sin_freq)
        layers: list[nn.Module] = [nn.Linear(emb_dim, width), act]
        for _ in range(num_inner):
            layers += [nn.Linear(width, width), act]
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, channels, bias=False)
        deltas = torch.linspace(math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct, channels)
        self.register_buffer("deltas", deltas[:, None], persistent=False)  # (channels, 1)

    def forward(self, L: int) -> torch.Tensor:
        """The first ``L`` taps of every filter, ``(channels, L)``.

        With ``fp32`` the MLP runs with autocast off. Otherwise it follows autocast, as in the reference
        code: in bf16 the positional features of neighbouring positions round to the same values (8
        mantissa bits: steps of ~1/256 of ``max_len``), a staircase the model then trains against.
        """
        if not 1 <= L <= self.max_len:
            raise ValueError(f"filter length must be in [1, max_len={self.max_len}], got {L}")
        if not self.fp32:
            return self._filters(L)
        with torch.autocast(self.z.device.type, enabled=False):
            return self._filters(L)

    def _filters(self, L: int) -> torch.Tensor:
        hidden = self.mlp(self.z[:L])  # (L, width)
        h = torch.matmul(self.out.weight, hidden.t())  # (channels, L), written channel-major directly
        if self.modulate:
            window = torch.exp(-self.t[:L, 0] * self.deltas.abs()) + self.shift  # (channels, L)
            h = h * window
        return h
