"""Mamba-2 state space duality (SSD) references: the loop over time (the spec) and the chunked
algorithm in plain PyTorch (what the Triton kernels compute, block by block).

Per batch row, head ``h`` (scalar decay ``A[h]``), head channel ``p`` and state index ``n``::

    dt_t = clamp(softplus(dt[t] + dt_bias[h]), *dt_limit)       (bias, softplus, clamp optional)
    S_t  = exp(dt_t * A[h]) * S_{t-1} + dt_t * x_t[p] * B_t[n]   (state S: (P, N) per head, fp32)
    y_t  = sum_n S_t[p, n] * C_t[n] + D[h] * x_t[p]
    out  = y * silu(z)                                           (optional gate)

``B``/``C`` ``(B, L, G, N)`` are shared by the ``H / G`` heads of each group. ``S_{-1}`` is
``initial_states`` (else 0); with ``seq_idx`` the state restarts at 0 wherever the sequence index
changes, and the initial state belongs to each row's first sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_NO_LIMIT = (0.0, float("inf"))


def process_dt(
    dt: torch.Tensor,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    dt_limit: tuple[float, float] = _NO_LIMIT,
) -> torch.Tensor:
    """``clamp(softplus(dt + dt_bias), *dt_limit)`` with each step optional (the clamp only when a
    limit is set)."""
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    if tuple(dt_limit) != _NO_LIMIT:
        dt = dt.clamp(dt_limit[0], dt_limit[1])
    return dt


def _finish(y, x, D, z):
    if D is not None:
        y = y + (D[..., None] if D.dim() == 1 else D) * x
    if z is not None:
        y = y * F.silu(z)
    return y


def ssd_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = _NO_LIMIT,
    return_final_states: bool = False,
    upcast: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The SSD recurrence, one time step at a time.

    Args:
        x: ``(B, L, H, P)``; dt: ``(B, L, H)``; A: ``(H,)``; B, C: ``(B, L, G, N)``.
        D: optional ``(H,)`` or ``(H, P)``; z: optional ``(B, L, H, P)``; dt_bias: optional ``(H,)``.
        initial_states: optional ``(B, H, P, N)``; seq_idx: optional int ``(B, L)``.
        dt_softplus, dt_limit: see the module docstring.
        return_final_states: also return the state after the last token ``(B, H, P, N)``.
        upcast: compute in fp32 and return fp32; ``False`` runs the same math in ``x.dtype``.
    """
    dtype = torch.float32 if upcast else x.dtype
    x, dt, A, B, C, D, z, dt_bias = (None if t is None else t.to(dtype) for t in (x, dt, A, B, C, D, z, dt_bias))
    batch, L, H, P = x.shape
    rep = H // B.shape[2]
    Bh, Ch = B.repeat_interleave(rep, dim=2), C.repeat_interleave(rep, dim=2)  # (B, L, H, N)
    dt = process_dt(dt, dt_bias, dt_softplus, dt_limit)  # (B, L, H)
    S = x.new_zeros(batch, H, P, B.shape[-1]) if initial_states is None else initial_states.to(dtype).clone()
    ys = []
    for t in range(L):
        if seq_idx is not None and t > 0:
            S = S * (seq_idx[:, t] == seq_idx[:, t - 1]).to(dtype)[:, None, None, None]
        decay = torch.exp(dt[:, t] * A)  # (B, H)
        S = decay[..., None, None] * S + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", S, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(batch, 0, H, P)  # (B, L, H, P)
    y = _finish(y, x, D, z)
    return (y, S) if return_final_states else y


def ssd_chunked_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = _NO_LIMIT,
    return_final_states: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The chunked SSD algorithm in fp32 PyTorch (arguments as :func:`ssd_ref`).

    Per chunk of ``Q`` tokens with ``a = cumsum(dt * A)`` inside the chunk:
    1. local end state ``S_loc = sum_s exp(a_last - a_s) dt_s x_s B_s^T`` (same sequence as the last token);
    2. state passing ``S_in[c+1] = exp(a_last) [same sequence] S_in[c] + S_loc[c]``;
    3. output ``y_t = exp(a_t) [seq_t == seq before the chunk] C_t S_in + sum_{s<=t, same seq}
       exp(a_t - a_s) dt_s (C_t . B_s) x_s``.
    """
    x, dt, A, B, C = (t.float() for t in (x, dt, A, B, C))
    batch, L, H, P = x.shape
    Q = chunk_size
    nc = -(-L // Q)
    pad = nc * Q - L
    rep = H // B.shape[2]
    dt = process_dt(dt, None if dt_bias is None else dt_bias.float(), dt_softplus, dt_limit)
    seq = torch.zeros(batch, L, dtype=torch.long, device=x.device) if seq_idx is None else seq_idx.long()

    def chunks(t: torch.Tensor, value: float = 0.0) -> torch.Tensor:  # (B, L, ...) -> (B, nc, Q, ...)
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad), value=value)
        return t.unflatten(1, (nc, Q))

    xc, dtc = chunks(x), chunks(dt)  # (B, nc, Q, H, P), (B, nc, Q, H)
    Bc = chunks(B.repeat_interleave(rep, 2))  # (B, nc, Q, H, N)
    Cc = chunks(C.repeat_interleave(rep, 2))
    seqc = chunks(seq, value=-1)  # (B, nc, Q); padding matches nothing
    last = (torch.arange(nc, device=x.device) * Q + Q - 1).clamp(max=L - 1)
    seq_last = seq[:, last]  # (B, nc)
    seq_prev = torch.cat([seq[:, :1], seq_last[:, :-1]], dim=1)  # sequence of the state entering each chunk
    a = torch.cumsum(dtc * A, dim=2)  # (B, nc, Q, H)
    a_last = a[:, :, -1]  # (B, nc, H)
    same = seqc[:, :, :, None] == seqc[:, :, None, :]  # (B, nc, Q, Q) [t, s]
    causal = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=x.device))
    decay = torch.exp((a[:, :, :, None] - a[:, :, None, :]).clamp(max=0))  # (B, nc, Q_t, Q_s, H)
    Lmat = decay * (same & causal)[..., None]
    # 1. local end states (B, nc, H, P, N)
    w_end = torch.exp(a_last[:, :, None] - a) * (seqc == seq_last[:, :, None])[..., None] * dtc
    S_loc = torch.einsum("bcsh,bcshp,bcshn->bchpn", w_end, xc, Bc)
    # 2. state passing
    S = x.new_zeros(batch, H, P, B.shape[-1]) if initial_states is None else initial_states.float()
    S_in = []
    for c in range(nc):
        S_in.append(S)
        keep = (seq_last[:, c] == seq_prev[:, c]).float()[:, None]  # (B, 1)
        S = (torch.exp(a_last[:, c]) * keep)[..., None, None] * S + S_loc[:, c]
    S_in = torch.stack(S_in, dim=1)  # (B, nc, H, P, N)
    # 3. outputs
    w_in = torch.exp(a) * (seqc == seq_prev[:, :, None])[..., None]  # (B, nc, Q, H)
    y_off = torch.einsum("bcth,bcthn,bchpn->bcthp", w_in, Cc, S_in)
    y_diag = torch.einsum("bctsh,bcthn,bcshn,bcsh,bcshp->bcthp", Lmat, Cc, Bc, dtc, xc)
    y = (y_off + y_diag).flatten(1, 2)[:, :L]  # (B, L, H, P)
    y = _finish(y, x, None if D is None else D.float(), None if z is None else z.float())
    return (y, S) if return_final_states else y
