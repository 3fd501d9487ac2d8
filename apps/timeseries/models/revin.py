"""Reversible instance normalisation (RevIN, Kim et al., ICLR 2022): :class:`RevIN`.

Each window is normalised by its own per-channel statistics over time before the model, and the
forecast is mapped back with the same statistics after it, so level and scale shifts between windows
do not reach the network. ``affine=True`` adds a learnable per-channel scale and shift (PatchTST's
``layers/RevIN.py``); ``affine=False`` is the plain "non-stationary" normalisation used by
iTransformer / S-Mamba (``use_norm``). Every model of this app that normalises per window uses this
one module.

The statistics are returned, not stored on the module, so one module can normalise several batches
in flight (and nothing leaks between calls)::

    z, stats = revin.normalize(x)      # x (B, L, C)
    y = revin.denormalize(model(z), stats)  # (B, H, C)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["RevIN", "RevINStats"]


@dataclass(frozen=True)
class RevINStats:
    """Per-window statistics: ``center`` (B, 1, C) (the mean, or the last value) and ``scale`` (B, 1, C)."""

    center: torch.Tensor
    scale: torch.Tensor


class RevIN(nn.Module):
    """``(x - center) / scale`` per window and channel, optionally followed by ``weight * x + bias``.

    Args:
        num_channels: C, the channels of ``x`` (needed for ``affine``).
        eps: added to the variance (and to ``weight`` when inverting the affine map).
        affine: learn a per-channel scale (init 1) and shift (init 0).
        subtract_last: centre on the window's last value instead of its mean (PatchTST's option).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, subtract_last: bool = False) -> None:
        super().__init__()
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        self.num_channels, self.eps, self.affine, self.subtract_last = num_channels, eps, affine, subtract_last
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))

    def _check(self, x: torch.Tensor, name: str) -> None:
        if x.dim() != 3 or x.shape[-1] != self.num_channels:
            raise ValueError(f"{name} must be (B, L, C) with C = {self.num_channels}, got {tuple(x.shape)}")

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, RevINStats]:
        """Normalise ``x`` (B, L, C) over L; returns the normalised tensor and the statistics to invert it."""
        self._check(x, "x")
        # statistics are constants for the gradient, as in the reference implementations
        center = (x[:, -1:, :] if self.subtract_last else x.mean(dim=1, keepdim=True)).detach()  # (B, 1, C)
        scale = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()  # (B, 1, C)
        z = (x - center) / scale
        if self.affine:
            z = z * self.weight + self.bias
        return z, RevINStats(center, scale)

    def denormalize(self, y: torch.Tensor, stats: RevINStats) -> torch.Tensor:
        """Map ``y`` (B, H, C) back to the scale of the window ``stats`` came from."""
        self._check(y, "y")
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * stats.scale + stats.center

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}, subtract_last={self.subtract_last}"
