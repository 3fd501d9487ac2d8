"""Mamba-2 state space duality (SSD): chunked Triton forward and backward with tensor-core
intra-chunk products, packed sequences (``seq_idx``), initial/final states, a decoding step,
``torch.library`` custom ops and the public functions, with ``mamba_ssm``'s signatures.

>>> y = mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size=256, D=D, dt_bias=dt_bias, dt_softplus=True)
>>> y, final = mamba_chunk_scan_combined(x, dt, A, B, C, 64, initial_states=h0, return_final_states=True)
>>> y = mamba_chunk_scan_combined(xp, dtp, A, Bp, Cp, 256, seq_idx=seq_idx)   # packed rows
>>> y_t = ssd_step(state, x_t, dt_t, A, B_t, C_t, D, dt_bias=dt_bias, dt_softplus=True)

CUDA tensors (and every tensor under ``TRITON_INTERPRET=1``) run the Triton kernels; other CPU
tensors run :func:`ssd_chunked_ref`. Ops: ``longseq::ssd_fwd`` / ``longseq::ssd_bwd``.
"""

from __future__ import annotations

import torch

from longseq.kernels._common import check_dtype, check_same_device, use_triton
from longseq.kernels.selective_scan import selective_state_update
from longseq.kernels.selective_scan.checks import check_optional, check_seq_idx, packed_seq_idx
from longseq.kernels.ssd import triton as _triton
from longseq.kernels.ssd.reference import ssd_chunked_ref, ssd_ref

__all__ = ["mamba_chunk_scan_combined", "ssd_chunked_ref", "ssd_ref", "ssd_step"]

Tensor = torch.Tensor
_NO_LIMIT = (0.0, float("inf"))


def _limit(clamp: bool, lo: float, hi: float) -> tuple[float, float] | None:
    return (lo, hi) if clamp else None


@torch.library.custom_op("longseq::ssd_fwd", mutates_args=())
def _ssd_fwd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    initial_states: Tensor | None,
    seq_idx: Tensor | None,
    chunk_size: int,
    softplus: bool,
    clamp: bool,
    lo: float,
    hi: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(out, final_states, y_before_gate)``; the last is empty without ``z``."""
    out, final, y_pre = _triton.ssd_fwd(
        x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, chunk_size, softplus, _limit(clamp, lo, hi)
    )
    return out, final, y_pre if y_pre is not None else x.new_empty(0)


@_ssd_fwd.register_fake
def _(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, chunk_size, softplus, clamp, lo, hi):
    batch, _L, H, P = x.shape
    y_pre = torch.empty_like(x, memory_format=torch.contiguous_format) if z is not None else x.new_empty(0)
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        x.new_empty(batch, H, P, B.shape[-1], dtype=torch.float32),
        y_pre,
    )


@torch.library.custom_op("longseq::ssd_bwd", mutates_args=())
def _ssd_bwd(
    dout: Tensor,
    dfinal: Tensor | None,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    initial_states: Tensor | None,
    seq_idx: Tensor | None,
    y_pre: Tensor,
    chunk_size: int,
    softplus: bool,
    clamp: bool,
    lo: float,
    hi: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinitial_states)``; absent ones are empty."""
    grads = _triton.ssd_bwd(
        dout, dfinal, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx,
        y_pre if z is not None else None, chunk_size, softplus, _limit(clamp, lo, hi),
    )  # fmt: skip
    return tuple(g if g is not None else x.new_empty(0) for g in grads)


@_ssd_bwd.register_fake
def _(dout, dfinal, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, y_pre, chunk_size, softplus, clamp, lo, hi):
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else x.new_empty(0)  # noqa: E731
    batch, _L, H, P = x.shape
    return (
        like(x), like(dt), like(A), like(B), like(C), like(D), like(z), like(dt_bias),
        x.new_empty(batch, H, P, B.shape[-1], dtype=torch.float32),
    )  # fmt: skip


def _setup_context(ctx, inputs, output) -> None:
    x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, chunk_size, softplus, clamp, lo, hi = inputs
    ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, output[2])
    ctx.args = (chunk_size, softplus, clamp, lo, hi)


def _backward(ctx, dout: Tensor, dfinal: Tensor | None, _dy_pre: Tensor | None):
    x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, y_pre = ctx.saved_tensors
    dx, ddt, dA, dB, dC, dD, dz, dbias, dh0 = _ssd_bwd(
        dout, dfinal, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, y_pre, *ctx.args
    )
    opt = lambda g, t: g if t is not None else None  # noqa: E731
    dh0 = dh0.to(initial_states.dtype) if initial_states is not None else None
    return (dx, ddt, dA, dB, dC, opt(dD, D), opt(dz, z), opt(dbias, dt_bias), dh0) + (None,) * 6


torch.library.register_autograd("longseq::ssd_fwd", _backward, setup_context=_setup_context)


def _validate(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx) -> None:
    for name, t in (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        check_dtype(name, t)
    if x.dim() != 4:
        raise ValueError(f"x must be (B, L, H, P), got shape {tuple(x.shape)}")
    batch, L, H, P = x.shape
    if L == 0:
        raise ValueError("x must have at least one token (L >= 1), got L=0")
    if not 1 <= P <= _triton.MAX_HEADDIM:
        raise ValueError(f"head dim P must be in [1, {_triton.MAX_HEADDIM}], got {P}")
    if chunk_size not in _triton.CHUNK_SIZES:
        raise ValueError(f"chunk_size must be one of {_triton.CHUNK_SIZES}, got {chunk_size}")
    if dt.shape != (batch, L, H):
        raise ValueError(f"dt must have shape (B, L, H) = {(batch, L, H)}, got {tuple(dt.shape)}")
    if A.shape != (H,):
        raise ValueError(f"A must have shape (H,) = ({H},), got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (batch, L) or B.shape[2] == 0 or H % B.shape[2]:
        raise ValueError(f"B must be (B, L, G, N) = {(batch, L, 'G', 'N')} with G dividing H={H}, got {tuple(B.shape)}")
    if C.shape != B.shape:
        raise ValueError(f"C must have B's shape {tuple(B.shape)}, got {tuple(C.shape)}")
    N = B.shape[3]
    if not 1 <= N <= _triton.MAX_DSTATE:
        raise ValueError(f"state size N must be in [1, {_triton.MAX_DSTATE}], got {N}")
    check_optional("D", D, (H,), (H, P))
    check_optional("z", z, tuple(x.shape))
    check_optional("dt_bias", dt_bias, (H,))
    check_optional("initial_states", initial_states, (batch, H, P, N))
    check_seq_idx(seq_idx, batch, L)
    check_same_device(
        x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states, seq_idx=seq_idx
    )


def mamba_chunk_scan_combined(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    seq_idx: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = _NO_LIMIT,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The Mamba-2 SSD scan (``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined``).

    ``S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T``, ``y_t = S_t C_t + D x_t`` per head, gated by
    ``silu(z)``; see :mod:`longseq.kernels.ssd.reference`.

    Args:
        x: ``(B, L, H, P)`` fp16, bf16 or fp32, ``L >= 1``, ``P <= 256``.
        dt: ``(B, L, H)``; A: ``(H,)`` (negative); B, C: ``(B, L, G, N)`` with ``G`` dividing ``H``.
        chunk_size: tokens per chunk, one of 16, 32, 64, 128, 256 (results do not depend on it
            beyond rounding).
        D: optional ``(H,)`` or ``(H, P)`` skip; z: optional ``(B, L, H, P)`` gate; dt_bias: optional ``(H,)``.
        initial_states: optional ``(B, H, P, N)`` state before each row's first sequence.
        seq_idx: optional int32 ``(B, L)``: the state restarts wherever it changes (packed rows).
        cu_seqlens: optional int32 ``[N+1]`` for a packed ``(1, T, H, P)`` input (instead of ``seq_idx``).
        dt_softplus: softplus on ``dt + dt_bias``; dt_limit: clamp of the result (off by default).
        return_final_states: also return the fp32 state after each row's last token ``(B, H, P, N)``.

    Returns:
        ``out`` ``(B, L, H, P)`` in ``x``'s dtype (and ``final_states``); differentiable in every
        floating input, ``initial_states`` included.
    """
    seq_idx = packed_seq_idx(seq_idx, cu_seqlens, x, 1, "(1, T, H, P)")
    _validate(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx)
    lo, hi = (float(v) for v in dt_limit)
    clamp = (lo, hi) != _NO_LIMIT
    if not use_triton(x):
        out = ssd_chunked_ref(
            x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, (lo, hi), True
        )
        return (out[0].to(x.dtype), out[1]) if return_final_states else out[0].to(x.dtype)
    out, final, _y_pre = _ssd_fwd(
        x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, chunk_size, dt_softplus, clamp, lo, hi
    )
    return (out, final) if return_final_states else out


def ssd_step(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
) -> Tensor:
    """Decode one token from the SSD state (updated in place), as Mamba-2's ``step``.

    Args:
        state: ``(B, H, P, N)`` (fp32 recommended); x: ``(B, H, P)``; dt: ``(B, H)``; A: ``(H,)``;
        B, C: ``(B, G, N)``; D: optional ``(H,)`` or ``(H, P)``; z: optional ``(B, H, P)``;
        dt_bias: optional ``(H,)``.

    Returns:
        ``y`` ``(B, H, P)`` in ``x``'s dtype. Not differentiable.
    """
    if state.dim() != 4:
        raise ValueError(f"state must be (B, H, P, N), got shape {tuple(state.shape)}")
    batch, H, P, N = state.shape
    if dt.shape != (batch, H) or A.shape != (H,):
        raise ValueError(
            f"dt must be (B, H) = {(batch, H)} and A (H,) = ({H},), got {tuple(dt.shape)} and {tuple(A.shape)}"
        )
    dt3 = dt[..., None].expand(batch, H, P)
    A3 = A[:, None, None].expand(H, P, N)
    D2 = None if D is None else (D[:, None].expand(H, P) if D.dim() == 1 else D)
    bias2 = None if dt_bias is None else dt_bias[:, None].expand(H, P)
    return selective_state_update(state, x, dt3, A3, B, C, D2, z, bias2, dt_softplus)
