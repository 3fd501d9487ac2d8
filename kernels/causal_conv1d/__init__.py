"""Depthwise causal conv1d (the short convolution of Mamba layers): Triton forward, backward and
decoding update, ``torch.library`` custom ops and the public functions, signatures as the
``causal-conv1d`` package.

>>> y = causal_conv1d_fn(x, weight, bias, activation="silu")           # x (B, D, L), weight (D, W)
>>> y = causal_conv1d_fn(xp, weight, bias, seq_idx=seq_idx)             # packed: xp (1, D, T), seq_idx (1, T)
>>> y_t = causal_conv1d_update(x_t, conv_state, weight, bias, "silu")  # x_t (B, D), conv_state (B, D, W-1)

CUDA tensors (and every tensor under ``TRITON_INTERPRET=1``) run the Triton kernels; other CPU
tensors run the PyTorch reference. Ops: ``longseq::causal_conv1d_fwd`` / ``_bwd`` (differentiable
through ``register_autograd``) and ``longseq::causal_conv1d_update`` (mutates the state).
"""

from __future__ import annotations

import torch

from longseq.kernels._common import check_dtype, check_same_device, use_triton
from longseq.kernels.causal_conv1d import triton as _triton
from longseq.kernels.causal_conv1d.reference import causal_conv1d_ref, causal_conv1d_update_ref
from longseq.kernels.selective_scan.checks import check_optional, check_seq_idx

__all__ = ["causal_conv1d_fn", "causal_conv1d_ref", "causal_conv1d_update", "causal_conv1d_update_ref"]

_ACTIVATIONS = (None, "silu", "swish")


@torch.library.custom_op("longseq::causal_conv1d_fwd", mutates_args=())
def _conv_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, seq_idx: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """``out`` ``(B, D, L)``, channel-last when ``x`` is (see ``triton.empty_like_layout``)."""
    return _triton.causal_conv1d_fwd(x, weight, bias, seq_idx, silu)


@_conv_fwd.register_fake
def _(x, weight, bias, seq_idx, silu):
    return _triton.empty_like_layout(x)


@torch.library.custom_op("longseq::causal_conv1d_bwd", mutates_args=())
def _conv_bwd(
    dout: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    silu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dweight, dbias)``; ``dbias`` is an empty tensor when there is no bias."""
    dx, dw, db = _triton.causal_conv1d_bwd(dout, x, weight, bias, seq_idx, silu)
    return dx, dw, db if db is not None else x.new_empty(0)


@_conv_bwd.register_fake
def _(dout, x, weight, bias, seq_idx, silu):
    return (
        _triton.empty_like_layout(x),
        torch.empty_like(weight),
        torch.empty_like(bias) if bias is not None else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, seq_idx, silu = inputs
    ctx.save_for_backward(x, weight, bias, seq_idx)
    ctx.silu = silu


def _backward(ctx, dout: torch.Tensor):
    x, weight, bias, seq_idx = ctx.saved_tensors
    dx, dw, db = _conv_bwd(dout, x, weight, bias, seq_idx, ctx.silu)
    return dx, dw, (db if bias is not None else None), None, None


torch.library.register_autograd("longseq::causal_conv1d_fwd", _backward, setup_context=_setup_context)


@torch.library.custom_op("longseq::causal_conv1d_update", mutates_args=("conv_state",))
def _conv_update(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """``out`` ``(B, D, Lnew)``; shifts ``conv_state`` in place."""
    return _triton.causal_conv1d_update(x, conv_state, weight, bias, silu)


@_conv_update.register_fake
def _(x, conv_state, weight, bias, silu):
    return torch.empty_like(x)


def _check_weight(weight: torch.Tensor, bias: torch.Tensor | None, D: int, activation: str | None) -> None:
    check_dtype("weight", weight)
    if weight.dim() != 2 or weight.shape[0] != D:
        raise ValueError(f"weight must have shape (D={D}, W), got {tuple(weight.shape)}")
    if not 1 <= weight.shape[1] <= _triton.MAX_WIDTH:
        raise ValueError(f"conv width W must be in [1, {_triton.MAX_WIDTH}], got {weight.shape[1]}")
    check_optional("bias", bias, (D,))
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")


def _validate(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    activation: str | None,
) -> None:
    check_dtype("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must be (B, D, L), got shape {tuple(x.shape)}")
    _check_weight(weight, bias, x.shape[1], activation)
    check_seq_idx(seq_idx, x.shape[0], x.shape[2])
    check_same_device(x=x, weight=weight, bias=bias, seq_idx=seq_idx)


def causal_conv1d_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """Depthwise causal convolution ``act(bias + sum_k weight[:, k] * x[..., t - (W-1) + k])``.

    Args:
        x: ``(B, D, L)`` fp16, bf16 or fp32, any strides (contiguous or channel-last). Packed
            sequences: ``(1, D, T)`` with ``seq_idx``.
        weight: ``(D, W)`` with ``1 <= W <= 8``.
        bias: optional ``(D,)``.
        seq_idx: optional int32 ``(B, L)``: the sequence each token belongs to; taps never read a
            token of another sequence (the convolution restarts at every change of ``seq_idx``).
        activation: ``None`` or ``"silu"`` / ``"swish"``.

    Returns:
        ``(B, D, L)`` in ``x``'s dtype, channel-last when ``x`` has unit channel stride; differentiable in ``x``, ``weight`` and ``bias``.
    """
    _validate(x, weight, bias, seq_idx, activation)
    silu = activation is not None
    if not use_triton(x):
        return causal_conv1d_ref(x, weight, bias, activation, seq_idx).to(x.dtype)
    return _conv_fwd(x, weight, bias, seq_idx, silu)


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """Decode new tokens from the rolling convolution state (updated in place).

    Args:
        x: ``(B, D)`` (one token) or ``(B, D, Lnew)`` with ``Lnew <= 256``.
        conv_state: ``(B, D, S)`` with ``S >= W - 1``: the last ``S`` inputs, oldest first. On
            return it holds the last ``S`` inputs of ``cat(conv_state, x)``.
        weight, bias, activation: as in :func:`causal_conv1d_fn`.

    Returns:
        The outputs for the new tokens, shaped like ``x``. Not differentiable (decoding only).
    """
    check_dtype("x", x)
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be (B, D) or (B, D, Lnew), got shape {tuple(x.shape)}")
    x3 = x.unsqueeze(-1) if x.dim() == 2 else x
    B, D, Lnew = x3.shape
    _check_weight(weight, bias, D, activation)
    check_dtype("conv_state", conv_state)
    W = weight.shape[1]
    if conv_state.dim() != 3 or conv_state.shape[:2] != (B, D) or conv_state.shape[2] < W - 1:
        raise ValueError(
            f"conv_state must have shape (B={B}, D={D}, S >= W-1 = {W - 1}), got {tuple(conv_state.shape)}"
        )
    if Lnew > _triton.MAX_UPDATE_TOKENS:
        raise ValueError(f"causal_conv1d_update takes at most {_triton.MAX_UPDATE_TOKENS} new tokens, got {Lnew}")
    check_same_device(x=x, conv_state=conv_state, weight=weight, bias=bias)
    if not use_triton(x):
        out, new_state = causal_conv1d_update_ref(x3, conv_state, weight, bias, activation)
        conv_state.copy_(new_state)
        out = out.to(x.dtype)
    else:
        out = _conv_update(x3, conv_state, weight, bias, activation is not None)
    return out.squeeze(-1) if x.dim() == 2 else out
