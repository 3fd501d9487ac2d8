"""Normalisation layers: RMSNorm (on the fused kernel) and LayerNorm, built by name with :func:`create_norm`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from longseq.kernels.rmsnorm import rms_norm

__all__ = ["NORMS", "LayerNorm", "RMSNorm", "create_norm"]


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last dimension, via ``longseq.kernels.rmsnorm``.

    Args:
        dim: size of the normalised (last) dimension.
        eps: added to the mean square.
        elementwise_affine: learn a per-channel scale (initialised to 1).
    """

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class LayerNorm(nn.LayerNorm):
    """``torch.nn.LayerNorm`` over the last dimension with the ``(dim, eps, bias)`` signature of :class:`RMSNorm`."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True, bias: bool = True) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine, bias=bias)


#: Norm constructors by name; each takes ``(dim, eps=..., elementwise_affine=...)``.
NORMS: dict[str, Callable[..., nn.Module]] = {"rmsnorm": RMSNorm, "layernorm": LayerNorm}


def create_norm(name: str, dim: int, **kwargs) -> nn.Module:
    """The norm called ``name`` (``"rmsnorm"`` or ``"layernorm"``) over ``dim`` channels."""
    try:
        return NORMS[name](dim, **kwargs)
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose one of {sorted(NORMS)}") from None
