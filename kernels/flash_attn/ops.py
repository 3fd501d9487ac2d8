"""``torch.library`` custom ops over the Triton launchers, with fake impls and autograd.

- ``longseq::flash_attn_fwd(q, k, v, cu_seqlens_q?, cu_seqlens_k?, max_seqlen_q, max_seqlen_k,
  softmax_scale, window_left, window_right, softcap, alibi_slopes?, deterministic) -> (out, lse)``:
  padded when the ``cu_seqlens`` are None, packed otherwise; causal is ``window_right = 0``.
  Differentiable in q, k, v (and through ``lse``); ``deterministic`` picks the backward.
- ``longseq::flash_attn_bwd(...) -> (dq, dk, dv)``: its backward.
- ``longseq::flash_attn_decode(q, k_cache, v_cache, seqlens_k, ...) -> (out, lse)``: split-KV forward
  against a KV cache (inference only, like flash-attn's ``flash_attn_with_kvcache``).

The fake impls give ``torch.compile`` the output shapes, so a compiled model treats each op as one
opaque node (no graph break).
"""

from __future__ import annotations

import torch

from longseq.kernels.flash_attn import decode as _decode
from longseq.kernels.flash_attn import triton as _triton

Tensor = torch.Tensor


def _lse_shape(q: Tensor, varlen: bool) -> tuple[int, ...]:
    return (q.shape[1], q.shape[0]) if varlen else (q.shape[0], q.shape[2], q.shape[1])


@torch.library.custom_op("longseq::flash_attn_fwd", mutates_args=())
def flash_attn_fwd_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Tensor | None,
    deterministic: bool,
) -> tuple[Tensor, Tensor]:
    """``(out, lse)``; ``lse`` is fp32 ``(B, H, Lq)`` padded or ``(H, Tq)`` packed. ``deterministic``
    only selects the backward (the forward always is)."""
    p = _triton.Problem(
        q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        softmax_scale, window_left, window_right, softcap, alibi_slopes,
    )  # fmt: skip
    return _triton.flash_attn_fwd(q, k, v, p)


@flash_attn_fwd_op.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, *_args) -> tuple[Tensor, Tensor]:
    lse = q.new_empty(_lse_shape(q, cu_seqlens_q is not None), dtype=torch.float32)
    return torch.empty_like(q), lse


@torch.library.custom_op("longseq::flash_attn_bwd", mutates_args=())
def flash_attn_bwd_op(
    dout: Tensor,
    dlse: Tensor | None,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Tensor | None,
    deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` given ``dout`` and the gradient ``dlse`` of the log-sum-exp (or None);
    ``deterministic=False`` accumulates dq with atomics (see :func:`triton.flash_attn_bwd`)."""
    p = _triton.Problem(
        q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        softmax_scale, window_left, window_right, softcap, alibi_slopes,
    )  # fmt: skip
    return _triton.flash_attn_bwd(dout, q, k, v, out, lse, dlse, p, deterministic)


@flash_attn_bwd_op.register_fake
def _(dout, dlse, q, k, v, *_args) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, cu_q, cu_k, max_q, max_k, scale, left, right, softcap, slopes, deterministic = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, slopes)
    ctx.options = (max_q, max_k, scale, left, right, softcap)
    ctx.deterministic = deterministic


def _last_dim_contiguous(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _backward(ctx, dout: Tensor, dlse: Tensor | None):
    q, k, v, out, lse, cu_q, cu_k, slopes = ctx.saved_tensors
    if dlse is not None:
        dlse = dlse.contiguous()  # must share the lse layout (a broadcast gradient has stride 0)
    dq, dk, dv = flash_attn_bwd_op(
        _last_dim_contiguous(dout), dlse, q, k, v, out, lse, cu_q, cu_k, *ctx.options, slopes, ctx.deterministic
    )
    return dq, dk, dv, None, None, None, None, None, None, None, None, None, None


torch.library.register_autograd("longseq::flash_attn_fwd", _backward, setup_context=_setup_context)


@torch.library.custom_op("longseq::flash_attn_decode", mutates_args=())
def flash_attn_decode_op(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    seqlens_k: Tensor,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Tensor | None,
    num_splits: int,
) -> tuple[Tensor, Tensor]:
    """``(out, lse)`` of q ``(B, Lq, H, D)`` against the first ``seqlens_k[b]`` keys of the cache."""
    return _decode.flash_attn_decode(
        q, k_cache, v_cache, seqlens_k, softmax_scale, window_left, window_right, softcap, alibi_slopes, num_splits
    )


@flash_attn_decode_op.register_fake
def _(q, k_cache, v_cache, seqlens_k, *_args) -> tuple[Tensor, Tensor]:
    return torch.empty_like(q), q.new_empty(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32)
