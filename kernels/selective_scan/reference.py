"""Mamba-1 selective scan reference: a loop over time, the spec the Triton kernels are tested against.

Per batch row ``b``, channel ``d`` and state index ``n`` (fp32 state ``h``)::

    delta_t = softplus(delta[t] + delta_bias)           (each step optional)
    h_t     = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t
    y_t     = sum_n C_t[n] * h_t[n] + D[d] * u_t
    out_t   = y_t * silu(z_t)                            (optional gate)

``B``/``C`` are per channel ``(D, N)`` or per token ``(B, G, N, L)`` shared by the ``D / G``
channels of each group. ``h_{-1}`` is ``initial_state`` (else 0). With ``seq_idx`` ``(B, L)``, the
state restarts from 0 at every token whose ``seq_idx`` differs from the previous token's, so packed
sequences never see each other; the initial state belongs to the first sequence of each row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def expand_groups(BC: torch.Tensor, D: int) -> torch.Tensor:
    """``B``/``C`` as ``(B, D, N, L)`` per channel (from ``(B, N, L)`` or ``(B, G, N, L)``), or
    ``(D, N)`` unchanged."""
    if BC.dim() == 2:
        return BC
    if BC.dim() == 3:
        BC = BC.unsqueeze(1)  # (B, 1, N, L)
    return BC.repeat_interleave(D // BC.shape[1], dim=1)  # (B, D, N, L)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    upcast: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan, one time step at a time.

    Args:
        u, delta: ``(B, D, L)``.
        A: ``(D, N)`` (real; negative for a decaying state).
        B, C: ``(D, N)``, ``(B, N, L)`` or ``(B, G, N, L)`` with ``G`` dividing ``D``.
        D: optional ``(D,)`` skip; z: optional ``(B, D, L)`` gate; delta_bias: optional ``(D,)``.
        delta_softplus: apply softplus to ``delta (+ delta_bias)``.
        return_last_state: also return the state after the last token ``(B, D, N)``.
        initial_state: optional ``(B, D, N)`` state before the first token.
        seq_idx: optional int ``(B, L)``; the state restarts where it changes.
        upcast: compute in fp32 and return fp32; ``False`` runs the same math in ``u.dtype``.

    Returns:
        ``out`` ``(B, D, L)`` and, with ``return_last_state``, ``last_state`` ``(B, D, N)``.
    """
    dtype = torch.float32 if upcast else u.dtype

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(dtype)

    u, delta, A, D, z, delta_bias = map(cast, (u, delta, A, D, z, delta_bias))
    Bx, Cx = cast(expand_groups(B, u.shape[1])), cast(expand_groups(C, u.shape[1]))
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, L = u.shape
    h = u.new_zeros(batch, dim, A.shape[1]) if initial_state is None else cast(initial_state).clone()  # (B, D, N)
    ys = []
    for t in range(L):
        if seq_idx is not None and t > 0:
            keep = (seq_idx[:, t] == seq_idx[:, t - 1]).to(dtype)  # (B,)
            h = h * keep[:, None, None]
        Bt = Bx if Bx.dim() == 2 else Bx[..., t]  # (D, N) or (B, D, N)
        Ct = Cx if Cx.dim() == 2 else Cx[..., t]
        dt = delta[:, :, t, None]  # (B, D, 1)
        h = torch.exp(dt * A) * h + dt * Bt * u[:, :, t, None]
        ys.append((h * Ct).sum(-1))  # (B, D)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)  # (B, D, L)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return (y, h) if return_last_state else y


def selective_state_update_ref(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step in fp32; returns ``(out, new_state)`` without mutating ``state``.

    Layouts as :func:`longseq.kernels.selective_scan.selective_state_update`: either Mamba-1
    ``state (B, D, N)``, ``x, dt, z (B, D)``, ``A (D, N)``, ``B, C (B, N)`` or ``(B, G, N)``,
    ``D, dt_bias (D,)``; or multi-head ``state (B, H, P, N)``, ``x, dt, z (B, H, P)``,
    ``A (H, P, N)``, ``B, C (B, G, N)``, ``D, dt_bias (H, P)``.
    """
    heads = state.dim() == 4
    f = lambda t: None if t is None else t.float()  # noqa: E731
    state, x, dt, A, B, C, D, z, dt_bias = map(f, (state, x, dt, A, B, C, D, z, dt_bias))
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    if B.dim() == 2:
        B, C = B[:, None], C[:, None]  # (B, 1, N)
    if heads:
        rep = state.shape[1] // B.shape[1]
        Bh, Ch = B.repeat_interleave(rep, 1)[:, :, None], C.repeat_interleave(rep, 1)[:, :, None]  # (B, H, 1, N)
    else:
        rep = state.shape[1] // B.shape[1]
        Bh, Ch = B.repeat_interleave(rep, 1), C.repeat_interleave(rep, 1)  # (B, D, N)
    new_state = torch.exp(dt[..., None] * A) * state + (dt * x)[..., None] * Bh
    y = (new_state * Ch).sum(-1)
    if D is not None:
        y = y + D * x
    if z is not None:
        y = y * F.silu(z)
    return y, new_state
