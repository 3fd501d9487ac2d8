"""An alternative selective-scan backward: channels on lanes, the sequence split into segments.

The default backward (``BWD_IMPL`` in ``kernels/selective_scan/triton.py``): behind the segmented forward,
fwd+bwd takes 2.86 ms at these knobs against 5.36 ms with the chunked backward (H100, B=2, D=1536, N=16,
L=8K, bf16; ``scripts/kernel_sweep.py scan``, ``benchmarks/results/sweep_scan-h100.jsonl``). It is the backward
twin of ``segmented.py``: tiles are ``(token, state, channel)`` with channels on lanes, so the scans over
tokens run inside each thread, and the sequence is cut into ``S`` segments of whole backward chunks (the
forward saved the state entering every chunk of ``ch`` tokens) to give enough programs.

Notation (``triton.py``'s docstring): ``g_t = d loss / d h_t = a_{t+1} g_{t+1} + dy_t C_t`` with ``dy`` after
the ``z`` gate; ``g`` past the last token is ``dlast``. Per segment ``s`` (tokens ``[t0_s, t1_s)``) let
``c_s = g_{t1_s}`` be the carry entering from the right (``c_{S-1} = dlast``). Inside the segment,
``g_t = g_t^0 + (prod_{j=t}^{t1_s - 1} a_{j+1}) c_s`` where ``g^0`` is the segment's own reverse scan from a
zero carry. Hence:

1. ``_seg_bwd_kernel`` with ``GRAD=False`` (only when ``S > 1``; all segments at once, no ``h`` needed):
   per segment ``GOUT[s] = g^0_{t0_s}`` and ``PROD[s] = prod a_{j+1}`` over its tokens (``a_{t1_s}`` of the
   next segment's first token included, so a reset on a border makes it 0), stored at index ``S - 1 - s``;
2. ``segmented.combine_segments`` run on that reversed order gives every carry,
   ``c_{s-1} = GOUT[s] + PROD[s] c_s`` from ``c_{S-1} = dlast``: the forward's combine, read backwards;
3. ``_seg_bwd_kernel`` with ``GRAD=True``: every segment walks its chunks in reverse from ``c_s``. A chunk is
   processed in sub-steps of ``BWD_CHUNK`` tokens (a whole ``ch``-token chunk of ``(ch, N)`` values per
   thread does not fit in registers), last sub-step first; each needs the state entering it:

   * ``BWD_STASH=True``: one forward walk over the chunk from its saved state writes the state entering
     every sub-step into a small per-program scratch buffer (``ch / BWD_CHUNK`` tiles of
     ``(N, BLOCK_D)`` fp32, rewritten for every chunk, so it stays in L2), which the reverse walk reads;
   * ``BWD_STASH=False``: no scratch; each sub-step recomputes the forward from the chunk's saved state
     (``(SUB + 1) / 2`` times the forward work, ``SUB = ch / BWD_CHUNK``).

   With ``h`` and ``g`` of a sub-step in registers, the gradients are those of the chunked kernel:
   ``dB``/``dC`` per token are summed over the program's channels (lanes) and added with atomics into
   the same fp32 ``(B, G, N, L)`` buffers; per-channel ``dA``, ``dB``, ``dC``, ``dD``, ``ddelta_bias`` are
   per-(batch row, segment) partials summed with torch. Segment 0 writes ``dinitial_state = a_0 g_0``.

``a_{t+1}`` of a sub-step's last token belongs to the next sub-step: like the chunked kernel, ``delta`` is
reloaded one token ahead (an extra ``exp`` per element instead of a shift across the sub-step's tiles).

What the compiler makes of it (sm_90 ``ptxas -v``, specialized as at B=2, D=1536, N=16, L=8K, 1 warp):

* ``g``'s reverse scan is a token-by-token loop, not ``tl.associative_scan(reverse=True)``, which shuffles
  between lanes even along an in-thread axis;
* the state-like tiles (carries, ``A``, partials, ``dinitial_state``, per-channel ``B``/``C``) are read and
  written ``(N, D)``-major, channels contiguous, and transposed with torch at the ends: from ``(D, N)``-major
  memory Triton lays them out with lanes on ``N``, and the loop-carried ``g`` then crossed lanes through
  shared memory at every token (``STATES``, the forward's ``(D, N)``, is read once per chunk);
* the only shuffles left are the sums over channels of per-token ``dB``/``dC``. Pass 2 at BWD_CHUNK=4:
  BLOCK_D=16: 255 registers, 36 spilled bytes, 300 ``shfl``; BLOCK_D=32: 604 bytes, 640; BWD_CHUNK=8,
  BLOCK_D=32: 2688 bytes; BWD_CHUNK=2, BLOCK_D=32: 28 bytes. Pass 1 (CH=4, BLOCK_D=32): 205 registers, no
  spill, no shuffle.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longseq.kernels._common import interpreting
from longseq.kernels.selective_scan.segmented import (
    _load_bc,
    _load_tc,
    combine_segments,
    lane_tile,
    num_segments,
)
from longseq.kernels.selective_scan.triton import LOG2E, _reset_mask, _softplus, fit_group, linear_scan

LN2: tl.constexpr = tl.constexpr(0.6931471805599453)  # A = A2 * LN2 with A2 = A * LOG2E, the exp2 argument

#: Tokens per sub-step (scanned inside one thread), channels per program (lanes), warps per program.
BWD_CHUNK, BWD_BLOCK_D, BWD_WARPS = 4, 16, 1
#: Sub-step entering states from a per-program scratch buffer (True) or recomputed (False).
BWD_STASH = True
#: The number of segments follows ``segmented.PROGRAMS_PER_HINT`` (shared with the forward).


@triton.jit
def _decay(DELTA, SEQ, off_d, off_s, d, t, bound, d_mask, A2, bias, s_dd, s_dl, s_sl,
           SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr):  # fmt: skip
    """``(dt, raw, a)`` of tokens ``t`` (those ``>= bound`` get ``dt = 0``, ``a = 1``): ``dt`` the delta after
    bias and softplus ``(CH, BD)``, ``raw`` its argument, ``a = exp(dt A)`` ``(CH, BN, BD)`` (0 on a reset)."""
    mask = (t < bound)[:, None] & d_mask[None, :]
    raw = _load_tc(DELTA, off_d, d, t, s_dd, s_dl, mask) + bias[None, :]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    dt = tl.where(mask, dt, 0.0)
    a = tl.exp2(dt[:, None, :] * A2[None, :, :])
    if HAS_SEQ:
        a = tl.where(_reset_mask(SEQ, off_s, t, bound, s_sl)[:, None, None], 0.0, a)
    return dt, raw, a


@triton.jit
def _states(h, t, fw, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr, VAR_B: tl.constexpr, CH: tl.constexpr,
            INTERPRET: tl.constexpr):  # fmt: skip
    """The forward over the sub-step of tokens ``t`` from the state ``h`` entering it: ``(hs, dt, raw, u, Bv)``
    with ``hs`` the state after every token ``(CH, BN, BD)`` (tokens ``>= t_end``: a = 1, b = 0). ``fw`` holds
    the program's forward inputs (see ``_seg_bwd_kernel``)."""
    (U, DELTA, Bp, SEQ, off_u, off_d, off_B, off_s, grp, d, n, t_end, d_mask, nd_mask, n_mask, A2, bias,
     s_ud, s_ul, s_dd, s_dl, sB0, sB1, sB2, sB3, s_sl) = fw  # fmt: skip
    t_mask = t < t_end
    u = _load_tc(U, off_u, d, t, s_ud, s_ul, t_mask[:, None] & d_mask[None, :])
    dt, raw, a = _decay(DELTA, SEQ, off_d, off_s, d, t, t_end, d_mask, A2, bias, s_dd, s_dl, s_sl, SOFTPLUS, HAS_SEQ)
    Bv = _load_bc(Bp, off_B, grp, d, n, t, nd_mask, t_mask[:, None] & n_mask[None, :], sB0, sB1, sB2, sB3, VAR_B)
    ac, hs = linear_scan(a, (dt * u)[:, None, :] * Bv, CH, False, INTERPRET, 0)
    return hs + ac * h[None, :, :], dt, raw, u, Bv


@triton.jit
def _walk(h, c0, n_steps, tt, fw, scratch, scr_off, STORE: tl.constexpr, SOFTPLUS: tl.constexpr,
          HAS_SEQ: tl.constexpr, VAR_B: tl.constexpr, CH: tl.constexpr, TILE: tl.constexpr,
          INTERPRET: tl.constexpr):  # fmt: skip
    """The state after ``n_steps`` sub-steps from ``h`` entering token ``c0``; ``STORE``: the state entering
    each sub-step ``j`` goes to ``scratch`` tile ``j`` (``TILE`` elements at ``scr_off``)."""
    for j in range(n_steps):
        if STORE:
            tl.store(scratch + j * TILE + scr_off, h)
        hs, _dt, _raw, _u, _B = _states(h, c0 + j * CH + tt, fw, SOFTPLUS, HAS_SEQ, VAR_B, CH, INTERPRET)
        h = _row(hs, tt, CH - 1)
    return h


@triton.jit
def _row(x, tt, i):
    """Row ``i`` of a ``(CH, BN, BD)`` tile (a sum over the in-thread token axis)."""
    return tl.sum(tl.where((tt == i)[:, None, None], x, 0.0), axis=0)


@triton.jit
def _reverse_scan(a, b, carry, tt, CH: tl.constexpr, INTERPRET: tl.constexpr):
    """``g_t = a_t g_{t+1} + b_t`` along the token axis 0 of ``(CH, BN, BD)`` tiles, from ``g_CH = carry``; returns
    ``(g, prod a)``. Compiled: one token at a time inside each thread (Triton's ``tl.associative_scan(reverse=True)``
    shuffles between lanes even along an in-thread axis: 1280 ``shfl`` per step at CH=4, BN=16, BD=32; this:
    none; the row selects fold away). Interpreted: the log-step ``linear_scan`` (fewer interpreted ops)."""
    if INTERPRET:
        ar, g = linear_scan(a, b, CH, True, INTERPRET, 0)
        return g + ar * carry[None, :, :], _row(ar, tt, 0)
    g = tl.zeros(b.shape, tl.float32)
    prod = tl.full(carry.shape, 1.0, tl.float32)
    for j in tl.static_range(CH):
        a_i = _row(a, tt, CH - 1 - j)
        carry = a_i * carry + _row(b, tt, CH - 1 - j)
        prod *= a_i
        g = tl.where((tt == CH - 1 - j)[:, None, None], carry[None, :, :], g)
    return g, prod


@triton.jit
def _seg_bwd_kernel(
    U, DELTA, A, Bp, Cp, Dp, Z, DBIAS, SEQ, STATES, DOUT, CARRY, SCRATCH,
    DU, DDELTA, DZ, DA_PART, DB, DC, DD_PART, DDB_PART, DH0, GOUT, PROD,
    DIM, L, N, g_size, G, seg_len, n_segs, n_chunks,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl,
    sB0, sB1, sB2, sB3, sC0, sC1, sC2, sC3, s_sb, s_sl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_CARRY: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
    GRAD: tl.constexpr, STASH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CH: tl.constexpr,
    STATE_CHUNK: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    # A is (N, D), per-channel B/C (N, D) (strides given), STATES (B, n_chunks, D, N). Per segment (index
    # S - 1 - s in the (B, S, N, D) CARRY / GOUT / PROD, as the combine runs backwards): GRAD=False writes
    # GOUT, PROD; GRAD=True reads CARRY (if any) and writes DU, DDELTA, DZ (contiguous (B, D, L)), DB/DC
    # (fp32 (B, G, N, L) atomics or (B, S, N, D) partials), DA_PART (B, S, N, D), DD_PART / DDB_PART
    # (B, S, D), and DH0 (B, N, D) from segment 0. SCRATCH: SUB (BN, BD) tiles per program (STASH).
    pid_b, pid_s, d, n, tt, d_mask, n_mask, nd_mask, grp = lane_tile(DIM, N, g_size, BLOCK_D, BLOCK_N, CH)
    # (BN, BD) tiles of (N, D)-major buffers (channels contiguous: Triton then keeps lanes on channels; tiles
    # loaded from (D, N)-major ones come with lanes on N, and a carry loop-carried in that layout crosses
    # lanes at every token of the reverse scan). A is (N, D) here too; STATES, the forward's, is (D, N).
    dn_off = n[:, None] * DIM + d[None, :]
    A2 = tl.load(A + dn_off, mask=nd_mask, other=0.0).to(tl.float32) * LOG2E
    if HAS_DBIAS:
        bias = tl.load(DBIAS + d, mask=d_mask, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_D:
        Dv = tl.load(Dp + d, mask=d_mask, other=0.0).to(tl.float32)
    rev_off = (pid_b * n_segs + n_segs - 1 - pid_s) * N * DIM + dn_off  # segment s at S - 1 - s
    part_off = (pid_b * n_segs + pid_s) * N * DIM + dn_off  # per-(row, segment) partials
    if HAS_CARRY:
        g_carry = tl.load(CARRY + rev_off, mask=nd_mask, other=0.0)  # g at the next segment's first token
    else:
        g_carry = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    prod = tl.full((BLOCK_N, BLOCK_D), 1.0, tl.float32)
    dA_acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dB_acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dC_acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    ddb_acc = tl.zeros((BLOCK_D,), tl.float32)
    off_s = pid_b * s_sb
    t_start = pid_s * seg_len
    t_end = tl.minimum(t_start + seg_len, L)
    next_bound = tl.minimum(t_end + 1, L)  # a_{t+1} is read up to the next segment's first token
    n_seg_chunks = tl.cdiv(t_end - t_start, STATE_CHUNK)
    SUB: tl.constexpr = STATE_CHUNK // CH  # sub-steps per chunk
    TILE: tl.constexpr = BLOCK_N * BLOCK_D
    scratch = SCRATCH + ((pid_b * tl.num_programs(1) + tl.program_id(1)) * n_segs + pid_s) * SUB * TILE
    scr_off = n[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]  # (BN, BD) in one scratch tile
    fw = (U, DELTA, Bp, SEQ, pid_b * s_ub, pid_b * s_db, pid_b * sB0, off_s, grp, d, n, t_end, d_mask, nd_mask,
          n_mask, A2, bias, s_ud, s_ul, s_dd, s_dl, sB0, sB1, sB2, sB3, s_sl)  # what the forward reads  # fmt: skip
    for ci in range(n_seg_chunks):
        c0 = t_start + (n_seg_chunks - 1 - ci) * STATE_CHUNK  # chunks last to first
        n_sub = tl.cdiv(tl.minimum(STATE_CHUNK, t_end - c0), CH)  # the last chunk may end early
        if GRAD:
            chunk_off = (pid_b * n_chunks + c0 // STATE_CHUNK) * DIM * N + d[None, :] * N + n[:, None]
            h_chunk = tl.load(STATES + chunk_off, mask=nd_mask, other=0.0)  # saved by the forward
            if STASH:  # the state entering every sub-step, in order (barriers: other threads read the tiles)
                tl.debug_barrier()  # the previous chunk's reads are done
                _walk(h_chunk, c0, n_sub, tt, fw, scratch, scr_off, True, SOFTPLUS, HAS_SEQ, VAR_B, CH, TILE, INTERPRET)
                tl.debug_barrier()
        for kk in range(n_sub):
            k = n_sub - 1 - kk  # sub-steps last to first
            t = c0 + k * CH + tt
            t_mask = t < t_end
            mask = t_mask[:, None] & d_mask[None, :]  # (CH, BD)
            tn_mask = t_mask[:, None] & n_mask[None, :]  # (CH, BN)
            # g first (it needs no h): d loss / d h_t, (CH, BN, BD); a_prod: the decays over the sub-step.
            Cv = _load_bc(Cp, pid_b * sC0, grp, d, n, t, nd_mask, tn_mask, sC0, sC1, sC2, sC3, VAR_C)
            dout = _load_tc(DOUT, pid_b * s_gb, d, t, s_gd, s_gl, mask)
            dy = dout  # d loss / d y: d loss / d out through the z gate
            if HAS_Z:
                zv = _load_tc(Z, pid_b * s_zb, d, t, s_zd, s_zl, mask)
                sz = tl.sigmoid(zv)
                dy = dout * zv * sz
            # a_{t+1}, the decay after token t: up to the next segment's first token, 1 past L or the segment.
            _dt1, _raw1, a_next = _decay(
                DELTA, SEQ, pid_b * s_db, off_s, d, t + 1, next_bound, d_mask, A2, bias, s_dd, s_dl, s_sl,
                SOFTPLUS, HAS_SEQ,
            )  # fmt: skip
            g, a_prod = _reverse_scan(a_next, dy[:, None, :] * Cv, g_carry, tt, CH, INTERPRET)
            g_carry = _row(g, tt, 0)
            if GRAD:  # then h: the state entering the sub-step, and after each of its tokens
                if STASH:
                    h = tl.load(scratch + k * TILE + scr_off)
                else:  # recomputed from the chunk's saved state
                    h = _walk(
                        h_chunk, c0, k, tt, fw, scratch, scr_off, False, SOFTPLUS, HAS_SEQ, VAR_B, CH, TILE, INTERPRET
                    )
                hs, dt, raw, u, Bv = _states(h, t, fw, SOFTPLUS, HAS_SEQ, VAR_B, CH, INTERPRET)
                out_off = pid_b * DIM * L + d[None, :] * L + t[:, None]  # contiguous (B, D, L) gradients
                if HAS_Z:
                    y = tl.sum(hs * Cv, axis=1)  # (CH, BD)
                    if HAS_D:
                        y += Dv[None, :] * u
                    dz = dout * y * sz * (1.0 + zv * (1.0 - sz))
                    tl.store(DZ + out_off, dz.to(DZ.dtype.element_ty), mask=mask)
                # g_t a_t h_{t-1} = g_t (h_t - dt_t u_t B_t), from tiles live anyway (no dt u B tile kept)
                gBv = g * Bv
                gh = g * hs - gBv * (dt * u)[:, None, :]
                dA_acc += tl.sum(gh * dt[:, None, :], axis=0)
                gB = tl.sum(gBv, axis=1)  # (CH, BD)
                ddt = tl.sum(gh * A2[None, :, :], axis=1) * LN2 + gB * u  # A = A2 ln 2
                du = gB * dt
                if HAS_D:
                    du += Dv[None, :] * dy
                    dD_acc += tl.sum(dy * u, axis=0)
                if SOFTPLUS:
                    ddt = ddt * tl.sigmoid(raw)
                ddt = tl.where(mask, ddt, 0.0)
                ddb_acc += tl.sum(ddt, axis=0)
                tl.store(DU + out_off, du.to(DU.dtype.element_ty), mask=mask)
                tl.store(DDELTA + out_off, ddt.to(DDELTA.dtype.element_ty), mask=mask)
                dBt = g * (dt * u)[:, None, :]  # (CH, BN, BD)
                dCt = dy[:, None, :] * hs
                tok_off = ((pid_b * G + grp) * N + n[None, :]) * L + t[:, None]  # (CH, BN) in (B, G, N, L)
                if VAR_B:
                    tl.atomic_add(DB + tok_off, tl.sum(dBt, axis=2), mask=tn_mask, sem="relaxed")
                else:
                    dB_acc += tl.sum(dBt, axis=0)
                if VAR_C:
                    tl.atomic_add(DC + tok_off, tl.sum(dCt, axis=2), mask=tn_mask, sem="relaxed")
                else:
                    dC_acc += tl.sum(dCt, axis=0)
            else:
                prod *= a_prod
    if GRAD:
        tl.store(DA_PART + part_off, dA_acc, mask=nd_mask)
        if not VAR_B:
            tl.store(DB + part_off, dB_acc, mask=nd_mask)
        if not VAR_C:
            tl.store(DC + part_off, dC_acc, mask=nd_mask)
        if HAS_D:
            tl.store(DD_PART + (pid_b * n_segs + pid_s) * DIM + d, dD_acc, mask=d_mask)
        if HAS_DBIAS:
            tl.store(DDB_PART + (pid_b * n_segs + pid_s) * DIM + d, ddb_acc, mask=d_mask)
        # d h_{-1} = a_0 g_0 (token 0 never restarts), from segment 0 only.
        _dt0, _raw0, a0 = _decay(
            DELTA, SEQ, pid_b * s_db, off_s, d, tt, tl.minimum(L, 1), d_mask, A2, bias, s_dd, s_dl, s_sl,
            SOFTPLUS, False,
        )  # fmt: skip
        tl.store(DH0 + pid_b * N * DIM + dn_off, _row(a0, tt, 0) * g_carry, mask=nd_mask & (pid_s == 0))
    else:
        tl.store(GOUT + rev_off, g_carry, mask=nd_mask)
        tl.store(PROD + rev_off, prod, mask=nd_mask)


def _block_d(dim: int, g_size: int | None) -> int:
    """Channels per program: ``BWD_BLOCK_D``, halved until it divides the group size of per-token B/C."""
    return fit_group(max(1, min(BWD_BLOCK_D, triton.next_power_of_2(dim))), g_size)


def _bc_arg(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``B``/``C`` and the 4 strides the kernel reads them with: per token ``(B, G, N, L)`` as it is, per channel
    ``(D, N)`` as an ``(N, D)``-major copy (channels contiguous, like the kernel's other ``(N, D)`` tiles)."""
    if t.dim() == 4:
        return t, tuple(t.stride())
    t = t.t().float().contiguous()  # fp32 (D x N values): see ``Ak`` below
    return t, (t.stride(1), t.stride(0), 0, 0)


def selective_scan_bwd_segmented(
    dout: torch.Tensor,
    dlast: torch.Tensor | None,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    states: torch.Tensor,
    softplus: bool,
    state_chunk: int,
    g_size: int | None,
    G: int,
) -> tuple[torch.Tensor | None, ...]:
    """The same contract as :func:`~longseq.kernels.selective_scan.triton.selective_scan_bwd` (which calls
    this when ``BWD_IMPL == "segmented"``, passing its ``ch``, group size and group count):
    ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)``, ``None`` for absent inputs."""
    batch, dim, L = u.shape
    N = A.shape[1]
    bn = triton.next_power_of_2(N)
    ch = min(BWD_CHUNK, state_chunk)
    n_chunks = triton.cdiv(L, state_chunk)
    bd = _block_d(dim, g_size)
    d_blocks = triton.cdiv(dim, bd)
    dev, f32 = u.device, torch.float32
    S = num_segments(L, state_chunk, batch * d_blocks, dev)
    seg_len = max(1, triton.cdiv(n_chunks, S)) * state_chunk  # whole backward chunks per segment
    S = max(1, triton.cdiv(L, seg_len))
    du = torch.empty(batch, dim, L, dtype=u.dtype, device=dev)
    ddelta = torch.empty(batch, dim, L, dtype=delta.dtype, device=dev)
    dz = torch.empty(batch, dim, L, dtype=z.dtype, device=dev) if z is not None else None
    part = torch.zeros if batch * dim == 0 else torch.empty  # no program runs: partials sum to 0
    # State-like buffers are (N, D)-major here (channels contiguous, see the kernel), transposed at the ends.
    dA_part = part(batch, S, N, dim, dtype=f32, device=dev)
    dB = torch.zeros(B.shape, dtype=f32, device=dev) if B.dim() == 4 else part(batch, S, N, dim, dtype=f32, device=dev)
    dC = torch.zeros(C.shape, dtype=f32, device=dev) if C.dim() == 4 else part(batch, S, N, dim, dtype=f32, device=dev)
    dD_part = part(batch, S, dim, dtype=f32, device=dev) if D is not None else None
    ddb_part = part(batch, S, dim, dtype=f32, device=dev) if delta_bias is not None else None
    dh0 = part(batch, N, dim, dtype=f32, device=dev)
    dlast = None if dlast is None else dlast.float().transpose(1, 2).contiguous()  # (B, N, D)
    if batch * dim > 0:
        # A as fp32: from a 16-bit A, Triton 3.6 fails to compile pass 2 for sm_90 ("operand #0 does not
        # dominate this use" in TritonGPURemoveLayoutConversions); the kernel upcasts it anyway.
        (Bk, strides_b), (Ck, strides_c), Ak = _bc_arg(B), _bc_arg(C), A.t().float().contiguous()
        z_strides = z.stride() if z is not None else (0, 0, 0)
        stash = BWD_STASH and state_chunk > ch
        scratch_tiles = batch * d_blocks * S * (state_chunk // ch) if stash else 1  # (BN, BD) tiles
        scratch = torch.empty(scratch_tiles * bn * bd, dtype=f32, device=dev)
        common = dict(
            HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None, SOFTPLUS=softplus,
            HAS_SEQ=seq_idx is not None, VAR_B=B.dim() == 4, VAR_C=C.dim() == 4, STASH=stash,
            BLOCK_D=bd, BLOCK_N=bn, CH=ch, INTERPRET=interpreting(), num_warps=BWD_WARPS,
        )  # fmt: skip

        def launch(grad: bool, carry: torch.Tensor | None, gout: torch.Tensor, prod: torch.Tensor) -> None:
            _seg_bwd_kernel[(batch, d_blocks, S)](
                u, delta, Ak, Bk, Ck, D if D is not None else Ak, z if z is not None else u,
                delta_bias if delta_bias is not None else Ak, seq_idx if seq_idx is not None else u, states, dout,
                carry if carry is not None else dh0, scratch,
                du, ddelta, dz if dz is not None else du, dA_part, dB, dC,
                dD_part if dD_part is not None else dh0, ddb_part if ddb_part is not None else dh0, dh0, gout, prod,
                dim, L, N, g_size or bd, G, seg_len, S, n_chunks,
                *u.stride(), *delta.stride(), *z_strides, *dout.stride(), *strides_b, *strides_c,
                *(seq_idx.stride() if seq_idx is not None else (0, 0)),
                HAS_CARRY=carry is not None, GRAD=grad, STATE_CHUNK=state_chunk, **common,
            )  # fmt: skip

        if S == 1:  # one pass from dlast (a (B, 1, N, D) carry)
            launch(True, dlast, dh0, dh0)
        else:
            gout = torch.empty(batch, S, N, dim, dtype=f32, device=dev)
            prod = torch.empty_like(gout)
            launch(False, None, gout, prod)
            # Segments in reverse: carry[j] enters segment S - 1 - j; the last "state" (g_0) lands in dh0,
            # which segment 0 of the next pass overwrites with a_0 g_0.
            launch(True, combine_segments(gout, prod, dlast, dh0), gout, prod)
    per_channel = lambda t, like: t.sum((0, 1)).t().contiguous().to(like.dtype)  # noqa: E731  (B, S, N, D) partials
    dB = dB.to(B.dtype) if B.dim() == 4 else per_channel(dB, B)
    dC = dC.to(C.dtype) if C.dim() == 4 else per_channel(dC, C)
    dD = None if D is None else dD_part.sum((0, 1)).to(D.dtype)
    ddb = None if delta_bias is None else ddb_part.sum((0, 1)).to(delta_bias.dtype)
    return du, ddelta, per_channel(dA_part, A), dB, dC, dD, dz, ddb, dh0.transpose(1, 2).contiguous()
