"""Mamba-2 SSD Triton kernels and their launchers (the chunked algorithm of
:func:`longseq.kernels.ssd.reference.ssd_chunked_ref`).

Forward, per chunk of ``Q`` tokens (``a = cumsum(dt * A)`` inside the chunk):

1. ``_dt_kernel``: ``dt`` (bias, softplus, clamp) and ``a``, fp32 ``(B, H, n_chunks * Q)``.
2. ``_chunk_outer_kernel`` (mode 0): each chunk's local end state
   ``S_loc = x^T @ (B * exp(a_last - a) * dt)``, one ``tl.dot`` per ``(P, N)`` tile.
3. ``_state_passing_kernel``: ``S_in[c+1] = exp(a_last) S_in[c] + S_loc[c]``, sequential over chunks.
4. ``_chunk_scan_fwd_kernel``: ``y = exp(a_t) C_t S_in + ((C B^T) * decay * dt) @ x + D x``, gate.

Every intra-chunk product runs on tensor cores (``tl.dot``) in the input dtype with fp32
accumulation; fp32 inputs use exact fp32 dots (``input_precision="ieee"``) so the fp32 path matches
the reference to rounding. ``seq_idx`` enters as masks: a token mixes only with tokens of its own
sequence, and the state carried into a chunk applies only to tokens of the sequence that was
running at the end of the previous chunk.

Backward (the forward's states are recomputed, not saved):

* ``_chunk_outer_kernel`` (mode 1): ``dS_loc = dy^T @ (C * exp(a))``, the chunk's gradient of ``S_in``;
* ``_state_passing_kernel`` (reverse): ``dS_out`` of every chunk and the gradient of each ``a_last``;
* ``_bwd_dx_kernel`` (columns ``s`` of the chunk): ``dx``, ``dB``, the direct part of ``ddt`` and the
  ``-d/da_s`` terms; ``_bwd_dc_kernel`` (rows ``t``): ``dC`` and the ``+d/da_t`` terms. Both loop over
  the heads of a group so ``dB``/``dC`` (shared by the group) are summed in registers.
* ``d a`` becomes ``ddt``/``dA`` through a reverse cumsum inside each chunk (small ``(B, H, L)``
  tensors, done in PyTorch by the caller).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longseq.kernels._common import interpreting
from longseq.kernels.selective_scan.triton import _softplus

#: Supported chunk sizes (tokens per chunk).
CHUNK_SIZES = (16, 32, 64, 128, 256)
#: Largest head dimension P and state size N the kernels hold whole.
MAX_HEADDIM = 256
MAX_DSTATE = 256
#: Warps of the two intra-chunk backward kernels; ``None``: 8 for state tiles of 4K elements and more,
#: else 2. On Hopper with Triton 3.6 (H200), small tiles miscompiled with more warps: P=32, N=16 gave
#: wrong dC/dt gradients from run to run and an illegal memory access in fp16 with 8 warps, and P=64,
#: N=32 an illegal memory access with 4 or 8; 2 warps were correct on every small shape tried
#: (``scripts/ssd_hopper_check.py``), and 8 on the P=64, N=128 grid. The same class of bug as
#: flash-linear-attention's Hopper restrictions on num_warps.
BWD_WARPS: int | None = None


#: Triton 3.6's interpreter multiplies the raw bits of bf16/fp16 ``tl.dot`` operands (wrong results),
#: so under the interpreter the operands are rounded to the input dtype and multiplied in fp32 (what
#: tensor cores compute: exact products, fp32 accumulation).
_INTERPRET: tl.constexpr = tl.constexpr(interpreting())


@triton.jit
def _dot(a, b, X):
    """``a @ b`` with fp32 accumulation: tensor cores in ``X``'s element type, exact fp32 for fp32."""
    if X.dtype.element_ty == tl.float32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif _INTERPRET:
        ty = X.dtype.element_ty
        return tl.dot(a.to(ty).to(tl.float32), b.to(ty).to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a.to(X.dtype.element_ty), b.to(X.dtype.element_ty))


@triton.jit
def _seq_at(SEQ, b, i, s_sb, s_sl):
    return tl.load(SEQ + b * s_sb + i * s_sl)


@triton.jit
def _tile(P, rows, cols, s_r, s_c, r_mask, c_mask):
    """The masked ``(rows, cols)`` tile ``P[rows * s_r + cols * s_c]`` (0 outside the masks)."""
    return tl.load(P + rows[:, None] * s_r + cols[None, :] * s_c, mask=r_mask[:, None] & c_mask[None, :], other=0.0)


@triton.jit
def _decay(r, c, a_r, a_c, seq_r, SEQ, seq_off, s_sl, c_mask, HAS_SEQ: tl.constexpr, ROWS_LATER: tl.constexpr):
    """Intra-chunk decay ``exp(a_later - a_earlier)`` between row tokens ``r`` and column tokens ``c``
    (0 unless the later token does not precede the earlier one and both are of one sequence).
    ``ROWS_LATER``: the rows are the later (output) tokens ``t``; else the columns are."""
    if ROWS_LATER:
        keep = r[:, None] >= c[None, :]
        diff = a_r[:, None] - a_c[None, :]
    else:
        keep = c[None, :] >= r[:, None]
        diff = a_c[None, :] - a_r[:, None]
    keep = keep & c_mask[None, :]
    if HAS_SEQ:
        keep = keep & (seq_r[:, None] == tl.load(SEQ + seq_off + c * s_sl, mask=c_mask, other=-2)[None, :])
    return tl.where(keep, tl.exp(tl.minimum(diff, 0.0)), 0.0)


@triton.jit
def _dt_kernel(
    DT, DBIAS, A, DT_OUT, ACS,
    L, H, LP, s_tb, s_tl, s_th, lo, hi,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CLAMP: tl.constexpr, Q: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    h = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    t = (c * Q + tl.arange(0, Q)).to(tl.int64)
    h_mask = h < H
    m = (t < L)[:, None] & h_mask[None, :]
    raw = tl.load(DT + b * s_tb + t[:, None] * s_tl + h[None, :] * s_th, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw += tl.load(DBIAS + h, mask=h_mask, other=0.0).to(tl.float32)[None, :]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    if CLAMP:
        dt = tl.minimum(tl.maximum(dt, lo), hi)
    dt = tl.where(m, dt, 0.0)  # (Q, BH); padding past L adds nothing to the cumsum
    Av = tl.load(A + h, mask=h_mask, other=0.0).to(tl.float32)
    acs = tl.cumsum(dt * Av[None, :], axis=0)
    off = (b * H + h[None, :]) * LP + t[:, None]
    tl.store(DT_OUT + off, dt, mask=h_mask[None, :])
    tl.store(ACS + off, acs, mask=h_mask[None, :])


@triton.jit
def _chunk_outer_kernel(
    U, V, DT_P, ACS, SEQ, OUT,
    L, H, P, N, LP, n_chunks, heads_per_group,
    s_ub, s_ul, s_uh, s_up, s_vb, s_vl, s_vg, s_vn, s_sb, s_sl,
    MODE: tl.constexpr, HAS_SEQ: tl.constexpr, Q: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # MODE 0: OUT[c] = sum_t exp(a_last - a_t) dt_t [seq_t == seq_last] U_t (x) V_t  (local end state)
    # MODE 1: OUT[c] = sum_t exp(a_t) [seq_t == seq_prev] U_t (x) V_t               (d loss / d S_in)
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = bh % H
    g = h // heads_per_group
    c = tl.program_id(1)
    n_nb = tl.cdiv(N, BLOCK_N)
    p = (tl.program_id(2) // n_nb) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = (tl.program_id(2) % n_nb) * BLOCK_N + tl.arange(0, BLOCK_N)
    p_mask, n_mask = p < P, n < N
    start = c * Q
    row = (b * H + h) * LP
    if MODE == 0:
        a_ref = tl.load(ACS + row + start + Q - 1)
    if HAS_SEQ:
        if MODE == 0:
            seq_ref = _seq_at(SEQ, b, tl.minimum(start + Q, L) - 1, s_sb, s_sl)
        else:
            seq_ref = _seq_at(SEQ, b, tl.maximum(start - 1, 0), s_sb, s_sl)
    acc = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
    for k in range(0, Q, BLOCK_K):
        t = (start + k + tl.arange(0, BLOCK_K)).to(tl.int64)
        t_mask = t < L
        a_t = tl.load(ACS + row + t)
        if MODE == 0:
            w = tl.exp(tl.minimum(a_ref - a_t, 0.0)) * tl.load(DT_P + row + t)
        else:
            w = tl.exp(a_t)
        w = tl.where(t_mask, w, 0.0)
        if HAS_SEQ:
            w = tl.where(tl.load(SEQ + b * s_sb + t * s_sl, mask=t_mask, other=-1) == seq_ref, w, 0.0)
        uT = _tile(U + b * s_ub + h * s_uh, p, t, s_up, s_ul, p_mask, t_mask)  # (BP, BK)
        v = _tile(V + b * s_vb + g * s_vg, t, n, s_vl, s_vn, t_mask, n_mask)  # (BK, BN)
        acc += _dot(uT, v.to(tl.float32) * w[:, None], U)
    off = (((b * n_chunks + c) * H + h) * P + p[:, None]) * N + n[None, :]
    tl.store(OUT + off, acc, mask=p_mask[:, None] & n_mask[None, :])


@triton.jit
def _state_passing_kernel(
    S_LOC, S_IN, S_OUT, ACS, SEQ, INIT, FINAL, DDA_PART,
    L, H, PN, LP, n_chunks, s_sb, s_sl,
    REVERSE: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEQ: tl.constexpr, Q: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # Forward: S_OUT[c] = S (state entering chunk c); S = scale_c S + S_LOC[c]; FINAL = S.
    # Reverse: S_LOC holds dS_loc, S_IN the forward's entering states; S_OUT[c] = dS (gradient of the
    #   state leaving chunk c, may alias S_LOC), DDA_PART gets scale_c <dS, S_IN[c]>, FINAL = d initial.
    # scale_c = exp(a_last_c) [seq at the chunk's end == seq entering it].
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = bh % H
    e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    e_mask = e < PN
    row = (b * H + h) * LP
    if HAS_INIT:
        S = tl.load(INIT + (b * H + h) * PN + e, mask=e_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BLOCK,), tl.float32)
    for i in range(n_chunks):
        if REVERSE:
            c = n_chunks - 1 - i
        else:
            c = i
        base = ((b * n_chunks + c) * H + h) * PN
        scale = tl.exp(tl.load(ACS + row + c * Q + Q - 1))
        if HAS_SEQ:
            seq_end = tl.load(SEQ + b * s_sb + (tl.minimum(c * Q + Q, L) - 1) * s_sl)
            seq_in = tl.load(SEQ + b * s_sb + tl.maximum(c * Q - 1, 0) * s_sl)
            scale = tl.where(seq_end == seq_in, scale, 0.0)
        local = tl.load(S_LOC + base + e, mask=e_mask, other=0.0)
        tl.store(S_OUT + base + e, S, mask=e_mask)
        if REVERSE:
            s_in = tl.load(S_IN + base + e, mask=e_mask, other=0.0)
            tl.store(
                DDA_PART + ((b * H + h) * n_chunks + c) * tl.num_programs(1) + tl.program_id(1),
                scale * tl.sum(S * s_in),
            )
        S = scale * S + local
    tl.store(FINAL + (b * H + h) * PN + e, S, mask=e_mask)


@triton.jit
def _chunk_scan_fwd_kernel(
    X, Bp, Cp, DT_P, ACS, SEQ, S_IN, Dp, Z, OUT, YPRE,
    L, H, P, N, LP, n_chunks, heads_per_group,
    s_xb, s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn, s_sb, s_sl,
    s_zb, s_zl, s_zh, s_zp, s_dh, s_dp,
    HAS_SEQ: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, Q: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = bh % H
    g = h // heads_per_group
    c = tl.program_id(1) // (Q // BLOCK_T)
    tb = tl.program_id(1) % (Q // BLOCK_T)
    t = (c * Q + tb * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    t_mask, p_mask, n_mask = t < L, p < P, n < N
    row = (b * H + h) * LP
    a_t = tl.load(ACS + row + t)
    C_t = _tile(Cp + b * s_cb + g * s_cg, t, n, s_cl, s_cn, t_mask, n_mask)  # (BT, BN)
    # Contribution of the state entering the chunk.
    S_T = _tile(S_IN + ((b * n_chunks + c) * H + h) * P * N, n, p, 1, N, n_mask, p_mask)  # (BN, BP)
    scale = tl.where(t_mask, tl.exp(a_t), 0.0)
    seq_t = t
    if HAS_SEQ:
        seq_t = tl.load(SEQ + b * s_sb + t * s_sl, mask=t_mask, other=-1)
        scale = tl.where(seq_t == _seq_at(SEQ, b, tl.maximum(c * Q - 1, 0), s_sb, s_sl), scale, 0.0)
    acc = _dot(C_t, S_T, X) * scale[:, None]  # (BT, BP)
    # Tokens of this chunk up to the block's diagonal.
    for sb in range(0, tb + 1):
        s = (c * Q + sb * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        s_mask = s < L
        B_T = _tile(Bp + b * s_bb + g * s_bg, n, s, s_bn, s_bl, n_mask, s_mask)  # (BN, BS)
        x_s = _tile(X + b * s_xb + h * s_xh, s, p, s_xl, s_xp, s_mask, p_mask)  # (BS, BP)
        dt_s = tl.load(DT_P + row + s)
        lm = _decay(t, s, a_t, tl.load(ACS + row + s), seq_t, SEQ, b * s_sb, s_sl, s_mask, HAS_SEQ, True)
        acc += _dot(_dot(C_t, B_T, X) * lm * dt_s[None, :], x_s, X)
    mask = t_mask[:, None] & p_mask[None, :]
    if HAS_D:
        x_t = tl.load(X + b * s_xb + t[:, None] * s_xl + h * s_xh + p[None, :] * s_xp, mask=mask, other=0.0)
        acc += tl.load(Dp + h * s_dh + p * s_dp, mask=p_mask, other=0.0).to(tl.float32)[None, :] * x_t.to(tl.float32)
    out_off = ((b * L + t[:, None]) * H + h) * P + p[None, :]
    if HAS_Z:
        tl.store(YPRE + out_off, acc.to(YPRE.dtype.element_ty), mask=mask)
        zv = tl.load(Z + b * s_zb + t[:, None] * s_zl + h * s_zh + p[None, :] * s_zp, mask=mask, other=0.0).to(
            tl.float32
        )
        acc = acc * zv * tl.sigmoid(zv)
    tl.store(OUT + out_off, acc.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _gate_bwd_kernel(DOUT, Z, YPRE, DY, DZ, numel, BLOCK: tl.constexpr):
    """``dy = dout * silu(z)``, ``dz = dout * y * silu'(z)`` on flat contiguous tensors."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < numel
    g = tl.load(DOUT + i, mask=m, other=0.0).to(tl.float32)
    zv = tl.load(Z + i, mask=m, other=0.0).to(tl.float32)
    y = tl.load(YPRE + i, mask=m, other=0.0).to(tl.float32)
    sz = tl.sigmoid(zv)
    tl.store(DY + i, (g * zv * sz).to(DY.dtype.element_ty), mask=m)
    tl.store(DZ + i, (g * y * sz * (1.0 + zv * (1.0 - sz))).to(DZ.dtype.element_ty), mask=m)


@triton.jit
def _bwd_program(n_splits, G, Q: tl.constexpr, BLOCK: tl.constexpr):
    """``(head split, group, batch row, chunk, block in the chunk)`` of a backward program
    (grid ``(B * G * n_splits, n_chunks * Q / BLOCK)``)."""
    pid0 = tl.program_id(0)
    blocks = Q // BLOCK
    return (
        pid0 % n_splits,
        (pid0 // n_splits) % G,
        (pid0 // (n_splits * G)).to(tl.int64),
        tl.program_id(1) // blocks,
        tl.program_id(1) % blocks,
    )


@triton.jit
def _bwd_dx_kernel(
    X, Bp, Cp, DT_P, ACS, SEQ, DY, DS_OUT, Dp,
    DX, DB_PART, DDT_DIR, DA_COL, QV, DD_PART,
    L, H, P, N, LP, n_chunks, heads_per_group, heads_per_split, n_splits, G,
    s_xb, s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn, s_sb, s_sl,
    s_gb, s_gl, s_gh, s_gp, s_dh, s_dp,
    HAS_SEQ: tl.constexpr, HAS_D: tl.constexpr, Q: tl.constexpr, BLOCK: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # Columns s of one chunk block, for the heads [h0, h0 + heads_per_split) of group g.
    split, g, b, c, sb = _bwd_program(n_splits, G, Q, BLOCK)
    n_blocks = Q // BLOCK
    s = (c * Q + sb * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    s_mask, p_mask, n_mask = s < L, p < P, n < N
    sp_mask = s_mask[:, None] & p_mask[None, :]
    B_s = _tile(Bp + b * s_bb + g * s_bg, s, n, s_bl, s_bn, s_mask, n_mask)  # (BS, BN)
    keep_end = s_mask
    seq_s = s
    if HAS_SEQ:
        seq_s = tl.load(SEQ + b * s_sb + s * s_sl, mask=s_mask, other=-1)
        keep_end = keep_end & (seq_s == _seq_at(SEQ, b, tl.minimum(c * Q + Q, L) - 1, s_sb, s_sl))
    dB_acc = tl.zeros((BLOCK, BLOCK_N), tl.float32)
    for hi in range(heads_per_split):
        h = g * heads_per_group + split * heads_per_split + hi
        row = (b * H + h) * LP
        x_s = _tile(X + b * s_xb + h * s_xh, s, p, s_xl, s_xp, s_mask, p_mask)  # (BS, BP)
        dt_s = tl.load(DT_P + row + s)
        a_s = tl.load(ACS + row + s)
        dx = tl.zeros((BLOCK, BLOCK_P), tl.float32)
        dBh = tl.zeros((BLOCK, BLOCK_N), tl.float32)
        ddt = tl.zeros((BLOCK,), tl.float32)
        for tb in range(sb, n_blocks):
            t = (c * Q + tb * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
            t_mask = t < L
            C_t = _tile(Cp + b * s_cb + g * s_cg, t, n, s_cl, s_cn, t_mask, n_mask)  # (BT, BN)
            dy_t = _tile(DY + b * s_gb + h * s_gh, t, p, s_gl, s_gp, t_mask, p_mask)  # (BT, BP)
            a_t = tl.load(ACS + row + t)
            LT = _decay(s, t, a_s, a_t, seq_s, SEQ, b * s_sb, s_sl, t_mask, HAS_SEQ, False)  # (BS, BT) [s, t]
            cbT = _dot(B_s, tl.trans(C_t), X)
            dyxT = _dot(x_s, tl.trans(dy_t), X)
            MT = LT * cbT
            dx += _dot(MT, dy_t, X)
            dBh += _dot(LT * dyxT, C_t, X)
            ddt += tl.sum(MT * dyxT, axis=1)
        # Through the chunk's local end state: S_loc = sum_s exp(a_last - a_s) dt_s x_s B_s^T.
        dS_T = _tile(DS_OUT + ((b * n_chunks + c) * H + h) * P * N, n, p, 1, N, n_mask, p_mask)  # (BN, BP)
        a_last = tl.load(ACS + row + c * Q + Q - 1)
        decay = tl.where(keep_end, tl.exp(tl.minimum(a_last - a_s, 0.0)), 0.0)
        dSB = _dot(B_s, dS_T, X)  # (BS, BP)
        r = decay * tl.sum(x_s.to(tl.float32) * dSB, axis=1)
        wd = dt_s * decay
        dx = dx * dt_s[:, None] + wd[:, None] * dSB
        dy_s = _tile(DY + b * s_gb + h * s_gh, s, p, s_gl, s_gp, s_mask, p_mask)  # (BS, BP)
        if HAS_D:
            Dv = tl.load(Dp + h * s_dh + p * s_dp, mask=p_mask, other=0.0).to(tl.float32)
            dx += Dv[None, :] * dy_s.to(tl.float32)
            dd = tl.sum(dy_s.to(tl.float32) * x_s.to(tl.float32), axis=0)  # (BP,)
            tl.store(DD_PART + ((b * tl.num_programs(1) + tl.program_id(1)) * H + h) * P + p, dd, mask=p_mask)
        tl.store(DX + ((b * L + s[:, None]) * H + h) * P + p[None, :], dx.to(DX.dtype.element_ty), mask=sp_mask)
        dB_acc += dBh * dt_s[:, None] + wd[:, None] * _dot(x_s, tl.trans(dS_T), X)
        ddt += r
        tl.store(DDT_DIR + row + s, tl.where(s_mask, ddt, 0.0))
        tl.store(DA_COL + row + s, tl.where(s_mask, -dt_s * ddt, 0.0))
        tl.store(QV + row + s, tl.where(s_mask, dt_s * r, 0.0))
    db_off = (
        ((split.to(tl.int64) * (tl.num_programs(0) // (n_splits * G)) + b) * L + s[:, None]) * G * N
        + g * N
        + n[None, :]
    )
    tl.store(DB_PART + db_off, dB_acc, mask=s_mask[:, None] & n_mask[None, :])


@triton.jit
def _bwd_dc_kernel(
    X, Bp, Cp, DT_P, ACS, SEQ, DY, S_IN,
    DC_PART, DA_ROW,
    L, H, P, N, LP, n_chunks, heads_per_group, heads_per_split, n_splits, G,
    s_xb, s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn, s_sb, s_sl,
    s_gb, s_gl, s_gh, s_gp,
    HAS_SEQ: tl.constexpr, Q: tl.constexpr, BLOCK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # Rows t of one chunk block, for the heads [h0, h0 + heads_per_split) of group g.
    split, g, b, c, tb = _bwd_program(n_splits, G, Q, BLOCK)
    t = (c * Q + tb * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    p = tl.arange(0, BLOCK_P)
    n = tl.arange(0, BLOCK_N)
    t_mask, p_mask, n_mask = t < L, p < P, n < N
    C_t = _tile(Cp + b * s_cb + g * s_cg, t, n, s_cl, s_cn, t_mask, n_mask)  # (BT, BN)
    keep_in = t_mask
    seq_t = t
    if HAS_SEQ:
        seq_t = tl.load(SEQ + b * s_sb + t * s_sl, mask=t_mask, other=-1)
        keep_in = keep_in & (seq_t == _seq_at(SEQ, b, tl.maximum(c * Q - 1, 0), s_sb, s_sl))
    dC_acc = tl.zeros((BLOCK, BLOCK_N), tl.float32)
    for hi in range(heads_per_split):
        h = g * heads_per_group + split * heads_per_split + hi
        row = (b * H + h) * LP
        dy_t = _tile(DY + b * s_gb + h * s_gh, t, p, s_gl, s_gp, t_mask, p_mask)  # (BT, BP)
        a_t = tl.load(ACS + row + t)
        S = _tile(S_IN + ((b * n_chunks + c) * H + h) * P * N, p, n, N, 1, p_mask, n_mask)  # (BP, BN)
        scale = tl.where(keep_in, tl.exp(a_t), 0.0)
        dyS = _dot(dy_t, S, X)  # (BT, BN)
        dC = dyS * scale[:, None]
        da = scale * tl.sum(dyS * C_t.to(tl.float32), axis=1)
        for sb in range(0, tb + 1):
            s = (c * Q + sb * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
            s_mask = s < L
            B_s = _tile(Bp + b * s_bb + g * s_bg, s, n, s_bl, s_bn, s_mask, n_mask)  # (BS, BN)
            x_s = _tile(X + b * s_xb + h * s_xh, s, p, s_xl, s_xp, s_mask, p_mask)  # (BS, BP)
            dt_s = tl.load(DT_P + row + s)
            lm = _decay(t, s, a_t, tl.load(ACS + row + s), seq_t, SEQ, b * s_sb, s_sl, s_mask, HAS_SEQ, True)
            lm = lm * dt_s[None, :]
            Gm = lm * _dot(dy_t, tl.trans(x_s), X)  # (BT, BS)
            dC += _dot(Gm, B_s, X)
            da += tl.sum(Gm * _dot(C_t, tl.trans(B_s), X), axis=1)
        tl.store(DA_ROW + row + t, tl.where(t_mask, da, 0.0))
        dC_acc += dC
    dc_off = (
        ((split.to(tl.int64) * (tl.num_programs(0) // (n_splits * G)) + b) * L + t[:, None]) * G * N
        + g * N
        + n[None, :]
    )
    tl.store(DC_PART + dc_off, dC_acc, mask=t_mask[:, None] & n_mask[None, :])


# ---------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------


def _p2(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(n))


def _seq_args(seq_idx: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    return (like, 0, 0) if seq_idx is None else (seq_idx, seq_idx.stride(0), seq_idx.stride(1))


def ssd_states(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    dt_bias: torch.Tensor | None,
    initial_states: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    chunk_size: int,
    softplus: bool,
    dt_limit: tuple[float, float] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1-3 of the forward. Returns fp32 ``dt`` and ``a`` ``(B, H, n_chunks * Q)`` (zero-padded),
    the states entering every chunk ``(B, n_chunks, H, P, N)`` and the final state ``(B, H, P, N)``."""
    batch, L, H, P = x.shape
    N = B.shape[3]
    Q = chunk_size
    nc = triton.cdiv(L, Q)
    LP = nc * Q
    dev = x.device
    dt_p = torch.empty(batch, H, LP, dtype=torch.float32, device=dev)
    acs = torch.empty_like(dt_p)
    block_h = min(_p2(H, 1), max(1, 4096 // Q))
    lo, hi = dt_limit if dt_limit is not None else (0.0, 0.0)
    _dt_kernel[(batch, nc, triton.cdiv(H, block_h))](
        dt, dt_bias if dt_bias is not None else A, A, dt_p, acs,
        L, H, LP, *dt.stride(), float(lo), float(hi),
        HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus, CLAMP=dt_limit is not None, Q=Q, BLOCK_H=block_h,
    )  # fmt: skip
    s_loc = torch.empty(batch, nc, H, P, N, dtype=torch.float32, device=dev)
    seq, s_sb, s_sl = _seq_args(seq_idx, x)
    chunk_outer(0, x, B, dt_p, acs, seq_idx, s_loc, Q)
    s_in = torch.empty_like(s_loc)
    final = torch.empty(batch, H, P, N, dtype=torch.float32, device=dev)
    block = min(_p2(P * N, 1), 1024)
    h0 = None if initial_states is None else initial_states.float().contiguous()
    _state_passing_kernel[(batch * H, triton.cdiv(P * N, block))](
        s_loc, s_loc, s_in, acs, seq, h0 if h0 is not None else final, final, final,
        L, H, P * N, LP, nc, s_sb, s_sl,
        REVERSE=False, HAS_INIT=h0 is not None, HAS_SEQ=seq_idx is not None, Q=Q, BLOCK=block,
    )  # fmt: skip
    return dt_p, acs, s_in, final


def chunk_outer(
    mode: int,
    U: torch.Tensor,
    V: torch.Tensor,
    dt_p: torch.Tensor,
    acs: torch.Tensor,
    seq_idx: torch.Tensor | None,
    out: torch.Tensor,
    Q: int,
) -> None:
    """Per-chunk weighted outer products ``U (B, L, H, P)`` x ``V (B, L, G, N)`` into ``out``
    ``(B, n_chunks, H, P, N)``: mode 0 the local end states, mode 1 the gradient of entering states."""
    batch, L, H, P = U.shape
    G, N = V.shape[2], V.shape[3]
    nc, LP = out.shape[1], dt_p.shape[2]
    bp, bn = min(_p2(P), 64), min(_p2(N), 64)
    seq, s_sb, s_sl = _seq_args(seq_idx, U)
    grid = (batch * H, nc, triton.cdiv(P, bp) * triton.cdiv(N, bn))
    _chunk_outer_kernel[grid](
        U, V, dt_p, acs, seq, out,
        L, H, P, N, LP, nc, H // G, *U.stride(), *V.stride(), s_sb, s_sl,
        MODE=mode, HAS_SEQ=seq_idx is not None, Q=Q, BLOCK_K=min(Q, 64), BLOCK_P=bp, BLOCK_N=bn, num_warps=4,
    )  # fmt: skip


def _d_strides(D: torch.Tensor | None) -> tuple[int, int]:
    """Strides of ``D`` as ``(H, P)`` (a per-head ``(H,)`` D broadcasts over P)."""
    if D is None:
        return 0, 0
    return (D.stride(0), 0) if D.dim() == 1 else (D.stride(0), D.stride(1))


def _large_state(bp: int, bn: int, x: torch.Tensor) -> bool:
    """Whether a ``(bp, bn)`` state tile of ``x``'s element size needs fewer pipeline stages (and, forward, a
    shorter time block) to stay inside the H100's 227 KiB of shared memory: 64 KiB tiles and more (fp32,
    P=128, N=256 asked 241 KiB with the defaults)."""
    return bp * bn * x.element_size() >= 65536


def ssd_fwd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    initial_states: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    chunk_size: int,
    softplus: bool,
    dt_limit: tuple[float, float] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The forward: ``(out (B, L, H, P), final_states fp32 (B, H, P, N), y before the gate or None)``."""
    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    Q = chunk_size
    dt_p, acs, s_in, final = ssd_states(x, dt, A, B, dt_bias, initial_states, seq_idx, Q, softplus, dt_limit)
    out = torch.empty(batch, L, H, P, dtype=x.dtype, device=x.device)
    y_pre = torch.empty_like(out) if z is not None else None
    bp, bn = min(_p2(P), 64), _p2(N)
    big = _large_state(bp, bn, x)
    block_t = min(Q, 32 if big else 64)
    seq, s_sb, s_sl = _seq_args(seq_idx, x)
    z_strides = z.stride() if z is not None else (0, 0, 0, 0)
    grid = (batch * H, s_in.shape[1] * (Q // block_t), triton.cdiv(P, bp))
    _chunk_scan_fwd_kernel[grid](
        x, B, C, dt_p, acs, seq, s_in, D if D is not None else A, z if z is not None else x, out,
        y_pre if y_pre is not None else out,
        L, H, P, N, dt_p.shape[2], s_in.shape[1], H // G,
        *x.stride(), *B.stride(), *C.stride(), s_sb, s_sl, *z_strides, *_d_strides(D),
        HAS_SEQ=seq_idx is not None, HAS_D=D is not None, HAS_Z=z is not None, Q=Q,
        BLOCK_T=block_t, BLOCK_P=bp, BLOCK_N=bn, num_warps=4, num_stages=2 if big else 3,
    )  # fmt: skip
    return out, final, y_pre


def _head_splits(batch: int, G: int, heads_per_group: int, blocks: int, target: int) -> int:
    """Fewest head splits (a divisor of the heads per group) giving at least ``target`` programs."""
    for splits in range(1, heads_per_group + 1):
        if heads_per_group % splits == 0 and batch * G * splits * blocks >= target:
            return splits
    return heads_per_group


def ssd_bwd(
    dout: torch.Tensor,
    dfinal: torch.Tensor | None,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    initial_states: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    y_pre: torch.Tensor | None,
    chunk_size: int,
    softplus: bool,
    dt_limit: tuple[float, float] | None,
) -> tuple[torch.Tensor | None, ...]:
    """The backward (recomputing the forward's states). Returns ``(dx, ddt, dA, dB, dC, dD, dz,
    ddt_bias, dinitial_states)`` in the inputs' dtypes (``dinitial_states`` fp32); ``None`` for
    absent inputs."""
    from longseq.kernels._common import num_programs_hint

    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    Q, dev, f32 = chunk_size, x.device, torch.float32
    dt_p, acs, s_in, _final = ssd_states(x, dt, A, B, dt_bias, initial_states, seq_idx, Q, softplus, dt_limit)
    nc, LP = s_in.shape[1], dt_p.shape[2]
    seq, s_sb, s_sl = _seq_args(seq_idx, x)
    dz = None
    if z is not None:
        dy, dz = torch.empty_like(y_pre), torch.empty(z.shape, dtype=z.dtype, device=dev)
        zc, dc = z.contiguous(), dout.contiguous()
        _gate_bwd_kernel[(triton.cdiv(dy.numel(), 1024),)](dc, zc, y_pre, dy, dz, dy.numel(), BLOCK=1024)
    else:
        dy = dout
    # Gradient of the states: local part per chunk, then passed backwards (in place).
    dS = torch.empty_like(s_in)
    chunk_outer(1, dy, C, dt_p, acs, seq_idx, dS, Q)
    block = min(_p2(P * N, 1), 1024)
    n_pn = triton.cdiv(P * N, block)
    dda = torch.empty(batch, H, nc, n_pn, dtype=f32, device=dev)
    dh0 = torch.empty(batch, H, P, N, dtype=f32, device=dev)
    dfin = None if dfinal is None else dfinal.float().contiguous()
    _state_passing_kernel[(batch * H, n_pn)](
        dS, s_in, dS, acs, seq, dfin if dfin is not None else dh0, dh0, dda,
        L, H, P * N, LP, nc, s_sb, s_sl,
        REVERSE=True, HAS_INIT=dfin is not None, HAS_SEQ=seq_idx is not None, Q=Q, BLOCK=block,
    )  # fmt: skip
    # Intra-chunk gradients.
    bp, bn = _p2(P), _p2(N)
    blk = min(Q, 64 if bp * bn < 8192 else 32)
    stages = 2 if _large_state(bp, bn, x) else 3
    warps = BWD_WARPS or (8 if bp * bn >= 4096 else 2)
    n_blocks = nc * (Q // blk)
    hpg = H // G
    splits = _head_splits(batch, G, hpg, n_blocks, num_programs_hint(dev))
    hps = hpg // splits
    dx = torch.empty(batch, L, H, P, dtype=x.dtype, device=dev)
    db_part = torch.empty(splits, batch, L, G, N, dtype=f32, device=dev)
    dc_part = torch.empty_like(db_part)
    ddt_dir, da_col, qv, da_row = (torch.empty(batch, H, LP, dtype=f32, device=dev) for _ in range(4))
    dd_part = torch.empty(batch, n_blocks, H, P, dtype=f32, device=dev) if D is not None else None
    common = (L, H, P, N, LP, nc, hpg, hps, splits, G, *x.stride(), *B.stride(), *C.stride(), s_sb, s_sl, *dy.stride())
    grid = (batch * G * splits, n_blocks)
    _bwd_dx_kernel[grid](
        x, B, C, dt_p, acs, seq, dy, dS, D if D is not None else A,
        dx, db_part, ddt_dir, da_col, qv, dd_part if dd_part is not None else qv,
        *common, *_d_strides(D),
        HAS_SEQ=seq_idx is not None, HAS_D=D is not None, Q=Q, BLOCK=blk, BLOCK_P=bp, BLOCK_N=bn, num_warps=warps,
        num_stages=stages,
    )  # fmt: skip
    _bwd_dc_kernel[grid](
        x, B, C, dt_p, acs, seq, dy, s_in, dc_part, da_row,
        *common,
        HAS_SEQ=seq_idx is not None, Q=Q, BLOCK=blk, BLOCK_P=bp, BLOCK_N=bn, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    # d a -> ddt, dA: a_t = sum_{r <= t in chunk} dt_r A, and every a_last also feeds the state passing.
    da = (da_row + da_col).view(batch, H, nc, Q)
    da[..., -1] += dda.sum(-1) + qv.view(batch, H, nc, Q).sum(-1)
    rc = da.flip(-1).cumsum(-1).flip(-1)  # (B, H, nc, Q)
    Af = A.float()
    ddt = (ddt_dir.view(batch, H, nc, Q) + Af[None, :, None, None] * rc).flatten(2)[..., :L]  # (B, H, L)
    dA = (dt_p.view(batch, H, nc, Q) * rc).sum((0, 2, 3))
    ddt = ddt.transpose(1, 2)  # (B, L, H)
    raw = dt.float() + (dt_bias.float() if dt_bias is not None else 0.0)
    if dt_limit is not None:
        val = torch.nn.functional.softplus(raw) if softplus else raw
        ddt = ddt * ((val >= dt_limit[0]) & (val <= dt_limit[1]))
    if softplus:
        ddt = ddt * torch.sigmoid(raw)
    dbias = None if dt_bias is None else ddt.sum((0, 1)).to(dt_bias.dtype)
    dD = None
    if D is not None:
        dD = dd_part.sum((0, 1))  # (H, P)
        dD = (dD.sum(-1) if D.dim() == 1 else dD).to(D.dtype)
    dB = db_part.sum(0).to(B.dtype)
    dC = dc_part.sum(0).to(C.dtype)
    return dx, ddt.to(dt.dtype), dA.to(A.dtype), dB, dC, dD, dz, dbias, dh0
