"""Device helpers shared by the flash attention kernels: mask geometry, scores, tile loads and the
online-softmax inner loop.

Masks are expressed on the diagonal offset ``j - i`` of key ``j`` and query ``i``: a key is visible
iff ``lo_diag <= j - i <= hi_diag`` (each side optional) and both are in range, where
``lo_diag = Lk - Lq - left`` and ``hi_diag = Lk - Lq + right`` (bottom-right alignment; causal is
``right = 0``). :func:`band` turns this into the loop bounds of one tile: tiles that see nothing are
never visited (so a sliding window costs O(window), not O(L)), tiles that see everything run without
mask arithmetic, and only the edge tiles pay for masking.
"""

from __future__ import annotations

import triton
import triton.language as tl

from longseq.kernels._common import interpreting

if interpreting():

    @triton.jit
    def tanh(x):
        # libdevice is unavailable in the interpreter; this form is exact to ~1e-7 in fp32.
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(x < 0, -t, t)

    @triton.jit
    def mma(a, b, acc, DOT_PREC: tl.constexpr):
        # Triton 3.6's interpreter multiplies bf16 tiles wrongly; products of bf16 values are exact in fp32.
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")

else:
    from triton.language.extra import libdevice

    @triton.jit
    def tanh(x):
        return libdevice.tanh(x)

    @triton.jit
    def mma(a, b, acc, DOT_PREC: tl.constexpr):
        return tl.dot(a, b, acc, input_precision=DOT_PREC)


# --------------------------------------------------------------------------------------------
# shared device helpers
# --------------------------------------------------------------------------------------------

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def seq_ptr(X, b, start, h, stride_b, stride_t, stride_h):
    """``X`` moved to batch ``b``, token ``start`` and head ``h`` (64-bit offsets)."""
    return X + tl.cast(b, tl.int64) * stride_b + tl.cast(start, tl.int64) * stride_t + tl.cast(h, tl.int64) * stride_h


@triton.jit
def tile_ptrs(X, r0, offs_r, offs_d, stride_r):
    """Pointers to rows ``r0 + offs_r`` and columns ``offs_d`` of a row-major tile (``r0`` offset in
    64 bits: ``row * stride`` of a long sequence overflows 32)."""
    return X + tl.cast(r0, tl.int64) * stride_r + offs_r[:, None] * stride_r + offs_d[None, :]


@triton.jit
def mask_params(seqlen_q, seqlen_k, window_left, window_right, sm_scale, softcap):
    """``(diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out)``: the visible band of ``j - i`` (see the
    module docstring) and the score scales, in log2 units (``cap_*`` are used only with softcap)."""
    diag = seqlen_k - seqlen_q
    return diag, diag - window_left, diag + window_right, sm_scale * LOG2E, sm_scale / softcap, softcap * LOG2E


@triton.jit
def alibi_slope2(SLOPES, h, ALIBI: tl.constexpr):
    """``-slope * log2(e)`` of head ``h`` (``SLOPES`` already at the batch element), 0 without ALiBi."""
    slope2 = 0.0
    if ALIBI:
        slope2 = -tl.load(SLOPES + h).to(tl.float32) * LOG2E
    return slope2


@triton.jit
def finish_rows(acc, m_i, l_i):
    """``(out, lse)`` from the online-softmax state; rows that saw no key give ``out = 0``, ``lse = -inf``."""
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * LN2)
    return acc / l_safe[:, None], lse


@triton.jit
def band(r0, R: tl.constexpr, n_cols, C: tl.constexpr, lo_diag, hi_diag, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr):
    """Column ranges for rows ``[r0, r0 + R)`` where column ``c`` is visible from row ``r`` iff
    ``lo_diag <= c - r <= hi_diag`` (each side only if present) and ``0 <= c < n_cols``.

    Returns ``(lo, full_lo, full_hi, hi)``: visit ``[lo, hi)`` in steps of ``C`` (``lo`` and the
    ``full_*`` bounds are multiples of ``C``); tiles in ``[full_lo, full_hi)`` are visible from every
    row of the block and need no mask; the others (``[lo, full_lo)`` and ``[full_hi, hi)``) do.
    """
    if HAS_LO:
        first = tl.maximum(r0 + lo_diag, 0)  # first column row r0 sees
        full_lo = tl.maximum(r0 + R - 1 + lo_diag, 0)  # first column every row sees
        full_lo = ((full_lo + C - 1) // C) * C
    else:
        first = r0 * 0
        full_lo = first
    if HAS_HI:
        hi = tl.maximum(tl.minimum(r0 + R + hi_diag, n_cols), 0)  # one past the last column row r0+R-1 sees
        full_hi = tl.maximum(tl.minimum(r0 + hi_diag + 1, n_cols), 0)  # one past the last column every row sees
    else:
        hi = r0 * 0 + n_cols
        full_hi = hi
    lo = (first // C) * C
    hi = tl.where(hi <= first, lo, hi)  # nothing visible: an empty range
    full_hi = (full_hi // C) * C
    no_full = full_hi <= full_lo
    full_lo = tl.where(no_full, hi, full_lo)
    full_hi = tl.where(no_full, hi, full_hi)
    return lo, full_lo, full_hi, hi


@triton.jit
def scores(
    qk, qi, kj, seqlen_q, seqlen_k, diag, lo_diag, hi_diag,
    qk_scale, cap_in, cap_out, slope2,
    MASKED: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
):  # fmt: skip
    """Scores in log2 units from raw ``qk`` (fp32) for query indices ``qi`` and key indices ``kj``
    (broadcastable 2-D int tensors, either orientation).

    Returns ``(s, t)``: ``s`` with softcap, ALiBi (``slope2 = -slope * log2(e)``, scalar or
    broadcastable) and, when ``MASKED``, ``-inf`` where the key is not visible; ``t`` the tanh of the
    softcap (the backward needs ``1 - t**2``), or ``qk`` without softcap.
    """
    if SOFTCAP:
        t = tanh(qk * cap_in)
        s = t * cap_out
    else:
        t = qk
        s = qk * qk_scale
    if ALIBI:
        s += slope2 * tl.abs(qi + diag - kj).to(tl.float32)
    if MASKED:
        rel = kj - qi
        valid = (kj < seqlen_k) & (qi < seqlen_q)
        if HAS_LO:
            valid = valid & (rel >= lo_diag)
        if HAS_HI:
            valid = valid & (rel <= hi_diag)
        s = tl.where(valid, s, float("-inf"))
    return s, t


@triton.jit
def load_tile(ptrs, rows, n_rows, offs_d, D: tl.constexpr, CHECK_ROWS: tl.constexpr, EVEN_D: tl.constexpr):
    """Load a ``(rows, BLOCK_D)`` tile, zero outside ``rows < n_rows`` (if checked) and ``d < D``."""
    if CHECK_ROWS:
        if EVEN_D:
            x = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
        else:
            x = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (offs_d[None, :] < D), other=0.0)
    else:
        if EVEN_D:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=offs_d[None, :] < D, other=0.0)
    return x


@triton.jit
def store_tile(ptrs, x, rows, n_rows, offs_d, D: tl.constexpr, EVEN_D: tl.constexpr):
    if EVEN_D:
        tl.store(ptrs, x, mask=rows[:, None] < n_rows)
    else:
        tl.store(ptrs, x, mask=(rows[:, None] < n_rows) & (offs_d[None, :] < D))


@triton.jit
def seq_bounds(CU, b, seqlen, IS_VARLEN: tl.constexpr):
    """``(start, length)`` of sequence ``b``: from ``cu_seqlens`` when packed, else ``(0, seqlen)``."""
    if IS_VARLEN:
        start = tl.load(CU + b)
        length = tl.load(CU + b + 1) - start
    else:
        start = b * 0
        length = b * 0 + seqlen
    return start, length


@triton.jit
def attend_tiles(
    acc, m_i, l_i, q, K, V, stride_kt, stride_vt, start, end,
    qi, offs_n, offs_d, seqlen_q, seqlen_k, diag, lo_diag, hi_diag,
    qk_scale, cap_in, cap_out, slope2,
    D: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
    MASKED: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
):  # fmt: skip
    """Online-softmax accumulation over key tiles ``[start, end)`` (``K``/``V`` at the sequence start)."""
    PLAIN: tl.constexpr = not (MASKED or SOFTCAP or ALIBI)
    for start_n in range(start, end, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        kj = start_n + offs_n  # (BLOCK_N,)
        # Pointers from the scalar start each step: carried pointer tiles (64-bit, BLOCK_N x BLOCK_D each)
        # kept ~128 registers alive across the loop and made the forward spill.
        k_ptrs = tile_ptrs(K, start_n, offs_n, offs_d, stride_kt)
        v_ptrs = tile_ptrs(V, start_n, offs_n, offs_d, stride_vt)
        k = load_tile(k_ptrs, kj, seqlen_k, offs_d, D, MASKED, EVEN_D)  # (BLOCK_N, BLOCK_D)
        qk = mma(q, tl.trans(k), None, DOT_PREC)  # (BLOCK_M, BLOCK_N)
        if PLAIN:  # max of the raw scores, then one FMA per score (qk_scale > 0)
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            m_new_safe = m_new
            p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        else:
            s, _t = scores(
                qk, qi[:, None], kj[None, :], seqlen_q, seqlen_k, diag, lo_diag, hi_diag,
                qk_scale, cap_in, cap_out, slope2, MASKED, HAS_LO, HAS_HI, SOFTCAP, ALIBI,
            )  # fmt: skip
            m_new = tl.maximum(m_i, tl.max(s, 1))
            if MASKED:  # a row may have seen nothing yet: keep exp2 away from (-inf) - (-inf)
                m_new_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            else:
                m_new_safe = m_new
            p = tl.math.exp2(s - m_new_safe[:, None])
        alpha = tl.math.exp2(m_i - m_new_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = load_tile(v_ptrs, kj, seqlen_k, offs_d, D, MASKED, EVEN_D)
        acc = acc * alpha[:, None]
        acc = mma(p.to(v.dtype), v, acc, DOT_PREC)
        m_i = m_new
    return acc, m_i, l_i
