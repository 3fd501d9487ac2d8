"""RMSNorm reference: the spec the Triton kernel is tested against.

``y = x / sqrt(mean(x**2, -1) + eps) * weight`` over the last dimension.
"""

from __future__ import annotations

import torch


def rms_norm_ref(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6, upcast: bool = True
) -> torch.Tensor:
    """RMSNorm over the last dimension of ``x``.

    Args:
        x: ``(..., N)`` input.
        weight: optional ``(N,)`` scale.
        eps: added to the mean square before the square root.
        upcast: compute in fp32 and return fp32 (the reference); ``False`` runs the same math in
            ``x.dtype``, which the tests use to measure low-precision rounding.
    """
    if upcast:
        x = x.float()
        weight = None if weight is None else weight.float()
    rstd = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    y = x * rstd
    if weight is not None:
        y = y * weight
    return y
