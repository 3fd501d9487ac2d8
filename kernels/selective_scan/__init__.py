"""Mamba-1 selective scan: Triton forward/backward (chunked parallel scan, fp32 state), packed
sequences, initial states, a decoding step, ``torch.library`` custom ops and the public functions,
with ``mamba_ssm``'s signatures.

>>> out = selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)
>>> out, last = selective_scan_fn(u, delta, A, B, C, return_last_state=True, initial_state=h0)
>>> out = selective_scan_fn(u_packed, ..., cu_seqlens=cu)    # u_packed (1, D, T): the state restarts per sequence
>>> y_t = selective_state_update(state, x_t, dt_t, A, B_t, C_t, D, z_t, dt_bias, dt_softplus=True)

CUDA tensors (and every tensor under ``TRITON_INTERPRET=1``) run the Triton kernels; other CPU
tensors run the loop reference. Ops: ``longseq::selective_scan_fwd`` / ``_bwd`` (autograd through
``register_autograd``) and ``longseq::selective_state_update`` (mutates the state).
"""

from __future__ import annotations

import torch

from longseq.kernels._common import check_dtype, check_same_device, use_triton
from longseq.kernels.selective_scan import triton as _triton
from longseq.kernels.selective_scan.checks import check_optional, check_seq_idx, packed_seq_idx, seq_idx_from_cu_seqlens
from longseq.kernels.selective_scan.reference import selective_scan_ref, selective_state_update_ref

__all__ = [
    "selective_scan_fn",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_ref",
    "seq_idx_from_cu_seqlens",
]

Tensor = torch.Tensor


@torch.library.custom_op("longseq::selective_scan_fwd", mutates_args=())
def _scan_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    initial_state: Tensor | None,
    seq_idx: Tensor | None,
    softplus: bool,
    save_states: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(out, last_state, chunk_states)``; ``chunk_states`` is empty unless ``save_states``."""
    h0 = None if initial_state is None else initial_state.float().contiguous()
    return _triton.selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, h0, seq_idx, softplus, save_states)


@_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, softplus, save_states):
    batch, dim, L = u.shape
    N = A.shape[1]
    n_chunks = -(-L // _triton.chunk_size(L, N)) if save_states else 0
    return (
        u.new_empty(batch, dim, L),
        u.new_empty(batch, dim, N, dtype=torch.float32),
        u.new_empty(batch, n_chunks, dim, N, dtype=torch.float32),
    )


@torch.library.custom_op("longseq::selective_scan_bwd", mutates_args=())
def _scan_bwd(
    dout: Tensor,
    dlast: Tensor | None,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    seq_idx: Tensor | None,
    states: Tensor,
    softplus: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)``; absent ones are empty."""
    grads = _triton.selective_scan_bwd(dout, dlast, u, delta, A, B, C, D, z, delta_bias, seq_idx, states, softplus)
    return tuple(g if g is not None else u.new_empty(0) for g in grads)


@_scan_bwd.register_fake
def _(dout, dlast, u, delta, A, B, C, D, z, delta_bias, seq_idx, states, softplus):
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else u.new_empty(0)  # noqa: E731
    batch, dim, _L = u.shape
    return (
        like(u), like(delta), like(A), like(B), like(C), like(D), like(z), like(delta_bias),
        u.new_empty(batch, dim, A.shape[1], dtype=torch.float32),
    )  # fmt: skip


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, softplus, save_states = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, seq_idx, output[2])
    ctx.softplus = softplus
    ctx.save_states = save_states
    ctx.has_h0 = initial_state is not None
    ctx.h0_dtype = None if initial_state is None else initial_state.dtype


def _backward(ctx, dout: Tensor, dlast: Tensor | None, _dstates: Tensor | None):
    u, delta, A, B, C, D, z, delta_bias, seq_idx, states = ctx.saved_tensors
    if not ctx.save_states:
        raise RuntimeError("selective_scan backward needs the chunk states: call it with save_states=True")
    du, ddelta, dA, dB, dC, dD, dz, ddb, dh0 = _scan_bwd(
        dout, dlast, u, delta, A, B, C, D, z, delta_bias, seq_idx, states, ctx.softplus
    )
    opt = lambda g, t: g if t is not None else None  # noqa: E731
    dh0 = dh0.to(ctx.h0_dtype) if ctx.has_h0 else None
    return du, ddelta, dA, dB, dC, opt(dD, D), opt(dz, z), opt(ddb, delta_bias), dh0, None, None, None


torch.library.register_autograd("longseq::selective_scan_fwd", _backward, setup_context=_setup_context)


def _check_bc(name: str, t: Tensor, batch: int, dim: int, N: int, L: int) -> None:
    check_dtype(name, t)
    if t.dim() == 2:
        if t.shape != (dim, N):
            raise ValueError(f"{name} per channel must have shape (D, N) = {(dim, N)}, got {tuple(t.shape)}")
        return
    groups = 1 if t.dim() == 3 else t.shape[1]
    expected = (batch, N, L) if t.dim() == 3 else (batch, groups, N, L)
    if t.dim() not in (3, 4) or t.shape != expected:
        raise ValueError(
            f"{name} must be (D, N) = {(dim, N)}, (B, N, L) = {(batch, N, L)} or (B, G, N, L) = "
            f"{(batch, 'G', N, L)}, got {tuple(t.shape)}"
        )
    if groups == 0 or dim % groups:
        raise ValueError(f"{name} has G={groups} groups, which must divide D={dim}")


def _validate(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx) -> None:
    for name, t in (("u", u), ("delta", delta), ("A", A)):
        check_dtype(name, t)
    if u.dim() != 3:
        raise ValueError(f"u must be (B, D, L), got shape {tuple(u.shape)}")
    batch, dim, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be real (D, N) with D={dim}, got shape {tuple(A.shape)} ({A.dtype})")
    N = A.shape[1]
    if not 1 <= N <= _triton.MAX_DSTATE:
        raise ValueError(f"state size N must be in [1, {_triton.MAX_DSTATE}], got {N}")
    _check_bc("B", B, batch, dim, N, L)
    _check_bc("C", C, batch, dim, N, L)
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"B and C must have the same number of groups, got {B.shape[1]} and {C.shape[1]}")
    check_optional("D", D, (dim,))
    check_optional("delta_bias", delta_bias, (dim,))
    check_optional("z", z, tuple(u.shape))
    check_optional("initial_state", initial_state, (batch, dim, N))
    check_seq_idx(seq_idx, batch, L)
    check_same_device(
        u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state, seq_idx=seq_idx
    )


def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    initial_state: Tensor | None = None,
    seq_idx: Tensor | None = None,
    cu_seqlens: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The Mamba-1 selective scan (``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``).

    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``out_t = (C_t . h_t + D u_t) * silu(z_t)``
    per channel, with an fp32 state; see :mod:`longseq.kernels.selective_scan.reference`.

    Args:
        u, delta: ``(B, D, L)`` fp16, bf16 or fp32 (any strides).
        A: real ``(D, N)``, ``N <= 256``; negative entries give a decaying state.
        B, C: per channel ``(D, N)``, or per token ``(B, N, L)`` / ``(B, G, N, L)`` shared by the
            ``D / G`` channels of each group.
        D: optional ``(D,)`` skip; z: optional ``(B, D, L)`` gate ``silu(z)``.
        delta_bias: optional ``(D,)`` added to ``delta``; delta_softplus: apply softplus after it.
        return_last_state: also return the fp32 state after the last token of each row ``(B, D, N)``.
        initial_state: optional ``(B, D, N)`` state before the first token (of each row's first sequence).
        seq_idx: optional int32 ``(B, L)``: the state restarts at 0 wherever it changes (packed rows).
        cu_seqlens: optional int32 ``[N+1]`` for a packed ``(1, D, T)`` input (alternative to ``seq_idx``).

    Returns:
        ``out`` ``(B, D, L)`` in ``u``'s dtype (and ``last_state`` with ``return_last_state``);
        differentiable in every floating input, ``initial_state`` included.
    """
    seq_idx = packed_seq_idx(seq_idx, cu_seqlens, u, 2, "(1, D, T)")
    _validate(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx)
    if not use_triton(u):
        out = selective_scan_ref(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, True, initial_state=initial_state, seq_idx=seq_idx
        )
        return (out[0].to(u.dtype), out[1]) if return_last_state else out[0].to(u.dtype)
    B4 = B.unsqueeze(1) if B.dim() == 3 else B  # (B, G, N, L) or (D, N)
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    inputs = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    out, last, _states = _scan_fwd(u, delta, A, B4, C4, D, z, delta_bias, initial_state, seq_idx, delta_softplus, save)
    return (out, last) if return_last_state else out


def selective_state_update(
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
    """One recurrent decoding step, updating ``state`` in place (``mamba_ssm.ops.triton.selective_state_update``).

    Two layouts:

    * Mamba-1: ``state (B, D, N)``, ``x, dt, z (B, D)``, ``A (D, N)``, ``B, C (B, N)`` or
      ``(B, G, N)``, ``D, dt_bias (D,)``.
    * multi-head (Mamba-2): ``state (B, H, P, N)``, ``x, dt, z (B, H, P)``, ``A (H, P, N)``,
      ``B, C (B, G, N)`` with ``G`` dividing ``H``, ``D, dt_bias (H, P)``. Broadcast views
      (``A[:, None, None].expand(H, P, N)``) are fine.

    Returns:
        ``out`` shaped like ``x``: ``(C . state_new + D x) * silu(z)``. Not differentiable.
    """
    for name, t in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        check_dtype(name, t)
    if state.dim() == 3:  # Mamba-1 layout -> heads = groups, P = D / G
        batch, dim, N = state.shape
        G = 1 if B.dim() == 2 else B.shape[1]
        if dim % G:
            raise ValueError(f"B has G={G} groups, which must divide D={dim}")
        heads, per = G, dim // G
        split = lambda t: None if t is None else t.unflatten(1, (heads, per))  # noqa: E731  (B, D) -> (B, G, P)
        state4, x4, dt4, z4 = state.unflatten(1, (heads, per)), split(x), split(dt), split(z)
        A4 = A.unflatten(0, (heads, per)) if A.dim() == 2 else A
        D4 = None if D is None else D.unflatten(0, (heads, per))
        bias4 = None if dt_bias is None else dt_bias.unflatten(0, (heads, per))
        B3 = B.unsqueeze(1) if B.dim() == 2 else B
        C3 = C.unsqueeze(1) if C.dim() == 2 else C
    elif state.dim() == 4:
        state4, x4, dt4, z4, A4, D4, bias4, B3, C3 = state, x, dt, z, A, D, dt_bias, B, C
    else:
        raise ValueError(f"state must be (B, D, N) or (B, H, P, N), got shape {tuple(state.shape)}")
    batch, heads, per, N = state4.shape
    expect = {
        "x": (x4, (batch, heads, per)), "dt": (dt4, (batch, heads, per)), "z": (z4, (batch, heads, per)),
        "A": (A4, (heads, per, N)), "D": (D4, (heads, per)), "dt_bias": (bias4, (heads, per)),
    }  # fmt: skip
    for name, (t, shape) in expect.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(
                f"{name} does not match state {tuple(state.shape)}: expected {shape} (after layout), got {tuple(t.shape)}"
            )
    for name, t in (("B", B3), ("C", C3)):
        if t.dim() != 3 or t.shape[0] != batch or t.shape[2] != N or heads % t.shape[1]:
            raise ValueError(
                f"{name} must be (B, N) or (B, G, N) with G dividing the heads {heads}, got {tuple(t.shape)}"
            )
    check_same_device(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    if not use_triton(state):
        out, new_state = selective_state_update_ref(state4, x4, dt4, A4, B3, C3, D4, z4, bias4, dt_softplus)
        state4.copy_(new_state)
        return out.to(x.dtype).reshape(x.shape)
    out = _state_update(state4, x4, dt4, A4, B3, C3, D4, z4, bias4, dt_softplus)
    return out.reshape(x.shape)


@torch.library.custom_op("longseq::selective_state_update", mutates_args=("state",))
def _state_update(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dt_bias: Tensor | None,
    softplus: bool,
) -> Tensor:
    """``out`` ``(B, H, P)``; updates ``state`` ``(B, H, P, N)`` in place."""
    return _triton.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, softplus)


@_state_update.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, softplus):
    return x.new_empty(state.shape[:3])
