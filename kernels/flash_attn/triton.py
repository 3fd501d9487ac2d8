"""Flash attention Triton kernels (forward and backward) and their launchers.

Layouts follow flash-attn: padded ``(B, L, H, D)`` or packed ``(T, H, D)`` with ``cu_seqlens``
(one kernel serves both: the padded layout is a batch stride, the packed one a start offset).
The log-sum-exp is ``(B, H, Lq)`` (padded) or ``(H, Tq)`` (packed), fp32, natural log.

- forward: grid ``(q blocks, H, B)``, longest tiles first; online softmax in the log2 domain over
  the key tiles :func:`~longseq.kernels.flash_attn.tiles.band` selects (masked edge tiles, unmasked
  inner tiles); writes ``out`` and ``lse``.
- backward: ``delta = rowsum(dO * O) - dlse``; a dK/dV kernel over key blocks (grid
  ``(k blocks, H_kv, B)``, walking the query tiles of the ``G = H // H_kv`` query heads of its group, so
  GQA gradients are summed in registers) recomputing the probabilities from the saved log-sum-exp.
  ``deterministic=True``: a separate dQ kernel over query blocks (no atomics, seven matmuls per tile
  pair); otherwise, as flash-attn by default, the dK/dV kernel adds dQ with fp32 atomics (five).

Head dims that are not a power of two are padded to ``BLOCK_D`` inside the kernels (masked loads),
so no copy is made. The split-KV decode kernels are in ``decode.py``; configurations in ``tuning.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from longseq.kernels._common import interpreting
from longseq.kernels.flash_attn.tiles import (
    LOG2E,
    alibi_slope2,
    attend_tiles,
    band,
    finish_rows,
    load_tile,
    mask_params,
    mma,
    scores,
    seq_bounds,
    seq_ptr,
    store_tile,
    tile_ptrs,
)
from longseq.kernels.flash_attn.tuning import block_d_for, dot_precision, launcher

#: Largest head dim the kernels support.
MAX_HEADDIM = 256
#: The atomic-dQ backward (``deterministic=False``) only up to this key length: beyond it the separate
#: dQ kernel is faster (H200, bf16, D=128, 16K tokens: with atomics fwd+bwd 0.91x at L=1K and 0.89x at L=8K,
#: the first flash_attn-h200.json benchmark, in git history); at L=512 the
#: atomic path is 1.17x faster (H100, benchmarks/results/flash_attn-h100.json, ``longseq_deterministic``).
ATOMIC_MAX_SEQLEN_K = 512
#: Scalar arguments that change from call to call (lengths, windows, small strides): compiled as plain
#: values, not specialised (Triton would otherwise compile a variant for values 1 and multiples of 16).
_SCALARS = [
    "seqlen_q",
    "seqlen_k",
    "G",
    "window_left",
    "window_right",
    "stride_slope_b",
    "stride_lse_b",
    "stride_lse_h",
]

# --------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=_SCALARS)
def _fwd_kernel(
    Q, K, V, O, LSE, CU_Q, CU_K, SLOPES,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_ob, stride_ot, stride_oh, stride_lse_b, stride_lse_h, stride_slope_b,
    seqlen_q, seqlen_k, G, sm_scale, softcap, window_left, window_right,
    D: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    EVEN_D: tl.constexpr = D == BLOCK_D
    # Longest-first order: with causal masks the last query tiles do the most work.
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_start, Lq = seq_bounds(CU_Q, b, seqlen_q, IS_VARLEN)
    k_start, Lk = seq_bounds(CU_K, b, seqlen_k, IS_VARLEN)
    m0 = start_m * BLOCK_M
    if m0 >= Lq:
        return
    kv_h = h // G
    Q = seq_ptr(Q, b, q_start, h, stride_qb, stride_qt, stride_qh)
    O = seq_ptr(O, b, q_start, h, stride_ob, stride_ot, stride_oh)
    K = seq_ptr(K, b, k_start, kv_h, stride_kb, stride_kt, stride_kh)
    V = seq_ptr(V, b, k_start, kv_h, stride_vb, stride_vt, stride_vh)

    rows = tl.arange(0, BLOCK_M)
    offs_m = m0 + rows
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = load_tile(tile_ptrs(Q, m0, rows, offs_d, stride_qt), offs_m, Lq, offs_d, D, True, EVEN_D)

    diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out = mask_params(
        Lq, Lk, window_left, window_right, sm_scale, softcap
    )  # fmt: skip
    slope2 = alibi_slope2(SLOPES + b * stride_slope_b, h, ALIBI)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, full_lo, full_hi, hi = band(m0, BLOCK_M, Lk, BLOCK_N, lo_diag, hi_diag, HAS_LEFT, HAS_RIGHT)
    acc, m_i, l_i = attend_tiles(
        acc, m_i, l_i, q, K, V, stride_kt, stride_vt, lo, full_lo, offs_m, offs_n, offs_d,
        Lq, Lk, diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out, slope2,
        D, EVEN_D, BLOCK_N, DOT_PREC, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI,
    )  # fmt: skip
    acc, m_i, l_i = attend_tiles(
        acc, m_i, l_i, q, K, V, stride_kt, stride_vt, full_lo, full_hi, offs_m, offs_n, offs_d,
        Lq, Lk, diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out, slope2,
        D, EVEN_D, BLOCK_N, DOT_PREC, False, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI,
    )  # fmt: skip
    acc, m_i, l_i = attend_tiles(
        acc, m_i, l_i, q, K, V, stride_kt, stride_vt, full_hi, hi, offs_m, offs_n, offs_d,
        Lq, Lk, diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out, slope2,
        D, EVEN_D, BLOCK_N, DOT_PREC, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI,
    )  # fmt: skip

    out, lse = finish_rows(acc, m_i, l_i)
    store_tile(tile_ptrs(O, m0, rows, offs_d, stride_ot), out.to(O.dtype.element_ty), offs_m, Lq, offs_d, D, EVEN_D)
    lse_ptrs = LSE + b.to(tl.int64) * stride_lse_b + h.to(tl.int64) * stride_lse_h + q_start + offs_m
    tl.store(lse_ptrs, lse, mask=offs_m < Lq)


# --------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["seqlen_q", "stride_lse_b", "stride_lse_h"])
def _bwd_preprocess_kernel(
    O, DO, DLSE, DELTA, CU_Q,
    stride_ob, stride_ot, stride_oh, stride_dob, stride_dot, stride_doh, stride_lse_b, stride_lse_h, seqlen_q,
    D: tl.constexpr, BLOCK_D: tl.constexpr, IS_VARLEN: tl.constexpr, HAS_DLSE: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """``delta = rowsum(dO * O) - dlse`` per (query, head), in the log-sum-exp layout."""
    EVEN_D: tl.constexpr = D == BLOCK_D
    pid_m = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2)
    q_start, Lq = seq_bounds(CU_Q, b, seqlen_q, IS_VARLEN)
    m0 = pid_m * BLOCK_M
    if m0 >= Lq:
        return
    rows = tl.arange(0, BLOCK_M)
    offs_m = m0 + rows
    offs_d = tl.arange(0, BLOCK_D)
    O = seq_ptr(O, b, q_start, h, stride_ob, stride_ot, stride_oh)
    DO = seq_ptr(DO, b, q_start, h, stride_dob, stride_dot, stride_doh)
    o = load_tile(tile_ptrs(O, m0, rows, offs_d, stride_ot), offs_m, Lq, offs_d, D, True, EVEN_D)
    do = load_tile(tile_ptrs(DO, m0, rows, offs_d, stride_dot), offs_m, Lq, offs_d, D, True, EVEN_D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # (BLOCK_M,)
    off = b.to(tl.int64) * stride_lse_b + h * stride_lse_h + q_start + offs_m
    if HAS_DLSE:
        delta -= tl.load(DLSE + off, mask=offs_m < Lq, other=0.0)
    tl.store(DELTA + off, delta, mask=offs_m < Lq)


@triton.jit
def _bwd_dkdv_inner(
    dk, dv, k, v, Q, DO, LSE, DELTA, SLOPES, DQ, h0, G,
    stride_qt, stride_qh, stride_dot, stride_doh, stride_lse_h, stride_dqt, stride_dqh, start, end,
    kj, offs_m, offs_d, seqlen_q, seqlen_k, diag, lo_diag, hi_diag, sm_scale, qk_scale, cap_in, cap_out,
    D: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_M: tl.constexpr, DOT_PREC: tl.constexpr, MASKED: tl.constexpr,
    HAS_LO: tl.constexpr, HAS_HI: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, ATOMIC_DQ: tl.constexpr,
):  # fmt: skip
    """Accumulate ``dk``/``dv`` of one key tile over the query tiles ``[start, end)`` of each query head
    ``h0 .. h0 + G - 1`` (GQA: the group's gradients are summed in registers). One flat loop over
    (head, tile): a nested head loop would cost registers. Transposed math: rows are keys.

    With ``ATOMIC_DQ`` each step also adds its share of ``dq`` to the fp32 buffer ``DQ`` with atomics
    (flash-attn's non-deterministic backward: five matmuls per tile pair instead of seven)."""
    n_tiles = tl.cdiv(end - start, BLOCK_M)
    q_offs = offs_m[:, None] * stride_qt + offs_d[None, :]
    do_offs = offs_m[:, None] * stride_dot + offs_d[None, :]
    dq_offs = offs_m[:, None] * stride_dqt + offs_d[None, :]
    for it in range(0, G * n_tiles):
        g = it // n_tiles
        start_m = tl.multiple_of(start + (it - g * n_tiles) * BLOCK_M, BLOCK_M)
        h = (h0 + g).to(tl.int64)
        qi = start_m + offs_m  # (BLOCK_M,)
        row0 = start_m.to(tl.int64)
        q = load_tile(Q + h * stride_qh + row0 * stride_qt + q_offs, qi, seqlen_q, offs_d, D, MASKED, EVEN_D)
        if MASKED:
            lse = tl.load(LSE + h * stride_lse_h + qi, mask=qi < seqlen_q, other=0.0)
        else:
            lse = tl.load(LSE + h * stride_lse_h + qi)
        # Rows that saw no key have lse = -inf; +inf makes their probabilities exactly 0.
        lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
        slope2 = alibi_slope2(SLOPES, h, ALIBI)
        qkT = mma(k, tl.trans(q), None, DOT_PREC)  # (BLOCK_N, BLOCK_M)
        sT, tT = scores(
            qkT, qi[None, :], kj[:, None], seqlen_q, seqlen_k, diag, lo_diag, hi_diag,
            qk_scale, cap_in, cap_out, slope2, MASKED, HAS_LO, HAS_HI, SOFTCAP, ALIBI,
        )  # fmt: skip
        pT = tl.math.exp2(sT - lse2[None, :])  # (BLOCK_N, BLOCK_M)
        do = load_tile(DO + h * stride_doh + row0 * stride_dot + do_offs, qi, seqlen_q, offs_d, D, MASKED, EVEN_D)
        dv = mma(pT.to(do.dtype), do, dv, DOT_PREC)
        if MASKED:
            delta = tl.load(DELTA + h * stride_lse_h + qi, mask=qi < seqlen_q, other=0.0)
        else:
            delta = tl.load(DELTA + h * stride_lse_h + qi)
        dpT = mma(v, tl.trans(do), None, DOT_PREC)  # (BLOCK_N, BLOCK_M)
        dsT = pT * (dpT - delta[None, :])
        if SOFTCAP:
            dsT = dsT * (1.0 - tT * tT)
        dk = mma(dsT.to(q.dtype), q, dk, DOT_PREC)
        if ATOMIC_DQ:
            dq = mma(tl.trans(dsT).to(k.dtype), k, None, DOT_PREC) * sm_scale  # (BLOCK_M, BLOCK_D)
            dq_ptrs = DQ + h * stride_dqh + row0 * stride_dqt + dq_offs
            if EVEN_D:
                tl.atomic_add(dq_ptrs, dq, mask=qi[:, None] < seqlen_q, sem="relaxed")
            else:
                tl.atomic_add(dq_ptrs, dq, mask=(qi[:, None] < seqlen_q) & (offs_d[None, :] < D), sem="relaxed")
    return dk, dv


@triton.jit(do_not_specialize=_SCALARS)
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DQ, CU_Q, CU_K, SLOPES,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_dob, stride_dot, stride_doh, stride_dkb, stride_dkt, stride_dkh, stride_dvb, stride_dvt, stride_dvh,
    stride_dqb, stride_dqt, stride_dqh, stride_lse_b, stride_lse_h, stride_slope_b,
    seqlen_q, seqlen_k, G, sm_scale, softcap, window_left, window_right,
    D: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
    ATOMIC_DQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    EVEN_D: tl.constexpr = D == BLOCK_D
    pid_n = tl.program_id(0)
    kv_h = tl.program_id(1)
    b = tl.program_id(2)
    q_start, Lq = seq_bounds(CU_Q, b, seqlen_q, IS_VARLEN)
    k_start, Lk = seq_bounds(CU_K, b, seqlen_k, IS_VARLEN)
    n0 = pid_n * BLOCK_N
    if n0 >= Lk:
        return
    K = seq_ptr(K, b, k_start, kv_h, stride_kb, stride_kt, stride_kh)
    V = seq_ptr(V, b, k_start, kv_h, stride_vb, stride_vt, stride_vh)
    DK = seq_ptr(DK, b, k_start, kv_h, stride_dkb, stride_dkt, stride_dkh)
    DV = seq_ptr(DV, b, k_start, kv_h, stride_dvb, stride_dvt, stride_dvh)
    # Query-side pointers stop at the sequence; the loop adds each query head of the group.
    Q = seq_ptr(Q, b, q_start, 0, stride_qb, stride_qt, 0)
    DO = seq_ptr(DO, b, q_start, 0, stride_dob, stride_dot, 0)
    DQ = seq_ptr(DQ, b, q_start, 0, stride_dqb, stride_dqt, 0)
    LSE = seq_ptr(LSE, b, q_start, 0, stride_lse_b, 1, 0)
    DELTA = seq_ptr(DELTA, b, q_start, 0, stride_lse_b, 1, 0)
    SLOPES += b * stride_slope_b

    kj = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_N)
    k = load_tile(tile_ptrs(K, n0, rows, offs_d, stride_kt), kj, Lk, offs_d, D, True, EVEN_D)
    v = load_tile(tile_ptrs(V, n0, rows, offs_d, stride_vt), kj, Lk, offs_d, D, True, EVEN_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out = mask_params(
        Lq, Lk, window_left, window_right, sm_scale, softcap
    )  # fmt: skip
    # Queries i that see key j satisfy -hi_diag <= i - j <= -lo_diag: the transposed band.
    lo, full_lo, full_hi, hi = band(n0, BLOCK_N, Lq, BLOCK_M, -hi_diag, -lo_diag, HAS_RIGHT, HAS_LEFT)
    h0 = kv_h * G
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, Q, DO, LSE, DELTA, SLOPES, DQ, h0, G, stride_qt, stride_qh, stride_dot, stride_doh,
        stride_lse_h, stride_dqt, stride_dqh, lo, full_lo, kj, offs_m, offs_d, Lq, Lk, diag, lo_diag, hi_diag,
        sm_scale, qk_scale, cap_in, cap_out, D, EVEN_D, BLOCK_M, DOT_PREC, True, HAS_LEFT, HAS_RIGHT, SOFTCAP,
        ALIBI, ATOMIC_DQ,
    )  # fmt: skip
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, Q, DO, LSE, DELTA, SLOPES, DQ, h0, G, stride_qt, stride_qh, stride_dot, stride_doh,
        stride_lse_h, stride_dqt, stride_dqh, full_lo, full_hi, kj, offs_m, offs_d, Lq, Lk, diag, lo_diag, hi_diag,
        sm_scale, qk_scale, cap_in, cap_out, D, EVEN_D, BLOCK_M, DOT_PREC, False, HAS_LEFT, HAS_RIGHT, SOFTCAP,
        ALIBI, ATOMIC_DQ,
    )  # fmt: skip
    dk, dv = _bwd_dkdv_inner(
        dk, dv, k, v, Q, DO, LSE, DELTA, SLOPES, DQ, h0, G, stride_qt, stride_qh, stride_dot, stride_doh,
        stride_lse_h, stride_dqt, stride_dqh, full_hi, hi, kj, offs_m, offs_d, Lq, Lk, diag, lo_diag, hi_diag,
        sm_scale, qk_scale, cap_in, cap_out, D, EVEN_D, BLOCK_M, DOT_PREC, True, HAS_LEFT, HAS_RIGHT, SOFTCAP,
        ALIBI, ATOMIC_DQ,
    )  # fmt: skip
    dk = dk * sm_scale
    store_tile(tile_ptrs(DK, n0, rows, offs_d, stride_dkt), dk.to(DK.dtype.element_ty), kj, Lk, offs_d, D, EVEN_D)
    store_tile(tile_ptrs(DV, n0, rows, offs_d, stride_dvt), dv.to(DV.dtype.element_ty), kj, Lk, offs_d, D, EVEN_D)


@triton.jit
def _bwd_dq_inner(
    dq, q, do, lse2, delta, K, V, stride_kt, stride_vt, start, end,
    qi, offs_n, offs_d, seqlen_q, seqlen_k, diag, lo_diag, hi_diag,
    qk_scale, cap_in, cap_out, slope2,
    D: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
    MASKED: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
):  # fmt: skip
    """Accumulate ``dq`` of one query tile over key tiles ``[start, end)``."""
    for start_n in range(start, end, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        kj = start_n + offs_n
        k_ptrs = tile_ptrs(K, start_n, offs_n, offs_d, stride_kt)  # from the scalar start (see attend_tiles)
        v_ptrs = tile_ptrs(V, start_n, offs_n, offs_d, stride_vt)
        k = load_tile(k_ptrs, kj, seqlen_k, offs_d, D, MASKED, EVEN_D)  # (BLOCK_N, BLOCK_D)
        v = load_tile(v_ptrs, kj, seqlen_k, offs_d, D, MASKED, EVEN_D)
        qk = mma(q, tl.trans(k), None, DOT_PREC)  # (BLOCK_M, BLOCK_N)
        s, t = scores(
            qk, qi[:, None], kj[None, :], seqlen_q, seqlen_k, diag, lo_diag, hi_diag,
            qk_scale, cap_in, cap_out, slope2, MASKED, HAS_LO, HAS_HI, SOFTCAP, ALIBI,
        )  # fmt: skip
        p = tl.math.exp2(s - lse2[:, None])
        dp = mma(do, tl.trans(v), None, DOT_PREC)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        if SOFTCAP:
            ds = ds * (1.0 - t * t)
        dq = mma(ds.to(k.dtype), k, dq, DOT_PREC)
    return dq


@triton.jit(do_not_specialize=_SCALARS)
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU_Q, CU_K, SLOPES,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_dob, stride_dot, stride_doh, stride_dqb, stride_dqt, stride_dqh,
    stride_lse_b, stride_lse_h, stride_slope_b,
    seqlen_q, seqlen_k, G, sm_scale, softcap, window_left, window_right,
    D: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    EVEN_D: tl.constexpr = D == BLOCK_D
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    q_start, Lq = seq_bounds(CU_Q, b, seqlen_q, IS_VARLEN)
    k_start, Lk = seq_bounds(CU_K, b, seqlen_k, IS_VARLEN)
    m0 = start_m * BLOCK_M
    if m0 >= Lq:
        return
    kv_h = h // G
    Q = seq_ptr(Q, b, q_start, h, stride_qb, stride_qt, stride_qh)
    DO = seq_ptr(DO, b, q_start, h, stride_dob, stride_dot, stride_doh)
    DQ = seq_ptr(DQ, b, q_start, h, stride_dqb, stride_dqt, stride_dqh)
    K = seq_ptr(K, b, k_start, kv_h, stride_kb, stride_kt, stride_kh)
    V = seq_ptr(V, b, k_start, kv_h, stride_vb, stride_vt, stride_vh)

    qi = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    rows = tl.arange(0, BLOCK_M)
    q = load_tile(tile_ptrs(Q, m0, rows, offs_d, stride_qt), qi, Lq, offs_d, D, True, EVEN_D)
    do = load_tile(tile_ptrs(DO, m0, rows, offs_d, stride_dot), qi, Lq, offs_d, D, True, EVEN_D)
    lse_off = b.to(tl.int64) * stride_lse_b + h.to(tl.int64) * stride_lse_h + q_start + qi
    lse = tl.load(LSE + lse_off, mask=qi < Lq, other=0.0)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    delta = tl.load(DELTA + lse_off, mask=qi < Lq, other=0.0)

    diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out = mask_params(
        Lq, Lk, window_left, window_right, sm_scale, softcap
    )  # fmt: skip
    slope2 = alibi_slope2(SLOPES + b * stride_slope_b, h, ALIBI)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, full_lo, full_hi, hi = band(m0, BLOCK_M, Lk, BLOCK_N, lo_diag, hi_diag, HAS_LEFT, HAS_RIGHT)
    dq = _bwd_dq_inner(
        dq, q, do, lse2, delta, K, V, stride_kt, stride_vt, lo, full_lo, qi, offs_n, offs_d,
        Lq, Lk, diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out, slope2,
        D, EVEN_D, BLOCK_N, DOT_PREC, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI,
    )  # fmt: skip
    dq = _bwd_dq_inner(
        dq, q, do, lse2, delta, K, V, stride_kt, stride_vt, full_lo, full_hi, qi, offs_n, offs_d,
        Lq, Lk, diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out, slope2,
        D, EVEN_D, BLOCK_N, DOT_PREC, False, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI,
    )  # fmt: skip
    dq = _bwd_dq_inner(
        dq, q, do, lse2, delta, K, V, stride_kt, stride_vt, full_hi, hi, qi, offs_n, offs_d,
        Lq, Lk, diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out, slope2,
        D, EVEN_D, BLOCK_N, DOT_PREC, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI,
    )  # fmt: skip
    dq = dq * sm_scale
    store_tile(tile_ptrs(DQ, m0, rows, offs_d, stride_dqt), dq.to(DQ.dtype.element_ty), qi, Lq, offs_d, D, EVEN_D)


# --------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------


def _strides3(t: torch.Tensor, varlen: bool) -> tuple[int, int, int]:
    """``(batch, token, head)`` strides of ``(B, L, H, D)`` or ``(T, H, D)`` (batch stride 0)."""
    return (0, t.stride(0), t.stride(1)) if varlen else (t.stride(0), t.stride(1), t.stride(2))


def _lse_strides(lse: torch.Tensor, varlen: bool) -> tuple[int, int]:
    """``(batch, head)`` strides of the log-sum-exp ``(B, H, Lq)`` or ``(H, Tq)`` (token stride 1)."""
    return (0, lse.stride(0)) if varlen else (lse.stride(0), lse.stride(1))


def check_grid(batch: int) -> None:
    """Sequences (or batch x heads) go on the launch grid's third axis, which CUDA caps at 65535."""
    if batch > 65535:
        raise ValueError(f"at most 65535 sequences per call are supported, got {batch}")


class Problem:
    """Shapes and mask options shared by the forward and backward launchers.

    ``window_left``/``window_right`` are ``-1`` for unbounded; ``causal`` is folded into
    ``window_right = 0`` by the caller.
    """

    def __init__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        cu_seqlens_q: torch.Tensor | None,
        cu_seqlens_k: torch.Tensor | None,
        max_seqlen_q: int,
        max_seqlen_k: int,
        softmax_scale: float,
        window_left: int,
        window_right: int,
        softcap: float,
        alibi_slopes: torch.Tensor | None,
    ) -> None:
        self.varlen = cu_seqlens_q is not None
        self.batch = cu_seqlens_q.numel() - 1 if self.varlen else q.shape[0]
        self.nheads, self.nheads_kv, self.headdim = q.shape[-2], k.shape[-2], q.shape[-1]
        self.seqlen_q = max_seqlen_q if self.varlen else q.shape[1]
        self.seqlen_k = max_seqlen_k if self.varlen else k.shape[1]
        self.cu_q = cu_seqlens_q if self.varlen else q  # dummy pointer when padded
        self.cu_k = cu_seqlens_k if self.varlen else k
        self.scale = softmax_scale
        self.softcap = softcap
        self.left, self.right = window_left, window_right
        self.slopes = alibi_slopes
        self.block_d = block_d_for(self.headdim)
        self.dtype = q.dtype
        self.longest = max(self.seqlen_q, self.seqlen_k)  # picks the autotuning length bucket
        check_grid(self.batch)

    def scalars(self) -> list[Any]:
        """The kernels' common scalar arguments after the strides."""
        slope_b = 0 if self.slopes is None or self.slopes.dim() == 1 else self.slopes.stride(0)
        return [
            slope_b, self.seqlen_q, self.seqlen_k, self.nheads // self.nheads_kv, self.scale,
            self.softcap if self.softcap > 0 else 1.0, max(self.left, 0), max(self.right, 0),
        ]  # fmt: skip

    def flags(self) -> dict[str, Any]:
        """The kernels' common constexprs."""
        return {
            "D": self.headdim,
            "BLOCK_D": self.block_d,
            "DOT_PREC": dot_precision(self.dtype),
            "IS_VARLEN": self.varlen,
            "HAS_LEFT": self.left >= 0,
            "HAS_RIGHT": self.right >= 0,
            "SOFTCAP": self.softcap > 0,
            "ALIBI": self.slopes is not None,
        }

    def lse_shape(self, q: torch.Tensor) -> tuple[int, ...]:
        return (self.nheads, q.shape[0]) if self.varlen else (q.shape[0], self.nheads, q.shape[1])

    def slopes_arg(self, q: torch.Tensor) -> torch.Tensor:
        return self.slopes if self.slopes is not None else q


def flash_attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward: ``(out, lse)``; q ``(B, Lq, H, D)``/``(Tq, H, D)``, k/v with ``H_kv`` heads."""
    out = torch.empty_like(q)
    lse = torch.empty(p.lse_shape(q), device=q.device, dtype=torch.float32)
    if q.numel() == 0 or p.batch == 0:
        return out, lse
    kernel, meta = launcher("fwd", _fwd_kernel, p.block_d, p.dtype, p.longest)

    def grid(m: dict[str, Any]) -> tuple[int, int, int]:
        return (triton.cdiv(p.seqlen_q, m["BLOCK_M"]), p.nheads, p.batch)

    kernel[grid](
        q, k, v, out, lse, p.cu_q, p.cu_k, p.slopes_arg(q),
        *_strides3(q, p.varlen), *_strides3(k, p.varlen), *_strides3(v, p.varlen), *_strides3(out, p.varlen),
        *_lse_strides(lse, p.varlen), *p.scalars(), **p.flags(), **meta,
    )  # fmt: skip
    return out, lse


def flash_attn_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dlse: torch.Tensor | None,
    p: Problem,
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward: ``(dq, dk, dv)`` from the saved ``out`` and ``lse`` (``dlse``: gradient of the lse).

    ``deterministic``: a dK/dV kernel and a dQ kernel, no atomics (bitwise reproducible). Otherwise,
    for keys up to :data:`ATOMIC_MAX_SEQLEN_K` long, as flash-attn by default, the dK/dV kernel also
    adds ``dq`` into an fp32 buffer with atomics (two fewer matmuls per tile pair, summation order not
    fixed), which is then cast; longer keys take the two-kernel path, which measured faster there.
    """
    atomic = not deterministic and p.seqlen_k <= ATOMIC_MAX_SEQLEN_K
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32) if atomic else torch.empty_like(q)
    if p.batch == 0 or k.numel() == 0 or q.numel() == 0:
        return torch.zeros_like(q), dk.zero_(), dv.zero_()
    delta = torch.empty_like(lse)
    flags = p.flags()
    # 8K elements of o and of do per program: 64 fp32 values per thread with 8 warps.
    pre_block = 64 if interpreting() else max(16, 8192 // p.block_d)
    _bwd_preprocess_kernel[(triton.cdiv(p.seqlen_q, pre_block), p.nheads, p.batch)](
        out, dout, dlse if dlse is not None else lse, delta, p.cu_q,
        *_strides3(out, p.varlen), *_strides3(dout, p.varlen), *_lse_strides(lse, p.varlen), p.seqlen_q,
        D=p.headdim, BLOCK_D=p.block_d, IS_VARLEN=p.varlen, HAS_DLSE=dlse is not None, BLOCK_M=pre_block, num_warps=8,
    )  # fmt: skip
    common = [*_lse_strides(lse, p.varlen), *p.scalars()]
    kernel, meta = launcher(
        "bwd_dkdv_atomic" if atomic else "bwd_dkdv", _bwd_dkdv_kernel, p.block_d, p.dtype, p.longest
    )

    def grid_kv(m: dict[str, Any]) -> tuple[int, int, int]:
        return (triton.cdiv(p.seqlen_k, m["BLOCK_N"]), p.nheads_kv, p.batch)

    kernel[grid_kv](
        q, k, v, dout, lse, delta, dk, dv, dq, p.cu_q, p.cu_k, p.slopes_arg(q),
        *_strides3(q, p.varlen), *_strides3(k, p.varlen), *_strides3(v, p.varlen), *_strides3(dout, p.varlen),
        *_strides3(dk, p.varlen), *_strides3(dv, p.varlen), *_strides3(dq, p.varlen), *common, **flags,
        ATOMIC_DQ=atomic, **meta,
    )  # fmt: skip
    if atomic:
        return dq.to(q.dtype), dk, dv
    kernel, meta = launcher("bwd_dq", _bwd_dq_kernel, p.block_d, p.dtype, p.longest)

    def grid_q(m: dict[str, Any]) -> tuple[int, int, int]:
        return (triton.cdiv(p.seqlen_q, m["BLOCK_M"]), p.nheads, p.batch)

    kernel[grid_q](
        q, k, v, dout, lse, delta, dq, p.cu_q, p.cu_k, p.slopes_arg(q),
        *_strides3(q, p.varlen), *_strides3(k, p.varlen), *_strides3(v, p.varlen), *_strides3(dout, p.varlen),
        *_strides3(dq, p.varlen), *common, **flags, **meta,
    )  # fmt: skip
    return dq, dk, dv
