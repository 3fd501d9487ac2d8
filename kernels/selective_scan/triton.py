"""Mamba-1 selective scan Triton kernels and their launchers.

The launchers :func:`selective_scan_fwd` / :func:`selective_scan_bwd` dispatch on ``FWD_IMPL`` / ``BWD_IMPL``:
the defaults are the segmented kernels (``segmented.py``, ``segmented_bwd.py``: channels on lanes, the
sequence split into segments); this file holds the chunked ones described below, the shared helpers and the
decoding step.

Layout of the chunked kernels' work: one program per ``(batch row, block of BLOCK_D channels)`` walks the sequence
in chunks of ``CHUNK`` tokens. A chunk is a ``(BLOCK_D, N, CHUNK)`` tile: decays
``a = exp(delta * A)`` and inputs ``b = delta * u * B``; the linear recurrence ``h_t = a_t h_{t-1} + b_t``
inside the chunk is one parallel associative scan over the ``CHUNK`` axis, and the fp32 state
``(BLOCK_D, N)`` is carried from chunk to chunk in registers.

Packed sequences: a token whose ``seq_idx`` differs from its predecessor's gets ``a_t = 0``, which
drops the carried state (the recurrence restarts) in the forward and stops the gradient in the
backward, with no other special case.

Backward: the forward saves the state entering every chunk (``(B, n_chunks, D, N)`` fp32, i.e.
``4 N / CHUNK`` bytes per (token, channel)). The backward walks the chunks in reverse: it recomputes
the chunk's states from the saved one (forward scan), then scans ``g_t = dy_t C_t + a_{t+1} g_{t+1}``
(the gradient of the state) backwards, carrying ``g`` between chunks. With ``g``::

    dA     += sum_t g_t * (h_t - b_t) * delta_t        ((h_t - b_t) = a_t h_{t-1})
    ddelta  = sum_n g_t * ((h_t - b_t) * A + B_t u_t)
    du      = delta_t * sum_n g_t B_t + D dy_t
    dB_t    = sum_d g_t delta_t u_t,   dC_t = sum_d dy_t h_t

Per-token ``dB``/``dC`` are reduced over the program's channels, then added into fp32 buffers with
atomics (channels of one group live in several programs); per-channel ``dB``/``dC``, ``dA``, ``dD``
and ``ddelta_bias`` are written as per-row partials and summed afterwards.

Under ``TRITON_INTERPRET=1`` the scans use a log-step (Hillis-Steele) scan built on ``tl.gather``,
because the interpreter runs ``tl.associative_scan`` with a user combine one element at a time in
Python; the compiled path uses ``tl.associative_scan``. Both compute the same recurrence.

Decoding: ``selective_state_update`` is one kernel over ``(batch, head, block of P)`` on the
multi-head layout ``state (B, H, P, N)``; Mamba-1's ``(B, D, N)`` is the case ``H = G``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longseq.kernels._common import interpreting

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)  # a constexpr: jit code may read only constexpr globals
#: Largest state size N the kernels hold in registers.
MAX_DSTATE = 256
#: Tuning knobs of the chunked kernels: elements of one (BLOCK_D, N, CHUNK) tile and warps per program.
#: Smaller tiles give more programs (the only parallelism is batch x channel blocks) and fewer
#: registers; larger ones fewer dB/dC atomics in the backward.
#: Chosen by scripts/kernel_sweep.py on an H200 (B=2, D=1536, N=16, L=8K, bf16): 2 warps and smaller tiles
#: beat (4096, 4) / (4096, 8) by 1.57x forward and 1.97x forward+backward.
FWD_TILE, FWD_WARPS = 2048, 2
BWD_TILE, BWD_WARPS = 1024, 2
#: Forward implementation: ``"segmented"`` (``segmented.py``: channels on lanes, the sequence split into
#: segments) or ``"chunked"`` (this file). Both feed the same backward. The segmented one is the default:
#: 2.8x faster on an H200 (0.46 vs 1.30 ms, B=2, D=1536, N=16, L=8K, bf16; sweep_scan-h200.jsonl).
FWD_IMPL = "segmented"
#: Backward implementation: ``"segmented"`` (``segmented_bwd.py``: channels on lanes, the sequence split into
#: segments), the default, or ``"chunked"`` (this file). With the segmented forward, fwd+bwd takes 2.86 ms
#: against 5.36 ms with the chunked backward (H100, same shape; sweep_scan-h100.jsonl).
BWD_IMPL = "segmented"


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 * (a1 * h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _gather_scan(a, b, CH: tl.constexpr, REVERSE: tl.constexpr, AXIS: tl.constexpr):
    """Hillis-Steele scan of ``h_t = a_t h_{t-1} + b_t`` along ``AXIS`` (0 or 2) of a 3-D tile (interpreter path)."""
    if AXIS == 0:
        idx0 = tl.arange(0, CH)[:, None, None] + tl.zeros(a.shape, tl.int32)
    else:
        idx0 = tl.arange(0, CH)[None, None, :] + tl.zeros(a.shape, tl.int32)
    shift = 1
    for _ in tl.static_range(0, 16):
        if shift < CH:
            if REVERSE:
                idx = tl.minimum(idx0 + shift, CH - 1)
                valid = idx0 + shift < CH
            else:
                idx = tl.maximum(idx0 - shift, 0)
                valid = idx0 >= shift
            a_o = tl.gather(a, idx, AXIS)
            b_o = tl.gather(b, idx, AXIS)
            b = tl.where(valid, a * b_o + b, b)
            a = tl.where(valid, a * a_o, a)
        shift *= 2
    return a, b


@triton.jit
def linear_scan(a, b, CH: tl.constexpr, REVERSE: tl.constexpr, INTERPRET: tl.constexpr, AXIS: tl.constexpr = 2):
    """Inclusive scan of the recurrence ``h_t = a_t h_{t-1} + b_t`` (``h_{-1} = 0``) along ``AXIS`` (2:
    ``(.., .., CH)`` tiles, 0: ``(CH, .., ..)``); returns ``(prod a, h)``. ``REVERSE`` runs
    ``g_t = a_t g_{t+1} + b_t``."""
    if INTERPRET:
        return _gather_scan(a, b, CH, REVERSE, AXIS)
    else:
        return tl.associative_scan((a, b), axis=AXIS, combine_fn=_combine, reverse=REVERSE)


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _load_delta(
    DELTA, DBIAS, off_b, d, t, d_mask, mask, s_dd, s_dl, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr
):  # fmt: skip
    """``(delta, raw)``: ``softplus(delta + bias)`` (0 where masked) and its argument, fp32 ``(BD, CH)``."""
    raw = tl.load(DELTA + off_b + d[:, None] * s_dd + t[None, :] * s_dl, mask=mask, other=0.0).to(tl.float32)
    if HAS_DBIAS:
        raw += tl.load(DBIAS + d, mask=d_mask, other=0.0).to(tl.float32)[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _reset_mask(SEQ, off_s, t, L, s_sl):
    """True where token ``t`` starts a new sequence (``seq_idx[t] != seq_idx[t-1]``, ``t > 0``)."""
    ok = (t > 0) & (t < L)
    cur = tl.load(SEQ + off_s + t * s_sl, mask=ok, other=0)
    prev = tl.load(SEQ + off_s + (t - 1) * s_sl, mask=ok, other=0)
    return ok & (cur != prev)


@triton.jit
def _load_bc(P, off_b, grp, d, n, t, d_mask, n_mask, t_mask, s0, s1, s2, s3, VAR: tl.constexpr):
    """``B`` or ``C`` as a ``(BD, BN, CH)`` tile (per token, group ``grp``) or ``(BD, BN, 1)`` (per channel)."""
    if VAR:
        v = tl.load(
            P + off_b + grp * s1 + n[:, None] * s2 + t[None, :] * s3,
            mask=n_mask[:, None] & t_mask[None, :],
            other=0.0,
        ).to(tl.float32)  # (BN, CH)
        return v[None, :, :]
    else:
        v = tl.load(P + d[:, None] * s0 + n[None, :] * s1, mask=d_mask[:, None] & n_mask[None, :], other=0.0).to(
            tl.float32
        )  # (BD, BN)
        return v[:, :, None]


@triton.jit
def _ss_fwd_kernel(
    U, DELTA, A, Bp, Cp, Dp, Z, DBIAS, H0, SEQ,
    OUT, HLAST, STATES,
    DIM, L, N, g_size, n_chunks,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol,
    s_ad, s_an, sB0, sB1, sB2, sB3, sC0, sC1, sC2, sC3, s_sb, s_sl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_SEQ: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
    SAVE_STATES: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
    INTERPRET: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    n = tl.arange(0, BLOCK_N)
    tt = tl.arange(0, CHUNK).to(tl.int64)
    d_mask, n_mask = d < DIM, n < N
    dn_mask = d_mask[:, None] & n_mask[None, :]
    grp = (pid_d * BLOCK_D) // g_size  # every channel of the block is in this group
    A2 = tl.load(A + d[:, None] * s_ad + n[None, :] * s_an, mask=dn_mask, other=0.0).to(tl.float32) * LOG2E
    if HAS_D:
        Dv = tl.load(Dp + d, mask=d_mask, other=0.0).to(tl.float32)
    state_off = (pid_b * DIM + d[:, None]) * N + n[None, :]  # (BD, BN) in a (B, D, N) tensor
    if HAS_H0:
        h = tl.load(H0 + state_off, mask=dn_mask, other=0.0)
    else:
        h = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    for c in range(n_chunks):
        t = c * CHUNK + tt
        t_mask = t < L
        mask = d_mask[:, None] & t_mask[None, :]
        if SAVE_STATES:
            tl.store(STATES + ((pid_b * n_chunks + c) * DIM + d[:, None]) * N + n[None, :], h, mask=dn_mask)
        u = tl.load(U + pid_b * s_ub + d[:, None] * s_ud + t[None, :] * s_ul, mask=mask, other=0.0).to(tl.float32)
        dt, _raw = _load_delta(DELTA, DBIAS, pid_b * s_db, d, t, d_mask, mask, s_dd, s_dl, HAS_DBIAS, SOFTPLUS)
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])  # (BD, BN, CH)
        if HAS_SEQ:
            a = tl.where(_reset_mask(SEQ, pid_b * s_sb, t, L, s_sl)[None, None, :], 0.0, a)
        Bv = _load_bc(Bp, pid_b * sB0, grp, d, n, t, d_mask, n_mask, t_mask, sB0, sB1, sB2, sB3, VAR_B)
        _ac, hs = linear_scan(a, (dt * u)[:, None, :] * Bv, CHUNK, False, INTERPRET)
        hs += _ac * h[:, :, None]  # (BD, BN, CH): state after every token of the chunk
        Cv = _load_bc(Cp, pid_b * sC0, grp, d, n, t, d_mask, n_mask, t_mask, sC0, sC1, sC2, sC3, VAR_C)
        y = tl.sum(hs * Cv, axis=1)  # (BD, CH)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            zv = tl.load(Z + pid_b * s_zb + d[:, None] * s_zd + t[None, :] * s_zl, mask=mask, other=0.0).to(tl.float32)
            y = y * zv * tl.sigmoid(zv)
        tl.store(OUT + pid_b * s_ob + d[:, None] * s_od + t[None, :] * s_ol, y.to(OUT.dtype.element_ty), mask=mask)
        h = tl.sum(tl.where(tt[None, None, :] == CHUNK - 1, hs, 0.0), axis=2)  # masked tail keeps the state
    tl.store(HLAST + state_off, h, mask=dn_mask)


@triton.jit
def _ss_bwd_kernel(
    U, DELTA, A, Bp, Cp, Dp, Z, DBIAS, SEQ, STATES, DOUT, DHLAST,
    DU, DDELTA, DZ, DA_PART, DB, DC, DD_PART, DDBIAS_PART, DH0,
    DIM, L, N, g_size, n_chunks,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_gb, s_gd, s_gl,
    s_ad, s_an, sB0, sB1, sB2, sB3, sC0, sC1, sC2, sC3, s_sb, s_sl, G,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_DHLAST: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, INTERPRET: tl.constexpr,
):  # fmt: skip
    # Gradient outputs DU, DDELTA, DZ are contiguous (B, D, L); DB/DC are fp32 (B, G, N, L) (per token,
    # accumulated with atomics) or (B, D, N) partials (per channel); DA_PART (B, D, N); DD_PART,
    # DDBIAS_PART (B, D); DH0 (B, D, N).
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    n = tl.arange(0, BLOCK_N)
    tt = tl.arange(0, CHUNK).to(tl.int64)
    d_mask, n_mask = d < DIM, n < N
    dn_mask = d_mask[:, None] & n_mask[None, :]
    grp = (pid_d * BLOCK_D) // g_size
    A_nat = tl.load(A + d[:, None] * s_ad + n[None, :] * s_an, mask=dn_mask, other=0.0).to(tl.float32)
    A2 = A_nat * LOG2E
    if HAS_D:
        Dv = tl.load(Dp + d, mask=d_mask, other=0.0).to(tl.float32)
    state_off = (pid_b * DIM + d[:, None]) * N + n[None, :]
    if HAS_DHLAST:
        g_carry = tl.load(DHLAST + state_off, mask=dn_mask, other=0.0)  # d loss / d h at the last token
    else:
        g_carry = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    ddb_acc = tl.zeros((BLOCK_D,), tl.float32)
    if not VAR_B:
        dB_acc = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    if not VAR_C:
        dC_acc = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    for ci in range(n_chunks):
        c = n_chunks - 1 - ci
        t = c * CHUNK + tt
        t_mask = t < L
        mask = d_mask[:, None] & t_mask[None, :]
        off_u = pid_b * s_ub + d[:, None] * s_ud + t[None, :] * s_ul
        out_off = pid_b * DIM * L + d[:, None] * L + t[None, :]  # contiguous (B, D, L) gradients
        # Recompute the chunk's forward from the saved state entering it.
        h0 = tl.load(STATES + ((pid_b * n_chunks + c) * DIM + d[:, None]) * N + n[None, :], mask=dn_mask, other=0.0)
        u = tl.load(U + off_u, mask=mask, other=0.0).to(tl.float32)
        dt, raw = _load_delta(DELTA, DBIAS, pid_b * s_db, d, t, d_mask, mask, s_dd, s_dl, HAS_DBIAS, SOFTPLUS)
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])  # (BD, BN, CH)
        if HAS_SEQ:
            a = tl.where(_reset_mask(SEQ, pid_b * s_sb, t, L, s_sl)[None, None, :], 0.0, a)
        Bv = _load_bc(Bp, pid_b * sB0, grp, d, n, t, d_mask, n_mask, t_mask, sB0, sB1, sB2, sB3, VAR_B)
        du_b = dt * u
        bterm = du_b[:, None, :] * Bv
        ac, hs = linear_scan(a, bterm, CHUNK, False, INTERPRET)
        hs += ac * h0[:, :, None]
        Cv = _load_bc(Cp, pid_b * sC0, grp, d, n, t, d_mask, n_mask, t_mask, sC0, sC1, sC2, sC3, VAR_C)
        dy = tl.load(DOUT + pid_b * s_gb + d[:, None] * s_gd + t[None, :] * s_gl, mask=mask, other=0.0).to(tl.float32)
        if HAS_Z:
            zv = tl.load(Z + pid_b * s_zb + d[:, None] * s_zd + t[None, :] * s_zl, mask=mask, other=0.0).to(tl.float32)
            y = tl.sum(hs * Cv, axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            sz = tl.sigmoid(zv)
            dz = dy * y * sz * (1.0 + zv * (1.0 - sz))
            tl.store(DZ + out_off, dz.to(DZ.dtype.element_ty), mask=mask)
            dy = dy * zv * sz
        # a_{t+1}, the decay applied after token t (1 past the end, 0 where the next token restarts).
        t1 = t + 1
        m1 = d_mask[:, None] & (t1 < L)[None, :]
        dt1, _raw1 = _load_delta(DELTA, DBIAS, pid_b * s_db, d, t1, d_mask, m1, s_dd, s_dl, HAS_DBIAS, SOFTPLUS)
        a_next = tl.exp2(dt1[:, None, :] * A2[:, :, None])
        if HAS_SEQ:
            a_next = tl.where(_reset_mask(SEQ, pid_b * s_sb, t1, L, s_sl)[None, None, :], 0.0, a_next)
        ar, g = linear_scan(a_next, dy[:, None, :] * Cv, CHUNK, True, INTERPRET)
        g += ar * g_carry[:, :, None]  # (BD, BN, CH): d loss / d h_t
        g_carry = tl.sum(tl.where(tt[None, None, :] == 0, g, 0.0), axis=2)
        gh = g * (hs - bterm)  # g_t * a_t * h_{t-1}
        dA_acc += tl.sum(gh * dt[:, None, :], axis=2)
        gB = tl.sum(g * Bv, axis=1)  # (BD, CH)
        ddt = tl.sum(gh * A_nat[:, :, None], axis=1) + gB * u
        du = gB * dt
        if HAS_D:
            du += Dv[:, None] * dy
            dD_acc += tl.sum(dy * u, axis=1)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask, ddt, 0.0)
        ddb_acc += tl.sum(ddt, axis=1)
        tl.store(DU + out_off, du.to(DU.dtype.element_ty), mask=mask)
        tl.store(DDELTA + out_off, ddt.to(DDELTA.dtype.element_ty), mask=mask)
        dBt = g * du_b[:, None, :]  # (BD, BN, CH)
        dCt = dy[:, None, :] * hs
        tok_off = ((pid_b * G + grp) * N + n[:, None]) * L + t[None, :]  # (BN, CH) in (B, G, N, L)
        tok_mask = n_mask[:, None] & t_mask[None, :]
        if VAR_B:
            tl.atomic_add(DB + tok_off, tl.sum(dBt, axis=0), mask=tok_mask, sem="relaxed")
        else:
            dB_acc += tl.sum(dBt, axis=2)
        if VAR_C:
            tl.atomic_add(DC + tok_off, tl.sum(dCt, axis=0), mask=tok_mask, sem="relaxed")
        else:
            dC_acc += tl.sum(dCt, axis=2)
    tl.store(DA_PART + state_off, dA_acc, mask=dn_mask)
    if not VAR_B:
        tl.store(DB + state_off, dB_acc, mask=dn_mask)
    if not VAR_C:
        tl.store(DC + state_off, dC_acc, mask=dn_mask)
    if HAS_D:
        tl.store(DD_PART + pid_b * DIM + d, dD_acc, mask=d_mask)
    if HAS_DBIAS:
        tl.store(DDBIAS_PART + pid_b * DIM + d, ddb_acc, mask=d_mask)
    # d h_{-1} = a_0 * g_0 (token 0 never restarts).
    t0 = tl.zeros((CHUNK,), tl.int32)
    dt0, _raw0 = _load_delta(
        DELTA, DBIAS, pid_b * s_db, d, t0, d_mask, d_mask[:, None] & ((tt == 0) & (L > 0))[None, :], s_dd, s_dl, HAS_DBIAS, SOFTPLUS
    )  # fmt: skip
    a0 = tl.sum(tl.exp2(dt0[:, None, :] * A2[:, :, None]) * (tt == 0)[None, None, :], axis=2)
    tl.store(DH0 + state_off, a0 * g_carry, mask=dn_mask)


@triton.jit
def _state_update_kernel(
    STATE, X, DT, A, Bp, Cp, Dp, Z, DBIAS, OUT,
    H, P, N, heads_per_group,
    s_sb, s_sh, s_sp, s_sn, s_xb, s_xh, s_xp, s_tb, s_th, s_tp, s_ah, s_ap, s_an,
    s_bb, s_bg, s_bn, s_cb, s_cg, s_cn, s_dh, s_dp, s_zb, s_zh, s_zp, s_bh, s_bp, s_ob, s_oh, s_op,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    p_mask, n_mask = p < P, n < N
    pn_mask = p_mask[:, None] & n_mask[None, :]
    grp = h // heads_per_group
    s_ptr = STATE + b * s_sb + h * s_sh + p[:, None] * s_sp + n[None, :] * s_sn
    state = tl.load(s_ptr, mask=pn_mask, other=0.0).to(tl.float32)  # (BP, BN)
    x = tl.load(X + b * s_xb + h * s_xh + p * s_xp, mask=p_mask, other=0.0).to(tl.float32)
    dt = tl.load(DT + b * s_tb + h * s_th + p * s_tp, mask=p_mask, other=0.0).to(tl.float32)
    if HAS_DBIAS:
        dt += tl.load(DBIAS + h * s_bh + p * s_bp, mask=p_mask, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = _softplus(dt)
    A_ = tl.load(A + h * s_ah + p[:, None] * s_ap + n[None, :] * s_an, mask=pn_mask, other=0.0).to(tl.float32)
    Bv = tl.load(Bp + b * s_bb + grp * s_bg + n * s_bn, mask=n_mask, other=0.0).to(tl.float32)
    Cv = tl.load(Cp + b * s_cb + grp * s_cg + n * s_cn, mask=n_mask, other=0.0).to(tl.float32)
    state = tl.exp(dt[:, None] * A_) * state + (dt * x)[:, None] * Bv[None, :]
    tl.store(s_ptr, state.to(STATE.dtype.element_ty), mask=pn_mask)
    y = tl.sum(state * Cv[None, :], axis=1)
    if HAS_D:
        y += tl.load(Dp + h * s_dh + p * s_dp, mask=p_mask, other=0.0).to(tl.float32) * x
    if HAS_Z:
        zv = tl.load(Z + b * s_zb + h * s_zh + p * s_zp, mask=p_mask, other=0.0).to(tl.float32)
        y = y * zv * tl.sigmoid(zv)
    tl.store(OUT + b * s_ob + h * s_oh + p * s_op, y.to(OUT.dtype.element_ty), mask=p_mask)


# ---------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------


def chunk_size(L: int, N: int) -> int:
    """Tokens per scan chunk: 32 (64 for N <= 8, 16 for N > 32), at most ``L`` rounded up to 2^k."""
    bn = triton.next_power_of_2(N)
    ch = 64 if bn <= 8 else 32 if bn <= 32 else 16
    return min(ch, max(2, triton.next_power_of_2(L)))


def _block_d(D: int, g_size: int | None, elems: int, bn: int, ch: int) -> int:
    """Channels per program: a power of 2 with ``BLOCK_D * BLOCK_N * CHUNK <= elems`` that divides
    ``g_size`` (so a block never straddles two groups of per-token ``B``/``C``)."""
    return fit_group(max(1, min(triton.next_power_of_2(D), elems // (bn * ch))), g_size)


def fit_group(bd: int, g_size: int | None) -> int:
    """``bd`` (a power of 2) halved until it divides ``g_size``, the channels per group of per-token
    ``B``/``C`` (``None``: per-channel ``B``/``C``, any block fits)."""
    if g_size is not None:
        while g_size % bd:
            bd //= 2
    return bd


def _bc_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride()) if t.dim() == 4 else (*t.stride(), 0, 0)


def _group_size(D: int, B: torch.Tensor, C: torch.Tensor) -> tuple[int | None, int]:
    """``(channels per group or None, number of groups)`` of per-token ``B``/``C`` ``(B, G, N, L)``."""
    G = next((t.shape[1] for t in (B, C) if t.dim() == 4), None)
    return (None, 1) if G is None else (D // G, G)


def selective_scan_fwd(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    softplus: bool,
    save_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the forward. ``B``/``C`` are ``(D, N)`` or ``(B, G, N, L)``; ``initial_state`` fp32
    contiguous ``(B, D, N)``. Returns ``out`` ``(B, D, L)``, ``last_state`` fp32 ``(B, D, N)`` and the
    per-chunk entering states fp32 ``(B, n_chunks, D, N)`` (empty unless ``save_states``)."""
    batch, dim, L = u.shape
    N = A.shape[1]
    bn, ch = triton.next_power_of_2(N), chunk_size(L, N)
    n_chunks = triton.cdiv(L, ch)
    g_size, _G = _group_size(dim, B, C)
    if FWD_IMPL == "segmented":
        from longseq.kernels.selective_scan.segmented import selective_scan_fwd_segmented

        return selective_scan_fwd_segmented(
            u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx, softplus, save_states,
            ch, g_size, (_bc_strides(B), _bc_strides(C)),
        )  # fmt: skip
    if FWD_IMPL != "chunked":
        raise ValueError(f"FWD_IMPL must be 'chunked' or 'segmented', got {FWD_IMPL!r}")
    bd = _block_d(dim, g_size, FWD_TILE, bn, ch)
    out = torch.empty(batch, dim, L, dtype=u.dtype, device=u.device)
    last = torch.empty(batch, dim, N, dtype=torch.float32, device=u.device)
    states = torch.empty(batch, n_chunks if save_states else 0, dim, N, dtype=torch.float32, device=u.device)
    if batch * dim == 0:
        return out, last, states
    z_strides = z.stride() if z is not None else (0, 0, 0)
    _ss_fwd_kernel[(batch, triton.cdiv(dim, bd))](
        u, delta, A, B, C, D if D is not None else A, z if z is not None else u,
        delta_bias if delta_bias is not None else A, initial_state if initial_state is not None else last,
        seq_idx if seq_idx is not None else u, out, last, states,
        dim, L, N, g_size or bd, n_chunks,
        *u.stride(), *delta.stride(), *z_strides, *out.stride(), *A.stride(), *_bc_strides(B), *_bc_strides(C),
        *(seq_idx.stride() if seq_idx is not None else (0, 0)),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None, SOFTPLUS=softplus,
        HAS_H0=initial_state is not None, HAS_SEQ=seq_idx is not None, VAR_B=B.dim() == 4, VAR_C=C.dim() == 4,
        SAVE_STATES=save_states, BLOCK_D=bd, BLOCK_N=bn, CHUNK=ch, INTERPRET=interpreting(), num_warps=FWD_WARPS,
    )  # fmt: skip
    return out, last, states


def selective_scan_bwd(
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
) -> tuple[torch.Tensor, ...]:
    """Launch the backward from the forward's saved ``states``. Returns fp32-accumulated gradients
    ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)``, each in its input's dtype
    (``dinitial_state`` fp32); entries for absent inputs are ``None``."""
    batch, dim, L = u.shape
    N = A.shape[1]
    bn, ch = triton.next_power_of_2(N), chunk_size(L, N)
    n_chunks = triton.cdiv(L, ch)
    g_size, G = _group_size(dim, B, C)
    if BWD_IMPL == "segmented":
        from longseq.kernels.selective_scan.segmented_bwd import selective_scan_bwd_segmented

        return selective_scan_bwd_segmented(
            dout, dlast, u, delta, A, B, C, D, z, delta_bias, seq_idx, states, softplus, ch, g_size, G
        )  # fmt: skip
    if BWD_IMPL != "chunked":
        raise ValueError(f"BWD_IMPL must be 'chunked' or 'segmented', got {BWD_IMPL!r}")
    bd = _block_d(dim, g_size, BWD_TILE, bn, ch)
    dev, f32 = u.device, torch.float32
    du = torch.empty(batch, dim, L, dtype=u.dtype, device=dev)
    ddelta = torch.empty(batch, dim, L, dtype=delta.dtype, device=dev)
    dz = torch.empty(batch, dim, L, dtype=z.dtype, device=dev) if z is not None else None
    dA_part = torch.empty(batch, dim, N, dtype=f32, device=dev)
    dB = (
        torch.zeros(B.shape, dtype=f32, device=dev)
        if B.dim() == 4
        else torch.empty(batch, dim, N, dtype=f32, device=dev)
    )
    dC = (
        torch.zeros(C.shape, dtype=f32, device=dev)
        if C.dim() == 4
        else torch.empty(batch, dim, N, dtype=f32, device=dev)
    )
    dD_part = torch.empty(batch, dim, dtype=f32, device=dev) if D is not None else None
    ddb_part = torch.empty(batch, dim, dtype=f32, device=dev) if delta_bias is not None else None
    dh0 = torch.empty(batch, dim, N, dtype=f32, device=dev)
    dlast = None if dlast is None else dlast.float().contiguous()  # autograd may pass an expanded tensor
    if batch * dim > 0:
        z_strides = z.stride() if z is not None else (0, 0, 0)
        _ss_bwd_kernel[(batch, triton.cdiv(dim, bd))](
            u, delta, A, B, C, D if D is not None else A, z if z is not None else u,
            delta_bias if delta_bias is not None else A, seq_idx if seq_idx is not None else u, states, dout,
            dlast if dlast is not None else dh0,
            du, ddelta, dz if dz is not None else du, dA_part, dB, dC,
            dD_part if dD_part is not None else dh0, ddb_part if ddb_part is not None else dh0, dh0,
            dim, L, N, g_size or bd, n_chunks,
            *u.stride(), *delta.stride(), *z_strides, *dout.stride(), *A.stride(), *_bc_strides(B), *_bc_strides(C),
            *(seq_idx.stride() if seq_idx is not None else (0, 0)), G,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None, SOFTPLUS=softplus,
            HAS_SEQ=seq_idx is not None, HAS_DHLAST=dlast is not None, VAR_B=B.dim() == 4, VAR_C=C.dim() == 4,
            BLOCK_D=bd, BLOCK_N=bn, CHUNK=ch, INTERPRET=interpreting(), num_warps=BWD_WARPS,
        )  # fmt: skip
    else:
        for t in (dA_part, dB, dC, dD_part, ddb_part, dh0):
            if t is not None:
                t.zero_()
    dB = dB.to(B.dtype) if B.dim() == 4 else dB.sum(0).to(B.dtype)
    dC = dC.to(C.dtype) if C.dim() == 4 else dC.sum(0).to(C.dtype)
    dD = None if D is None else dD_part.sum(0).to(D.dtype)
    ddb = None if delta_bias is None else ddb_part.sum(0).to(delta_bias.dtype)
    return du, ddelta, dA_part.sum(0).to(A.dtype), dB, dC, dD, dz, ddb, dh0


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    softplus: bool,
) -> torch.Tensor:
    """Launch one decoding step on the multi-head layout (``state (B, H, P, N)``, ``x, dt, z (B, H, P)``,
    ``A (H, P, N)``, ``B, C (B, G, N)``, ``D, dt_bias (H, P)``; any strides, stride 0 included).
    Mutates ``state``; returns ``out`` ``(B, H, P)`` in ``x``'s dtype."""
    batch, H, P, N = state.shape
    G = B.shape[1]
    out = torch.empty(batch, H, P, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    bn = triton.next_power_of_2(N)
    bp = max(1, min(triton.next_power_of_2(P), 4096 // bn))
    zeros2, zeros3 = (0, 0), (0, 0, 0)
    _state_update_kernel[(batch, H, triton.cdiv(P, bp))](
        state, x, dt, A, B, C, D if D is not None else A, z if z is not None else x,
        dt_bias if dt_bias is not None else A, out,
        H, P, N, H // G,
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *B.stride(), *C.stride(),
        *(D.stride() if D is not None else zeros2), *(z.stride() if z is not None else zeros3),
        *(dt_bias.stride() if dt_bias is not None else zeros2), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=dt_bias is not None, SOFTPLUS=softplus,
        BLOCK_P=bp, BLOCK_N=bn, num_warps=4,
    )  # fmt: skip
    return out
