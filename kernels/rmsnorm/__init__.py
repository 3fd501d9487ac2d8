"""Fused RMSNorm: Triton forward and backward, a ``torch.library`` custom op, and the public function.

>>> y = rms_norm(x, weight, eps=1e-6)  # same math as torch.nn.functional.rms_norm(x, (N,), weight, eps)

CUDA tensors (and every tensor under ``TRITON_INTERPRET=1``) run the Triton kernels; other CPU
tensors run the PyTorch reference, so layers built on this work everywhere. The op is registered as
``longseq::rms_norm_fwd`` / ``longseq::rms_norm_bwd`` with fake implementations, so
``torch.compile(fullgraph=True)`` treats it as one opaque node without graph breaks.

Eager calls skip the custom-op dispatcher (about 0.1 ms of host time per forward+backward, which
dominates small shapes) and run the same launchers through a plain ``autograd.Function``; traced
calls (``torch.compiler.is_compiling()``) go through the registered op.
"""

from __future__ import annotations

import torch

from longseq.kernels._common import check_dtype, check_same_device, use_triton
from longseq.kernels.rmsnorm import triton as _triton
from longseq.kernels.rmsnorm.reference import rms_norm_ref

__all__ = ["rms_norm", "rms_norm_ref"]


@torch.library.custom_op("longseq::rms_norm_fwd", mutates_args=())
def _rms_norm_fwd(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, rstd)`` for ``x`` of shape ``(M, N)``."""
    return _triton.rms_norm_fwd(x, weight, eps)


@_rms_norm_fwd.register_fake
def _(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), x.new_empty(x.shape[0], dtype=torch.float32)


@torch.library.custom_op("longseq::rms_norm_bwd", mutates_args=())
def _rms_norm_bwd(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dx, dweight)``; ``dweight`` is an empty tensor when there is no weight."""
    dx, dw = _triton.rms_norm_bwd(dy, x, weight, rstd)
    return dx, dw if dw is not None else x.new_empty(0)


@_rms_norm_bwd.register_fake
def _(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor):
    return torch.empty_like(x), torch.empty_like(weight) if weight is not None else x.new_empty(0)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, _eps = inputs
    _y, rstd = output
    ctx.save_for_backward(x, weight, rstd)
    ctx.has_weight = weight is not None


def _backward(ctx, dy: torch.Tensor, _drstd: torch.Tensor):
    x, weight, rstd = ctx.saved_tensors
    dx, dw = _rms_norm_bwd(dy.contiguous(), x, weight, rstd)
    return dx, (dw if ctx.has_weight else None), None


torch.library.register_autograd("longseq::rms_norm_fwd", _backward, setup_context=_setup_context)


class _RMSNormFunction(torch.autograd.Function):
    """Eager-mode autograd over the same launchers as the custom op (no dispatcher overhead)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        y, rstd = _triton.rms_norm_fwd(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = _triton.rms_norm_bwd(dy.contiguous(), x, weight, rstd)
        return dx, dw, None


def _validate(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> None:
    check_dtype("x", x)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (the normalised one), got a 0-d tensor")
    n = x.shape[-1]
    if n == 0:
        raise ValueError(f"x must have a non-empty last dimension, got shape {tuple(x.shape)}")
    if n > _triton.MAX_HIDDEN:
        raise ValueError(
            f"hidden size {n} exceeds the kernel's maximum {_triton.MAX_HIDDEN}; "
            "use torch.nn.functional.rms_norm for such rows"
        )
    if weight is not None:
        check_dtype("weight", weight)
        if weight.shape != (n,):
            raise ValueError(f"weight must have shape ({n},) to match x's last dim, got {tuple(weight.shape)}")
    check_same_device(x=x, weight=weight)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension: ``x / sqrt(mean(x**2) + eps) * weight``.

    Args:
        x: ``(..., N)`` fp16, bf16 or fp32; ``N <= 65536``. Statistics are computed in fp32.
        weight: optional ``(N,)`` scale (any of the same float dtypes).
        eps: added to the mean square.

    Returns:
        A tensor of ``x``'s shape and dtype. Differentiable in ``x`` and ``weight``.
    """
    _validate(x, weight, eps)
    if not use_triton(x):
        return rms_norm_ref(x, weight, eps, upcast=True).to(x.dtype)
    shape = x.shape
    x2d = x.reshape(-1, shape[-1])
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    if torch.compiler.is_compiling():
        y, _rstd = _rms_norm_fwd(x2d, weight, float(eps))
    else:
        y = _RMSNormFunction.apply(x2d, weight, float(eps))
    return y.view(shape)
