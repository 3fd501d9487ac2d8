"""Long causal convolution by a blocked ("four-step", Monarch) FFT: Triton kernels and launchers.

Method
------
The causal convolution of length ``L`` is a circular convolution of size ``N = 2^k >= 2L - 1`` of the
zero-padded signals. The size-``N`` DFT is factored as ``N = N1 * N2`` (index ``n = N2*n1 + n2``,
frequency ``k = k1 + N1*k2``)::

    X[k1 + N1 k2] = sum_n2 w_N2^(n2 k2) * [ w_N^(n2 k1) * sum_n1 x[N2 n1 + n2] w_N1^(n1 k1) ]
                                          \\____ column DFT (length N1) + twiddle ____/
                    \\____________________ row DFT (length N2) ____________________/

and every DFT of length ``R <= 128`` is one dense complex matmul (``tl.dot``, tensor cores) against an
``R x R`` DFT matrix read from a small table (the building blocks are in ``dft.py``); lengths up to
64*64 chain two such matmuls with a twiddle in between (the same identity one level down). The
spectrum is never put in natural order: the pointwise product with the filter's spectrum works in any
order, as long as both share it, and the inverse transform retraces the forward steps backwards.

Two real channels travel as one complex signal ``x_d + i x_{d+1}`` through the column passes and the
intermediate buffers, halving their work and memory traffic. The row kernel separates the two
channels' spectra with ``X_d[k] = (Z[k] + conj Z[N-k]) / 2`` and ``X_{d+1}[k] = (Z[k] - conj Z[N-k]) / 2i``;
the partner ``N - k`` of row ``k1`` lies in row ``(N1 - k1) % N1``, column ``N2 - 1 - k2`` (``N2 - k2``
in row 0), which a row DFT of ``conj(row) * w_N2^n`` (of ``conj(row)`` for row 0) delivers in this
row's own order. Products of two real channels' spectra are packed back as ``Y_d + i Y_{d+1}``,
whose inverse is ``y_d + i y_{d+1}``.

Passes
------
* ``N <= max(ROW_MAX, 2048)`` (``L <= 1024`` with the default ``ROW_MAX`` of 512): one fused kernel per
  channel pair reads ``x`` (times the pre-gate), transforms, multiplies by the filter's spectrum (computed once per
  program from ``h``), transforms back and writes ``y`` with the skip term and the post-gate.
* Larger ``N``: rows of ``N2 = ROW_MAX`` and three passes through fp32 complex buffers in HBM: a column pass
  (read signal, length-``N1`` DFT, twiddle, write), a row pass (row DFTs of signal and filter,
  product, inverse row DFT, write), an inverse column pass (read, inverse DFT, skip term and gates,
  write ``y``). The filter goes through its own column pass; the row pass recomputes its row
  spectrum once per program and reuses it across the batch.
* Row pairs: a row-pass program does row ``k1`` and its partner row ``N1 - k1`` (rows ``0`` and ``N1/2`` are
  their own partners and get one program each). The spectra of a real signal are conjugate-symmetric, so
  the partner row's products are the conjugate reversal of row ``k1``'s, and its inverse row DFT is
  ``w_N2^n * conj(IDFT(P - iQ))`` of the same products (:func:`_store_rows`): six row DFTs for two rows
  (two of the signal, two of the filter, two inverse) where one program per row needed ten, and each row
  is read once instead of twice. Compiled for sm_90 (rows of 2048, tf32, 8 warps): 576 ``mma.sync`` per
  two rows against 480 per row before.

Backward: ``g = dy * gate``; ``du = corr(g, h) + D g`` (spectrum ``G conj(H)``); ``dh = sum_b corr(g, u)``
(``sum_b G conj(U)``, summed in the frequency domain inside the row program); ``dD = sum g u``;
``dx = du * pre_gate``, ``dpre_gate = du * x``, ``dgate = dy * z`` with ``z`` saved by the forward.

Precision: buffers and accumulation are fp32; the DFT matrices and the in-row / in-column twiddles are small
tables computed in fp64 on the host (:func:`~longseq.kernels.fftconv.dft.dft_tables`), the ``N``-sized twiddle
between the column and row passes is computed in the kernel from an exact integer index. ``tl.dot`` runs its
fp32 operands as ``dot_precision()`` says (``tf32x3`` unless every activation is bf16, then ``tf32``).

Tuning knobs for the device (module constants): ``ROW_MAX``, ``COL_TILE``, ``COL_SINGLE_MAX``,
``ROW_WARPS``, ``COL_WARPS``, the long-sequence ``MIN_COLS``, ``LONG_ROW_MAX``, ``LONG_COL_TILE``,
``LONG_COL_WARPS``, and ``NUM_STAGES``, ``FP32_DOT_PRECISION``, ``LOWP_DOT_PRECISION``.
Where the time goes (ncu, H200, B=1, D=256, L=64K, bf16, ``benchmarks/results/ncu_fftconv-h200.txt``): the
five column passes of a fwd+bwd take 125-145 us each at 1.1-1.4 TB/s and 12% occupancy (193 registers at 4
warps; 8 warps and other tiles were slower in ``sweep_fftconv-h200-rowplan.jsonl``), the paired row passes
335 us (forward) and 646 us (backward). The twiddles come from an exact integer reduction and short
polynomials (:func:`~longseq.kernels.fftconv.dft.phase`), not libdevice ``cos``/``sin``, which took about two
thirds of the column kernel's instructions. At L=1M the column programs hold 8 columns of rows of 2048 and
their 32-byte pieces at a stride of a row keep them far from the bandwidth: the kernel is 0.92-0.96x
``torch.fft`` there.
Not done yet, in order of expected gain: a third level for L >= 1M (column programs of 32 or more adjacent
columns), fewer registers in the column passes (more programs in flight), keep the filter's spectrum across
forward and backward (it is recomputed in both), overlap-free in-place row passes (one buffer less),
radix-16 three-level row DFTs (fewer flops than two 32/64-point levels). Rows of 2048 use all 255 registers
at 8 warps (one program per SM) and spill 112 bytes with tf32 and 4 KB with ``tf32x3``; rows of 512 at 4
warps use 166 with no spills (ptxas, sm_90, tf32); the kernels run ``mma.sync``, not wgmma.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from longseq.kernels._common import num_programs_hint
from longseq.kernels.fftconv.dft import (
    cmul,
    col_dft,
    col_idft,
    dft_tables,
    phase,
    row_dft,
    row_idft,
)
from longseq.kernels.fftconv.reference import fft_size

#: Row length of the three-pass scheme (and the largest FFT the fused kernel does, with a floor of 2048,
#: see :func:`make_plan`). H100 sweep at B=1, D=256, L=64K, bf16 (``sweep_fftconv-h100.jsonl``): fwd+bwd
#: 2.80 ms with rows of 512 (16x32, 4 warps), 2.96 ms with 2048 (8 warps), 3.85 ms with 512 at 8 warps and
#: 5.18 ms with 1024. Rows of 512 spill nothing (ptxas, sm_90, tf32: 166 registers) and need fewer flops
#: per point (radices 16 and 32); the column DFT then has two levels (16 x 16 at N1 = 256).
ROW_MAX = 512
#: Elements per column-pass tile (``N1 * C``).
COL_TILE = 4096
#: Long sequences: where rows of ``ROW_MAX`` leave fewer than ``MIN_COLS`` adjacent columns per column-pass
#: program (each load and store then a short piece at a stride of a row), rows of ``LONG_ROW_MAX`` with column
#: tiles of ``LONG_COL_TILE`` at ``LONG_COL_WARPS`` warps. H200 sweep at B=1, D=256, bf16 (``sweep_fftconv-h200-
#: rowplan.jsonl``): at L=1M rows of 512 leave C = 1 and take 89 ms fwd+bwd, rows of 2048 with tiles of 8192
#: at 8 warps (C = 8) 65 ms; at L=64K (C = 16) rows of 512 stay faster, 2.20 ms against 2.36-2.67.
#: ptxas (sm_90): tiles of 8192 at 8 warps use 190-210 registers with no spills, 16384 spill at 8 or 16 warps.
#: Only for ``tl.dot`` precisions in ``LONG_PRECISIONS``: with ``tf32x3`` (fp32 and fp16 activations) the row
#: kernel at rows of 2048 spills 4 KB a thread (ptxas, sm_90), against none at rows of 512.
MIN_COLS = 8
LONG_PRECISIONS = ("tf32",)
LONG_ROW_MAX = 2048
LONG_COL_TILE = 8192
LONG_COL_WARPS = 8
#: Largest column DFT done as one matmul; longer columns use two levels.
COL_SINGLE_MAX = 128
#: Warps of the row (and fused) kernels by row length, and of the column kernels.
ROW_WARPS = {256: 4, 512: 4, 1024: 4, 2048: 8, 4096: 8, 8192: 8}
COL_WARPS = 4
#: Software-pipelining stages: 1, because the loops here have no loads worth prefetching and every extra
#: stage multiplies the shared memory of the dot operands (it exceeds the H100's 227 KB at 3 stages).
NUM_STAGES = 1
#: ``tl.dot`` input precision for fp32 operands: when any input is fp32 or fp16, and when all are bf16.
#: bf16 operands (FlashFFTConv's choice, twice tf32's tensor-core rate) miss the tolerance rule: under the
#: interpreter (whose bf16 cast truncates, so about twice the error of round-to-nearest) the output is off
#: by up to 1.2x the bound and dh, summed over the length, by up to 5x, with fp32 or bf16 filters.
FP32_DOT_PRECISION = "tf32x3"
LOWP_DOT_PRECISION = "tf32"
#: Smallest DFT length handled by one matmul (``tl.dot`` needs K >= 16 on NVIDIA GPUs).
MIN_DFT = 16
#: Longest sequence: ``N = 2^24``, where the int32 twiddle index ``n2 * k1 < N`` and its fp32 angle stay exact.
MAX_LEN = 2**23


# --------------------------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How a length-``L`` convolution is transformed: ``N = N1 * N2``, rows ``R1 x R2``, columns ``P1 x P2``, ``C``
    adjacent columns per column-pass program, run at ``col_warps`` warps."""

    L: int
    N: int
    N1: int
    N2: int
    R1: int
    R2: int
    P1: int
    P2: int
    C: int
    col_warps: int

    @property
    def fused(self) -> bool:
        """One kernel does everything (``N1 == 1``)."""
        return self.N1 == 1


def _split(n: int) -> tuple[int, int]:
    """``n = a * b`` with powers of two ``a <= b`` as equal as possible."""
    k = n.bit_length() - 1
    return 1 << (k // 2), 1 << (k - k // 2)


def make_plan(L: int, prec: str = "tf32") -> Plan:
    """The transform sizes for length ``L`` and ``tl.dot`` precision ``prec``: rows of ``ROW_MAX`` and column
    tiles of ``COL_TILE``, or the long-sequence knobs (``LONG_ROW_MAX``, ``LONG_COL_TILE``, ``LONG_COL_WARPS``)
    where those leave fewer than ``MIN_COLS`` adjacent columns per column-pass program and ``prec`` is in
    ``LONG_PRECISIONS`` (reads the module constants at call time)."""
    if L > MAX_LEN:
        raise ValueError(f"sequence length {L} exceeds the fftconv kernels' maximum {MAX_LEN}")
    plan = _plan(L, ROW_MAX, COL_TILE, COL_WARPS)
    if not plan.fused and plan.C < MIN_COLS and LONG_ROW_MAX > ROW_MAX and prec in LONG_PRECISIONS:
        plan = _plan(L, LONG_ROW_MAX, LONG_COL_TILE, LONG_COL_WARPS)
    return plan


def _plan(L: int, row_max: int, col_tile: int, col_warps: int) -> Plan:
    """:func:`make_plan` for given rows and column tiles (reads ``COL_SINGLE_MAX`` and ``MIN_DFT``)."""
    row_min = MIN_DFT * MIN_DFT  # a row is at least a 16 x 16 tile
    N = max(fft_size(L), row_min)
    single_row_max = max(row_max, row_min * MIN_DFT // 2)  # three passes need N1 >= 16 rows of >= 256
    N2 = N if single_row_max >= N else min(max(row_max, row_min), N // MIN_DFT)
    N1 = N // N2
    R1, R2 = _split(N2)
    if N1 == 1:
        P1, P2 = 1, 1
    elif N1 <= COL_SINGLE_MAX or N1 < MIN_DFT * MIN_DFT:  # two levels need both >= MIN_DFT
        P1, P2 = N1, 1
    else:
        P2, P1 = _split(N1)
    C = max(1, min(N2, col_tile // N1))
    assert R1 >= MIN_DFT and (N1 == 1 or min(P1, P2 if P2 > 1 else P1) >= MIN_DFT), (L, N1, N2)
    return Plan(L=L, N=N, N1=N1, N2=N2, R1=R1, R2=R2, P1=P1, P2=P2, C=C, col_warps=col_warps)


def dot_precision(*dtypes: torch.dtype) -> str:
    """``tl.dot`` input precision from the dtypes of the activations (``x``, gates, ``dy``; not the filter):
    ``LOWP_DOT_PRECISION`` when every one is bf16, else ``FP32_DOT_PRECISION``.

    bf16 activations carry 8 mantissa bits and come out rounded to them, so tf32's 10-bit operand
    rounding stays below the data's own whether the filter is bf16 or fp32 (Hyena computes its filter
    in fp32; counting the filter made every such call pay for tf32x3's three products and its register
    spills: 2.9 KB per thread in the row kernel against 8 bytes, ptxas for sm_90).
    tf32 keeps fp16's 10-bit mantissa, so with fp16 data the transforms' rounding would be as large as the
    data's own and the filter gradient (a sum over the whole batch and length) misses the tolerance rule
    (seen on H200): fp16 gets the 3-pass tf32x3 products like fp32."""
    if all(dt == torch.bfloat16 for dt in dtypes):
        return LOWP_DOT_PRECISION
    return FP32_DOT_PRECISION


# --------------------------------------------------------------------------------------------
# loads, epilogues and pass bodies shared by the kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_signal(S, M, row, t, mask, HAS_M: tl.constexpr):
    """``S[row + t] * M[row + t]`` (``M`` optional) in fp32, zero where ``mask`` is false."""
    s = tl.load(S + row + t, mask=mask, other=0.0).to(tl.float32)
    if HAS_M:
        s = s * tl.load(M + row + t, mask=mask, other=0.0).to(tl.float32)
    return s


@triton.jit
def _load_skip(SKIP, d, d2, has2, HAS_SKIP: tl.constexpr):
    """The skip weights ``D[d], D[d2]`` (zero when absent or ``d2`` is past the last channel)."""
    if HAS_SKIP:
        s1 = tl.load(SKIP + d).to(tl.float32)
        s2 = tl.load(SKIP + d2, mask=has2, other=0.0).to(tl.float32)
    else:
        s1 = 0.0
        s2 = 0.0
    return s1, s2


@triton.jit
def _real_pair_spectra(
    S, M, row1, row2, t, mask, has2, RT,
    HAS_M: tl.constexpr, IN_ROWS: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Row spectra ``(R1, R2)`` of the real signals ``S*M`` at ``row1`` and ``row2`` (the latter only if ``has2``)."""
    s1 = _load_signal(S, M, row1, t, mask, HAS_M)
    s2 = _load_signal(S, M, row2, t, mask & has2, HAS_M)
    s1r, s1i = row_dft(s1, s1, RT, IN_ROWS, R1, R2, True, PREC)
    s2r, s2i = row_dft(s2, s2, RT, IN_ROWS, R1, R2, True, PREC)
    return s1r, s1i, s2r, s2i


@triton.jit
def _epilogue_fwd(
    c, X, PRE, GATE, Y, Z, skip, row, t, mask,
    HAS_PRE: tl.constexpr, HAS_GATE: tl.constexpr, HAS_SKIP: tl.constexpr, SAVE_Z: tl.constexpr,
):  # fmt: skip
    """``z = c + D*u`` (``u = x*pre``), saved when ``SAVE_Z``; ``y = z * gate``."""
    z = c
    if HAS_SKIP:
        z += skip * _load_signal(X, PRE, row, t, mask, HAS_PRE)
    if SAVE_Z:
        tl.store(Z + row + t, z.to(Z.dtype.element_ty), mask=mask)
    if HAS_GATE:
        z = z * tl.load(GATE + row + t, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row + t, z.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _epilogue_bwd(
    c, DY, X, PRE, GATE, Z, DX, DPRE, DGATE, skip, row, t, mask,
    HAS_PRE: tl.constexpr, HAS_GATE: tl.constexpr, HAS_SKIP: tl.constexpr, NEED_DGATE: tl.constexpr,
):  # fmt: skip
    """From ``c = corr(g, h)``: ``du = c + D*g``, writes ``dx``, ``dpre``, ``dgate``; returns ``sum(g * u)``."""
    g = _load_signal(DY, GATE, row, t, mask, HAS_GATE)
    if NEED_DGATE:
        dy = tl.load(DY + row + t, mask=mask, other=0.0).to(tl.float32)
        z = tl.load(Z + row + t, mask=mask, other=0.0).to(tl.float32)
        tl.store(DGATE + row + t, (dy * z).to(DGATE.dtype.element_ty), mask=mask)
    du = c
    if HAS_SKIP:
        du += skip * g
    x = tl.load(X + row + t, mask=mask, other=0.0).to(tl.float32)
    u = x
    if HAS_PRE:
        pre = tl.load(PRE + row + t, mask=mask, other=0.0).to(tl.float32)
        u = x * pre
        tl.store(DPRE + row + t, (du * x).to(DPRE.dtype.element_ty), mask=mask)
        du = du * pre
    tl.store(DX + row + t, du.to(DX.dtype.element_ty), mask=mask)
    return tl.sum(g * u)


@triton.jit
def _col_program(N2: tl.constexpr, C: tl.constexpr):
    """``(tile, batch)`` of a column-pass program: both on grid axis 0 (axes 1-2 are capped at 65535)."""
    pid = tl.program_id(0)
    return pid % (N2 // C), pid // (N2 // C)


@triton.jit
def _rows_of(N1, PAIRED: tl.constexpr):
    """Program -> ``(k1, kp)``: with ``PAIRED``, rows ``k1 = 1 .. N1/2 - 1`` and their partners ``N1 - k1``;
    otherwise the two rows that are their own partners, ``0`` and ``N1/2``."""
    if PAIRED:
        k1 = tl.program_id(0) + 1
        return k1, N1 - k1
    k1 = tl.program_id(0) * (N1 // 2)
    return k1, k1


@triton.jit
def _pair_spectra(BUF, base, k1, kp, N, RT, N2: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr, PREC: tl.constexpr):
    """Row ``k1`` of the spectra of the two real channels packed in the complex buffer at ``BUF + base``
    (re plane, then im plane ``N`` further), given the partner row ``kp``. Returns ``Xd, Xd2`` as 4 tiles."""
    n2 = tl.arange(0, R1)[:, None] * R2 + tl.arange(0, R2)[None, :]  # (R1, R2)
    ar = tl.load(BUF + base + k1 * N2 + n2)
    ai = tl.load(BUF + base + N + k1 * N2 + n2)
    pr = tl.load(BUF + base + kp * N2 + n2)
    pi = tl.load(BUF + base + N + kp * N2 + n2)
    wr, wi = phase(n2, 1, N2, -1)
    wr = tl.where(k1 == 0, 1.0, wr)
    wi = tl.where(k1 == 0, 0.0, wi)
    sr, si = cmul(pr, -pi, wr, wi)  # its DFT is conj Z[N - k] in this row's order
    er, ei = row_dft((ar + sr) * 0.5, (ai + si) * 0.5, RT, R1, R1, R2, False, PREC)
    odr, odi = row_dft((ai - si) * 0.5, (sr - ar) * 0.5, RT, R1, R1, R2, False, PREC)
    return er, ei, odr, odi


@triton.jit
def _pack_product(ar, ai, br, bi, cr, ci, dr, di, scale):
    """``(A*B + i C*D) * scale`` for complex tiles: the spectrum of ``a*b + i c*d`` for real pairs."""
    pr, pi = cmul(ar, ai, br, bi)
    qr, qi = cmul(cr, ci, dr, di)
    return (pr - qi) * scale, (pi + qr) * scale


@triton.jit
def _idft_store_row(
    yr, yi, OUT, base, k1, N, RT, N2: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr, PREC: tl.constexpr
):
    """Inverse row DFT of the ``(R1, R2)`` spectrum tile, stored as row ``k1`` of the complex buffer at ``OUT + base``."""
    yr, yi = row_idft(yr, yi, RT, R1, R1, R2, PREC)
    n2 = tl.arange(0, R1)[:, None] * R2 + tl.arange(0, R2)[None, :]
    tl.store(OUT + base + k1 * N2 + n2, yr)
    tl.store(OUT + base + N + k1 * N2 + n2, yi)


@triton.jit
def _products(ar, ai, br, bi, cr, ci, dr, di, scale):
    """``(P, Q) = (A*B*scale, C*D*scale)``: the row spectra of two real channels' circular products."""
    pr, pi = cmul(ar, ai, br, bi)
    qr, qi = cmul(cr, ci, dr, di)
    return pr * scale, pi * scale, qr * scale, qi * scale


@triton.jit
def _store_rows(
    pr, pi, qr, qi, OUT, base, k1, kp, N, RT,
    N2: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr, PREC: tl.constexpr, PAIRED: tl.constexpr,
):  # fmt: skip
    """Inverse row DFTs of the packed product ``P + iQ`` (row ``k1`` of two real channels' spectra ``P``,
    ``Q``) into row ``k1`` of the buffer at ``OUT + base`` and, with ``PAIRED``, also row ``kp = N1 - k1``.

    A real signal's spectrum is conjugate-symmetric, so row ``kp`` holds ``conj(P[N2-1-k2])`` at ``k2``:
    its inverse row DFT is ``w_N2^n * conj(IDFT(P - iQ)[n])``, one more inverse DFT and no more loads."""
    _idft_store_row(pr - qi, pi + qr, OUT, base, k1, N, RT, N2, R1, R2, PREC)
    if PAIRED:
        tr, ti = row_idft(pr + qi, pi - qr, RT, R1, R1, R2, PREC)
        n2 = tl.arange(0, R1)[:, None] * R2 + tl.arange(0, R2)[None, :]
        wr, wi = phase(n2, 1, N2, -1)
        tl.store(OUT + base + kp * N2 + n2, wr * tr + wi * ti)
        tl.store(OUT + base + N + kp * N2 + n2, wi * tr - wr * ti)


@triton.jit
def _col_forward_store(
    xr, xi, BUF, base, c0, N2: tl.constexpr, CT,
    IN_ROWS: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Column pass body: ``xr + i xi`` given as ``(IN_ROWS, P2*C)`` tiles (sample ``N2*(P2*a + b) + c0 + c`` at
    ``[a, b*C + c]``), DFT down the columns, twiddle ``w_N^(n2 k1)``, store row ``k1`` of the ``(N1, N2)`` buffer."""
    ar, ai = col_dft(xr, xi, CT, IN_ROWS, P1, P2, C, PREC)  # (P1, P2*C) [ka, (kb, c)]
    N: tl.constexpr = P1 * P2 * N2
    j = tl.arange(0, P2 * C)[None, :]
    k1 = tl.arange(0, P1)[:, None] + P1 * (j // C)
    n2 = c0 + j % C
    tr, ti = phase(n2, k1, N, -1)
    ar, ai = cmul(ar, ai, tr, ti)
    tl.store(BUF + base + k1 * N2 + n2, ar)
    tl.store(BUF + base + N + k1 * N2 + n2, ai)


@triton.jit
def _col_inverse(
    BUF, base, c0, N2: tl.constexpr, CT,
    OUT_ROWS: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Inverse column pass body: load columns ``[c0, c0+C)`` of the ``(N1, N2)`` buffer, undo the twiddle,
    inverse DFT down the columns. Returns ``(re, im, t)`` as ``(OUT_ROWS, P2*C)`` tiles, ``t`` the sample index."""
    N: tl.constexpr = P1 * P2 * N2
    j = tl.arange(0, P2 * C)[None, :]
    k1 = tl.arange(0, P1)[:, None] + P1 * (j // C)
    n2 = c0 + j % C
    br = tl.load(BUF + base + k1 * N2 + n2)  # (P1, P2*C) [ka, (kb, c)]
    bi = tl.load(BUF + base + N + k1 * N2 + n2)
    tr, ti = phase(n2, k1, N, 1)
    br, bi = cmul(br, bi, tr, ti)
    yr, yi = col_idft(br, bi, CT, OUT_ROWS, P1, P2, C, PREC)  # (OUT_ROWS, P2*C) [a, (b, c)]
    t = N2 * (P2 * tl.arange(0, OUT_ROWS)[:, None] + j // C) + n2
    return yr, yi, t


# --------------------------------------------------------------------------------------------
# fused kernels (one row: N <= max(ROW_MAX, 2048))
# --------------------------------------------------------------------------------------------


@triton.jit
def _fused_fwd_kernel(
    X, PRE, GATE, H, SKIP, Y, Z, RT,
    B, D, L, LH, b_per_prog, inv_n,
    HAS_PRE: tl.constexpr, HAS_GATE: tl.constexpr, HAS_SKIP: tl.constexpr, SAVE_Z: tl.constexpr,
    R1: tl.constexpr, R2: tl.constexpr, IN_ROWS: tl.constexpr, OUT_ROWS: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    d = 2 * tl.program_id(0)
    d2 = d + 1
    has2 = d2 < D
    t_in = tl.arange(0, IN_ROWS)[:, None] * R2 + tl.arange(0, R2)[None, :]  # (IN_ROWS, R2)
    t_out = tl.arange(0, OUT_ROWS)[:, None] * R2 + tl.arange(0, R2)[None, :]  # (OUT_ROWS, R2)
    hrow = d.to(tl.int64) * LH
    h1r, h1i, h2r, h2i = _real_pair_spectra(
        H, H, hrow, hrow + LH, t_in, t_in < LH, has2, RT, False, IN_ROWS, R1, R2, PREC
    )
    skip1, skip2 = _load_skip(SKIP, d, d2, has2, HAS_SKIP)
    b0 = tl.program_id(1) * b_per_prog
    for b in range(b0, tl.minimum(b0 + b_per_prog, B)):
        row1 = (b * D + d).to(tl.int64) * L
        row2 = row1 + L
        u1r, u1i, u2r, u2i = _real_pair_spectra(
            X, PRE, row1, row2, t_in, t_in < L, has2, RT, HAS_PRE, IN_ROWS, R1, R2, PREC
        )
        yr, yi = _pack_product(u1r, u1i, h1r, h1i, u2r, u2i, h2r, h2i, inv_n)
        cr, ci = row_idft(yr, yi, RT, OUT_ROWS, R1, R2, PREC)  # (OUT_ROWS, R2): channel d, d2
        m = t_out < L
        _epilogue_fwd(cr, X, PRE, GATE, Y, Z, skip1, row1, t_out, m, HAS_PRE, HAS_GATE, HAS_SKIP, SAVE_Z)
        _epilogue_fwd(ci, X, PRE, GATE, Y, Z, skip2, row2, t_out, m & has2, HAS_PRE, HAS_GATE, HAS_SKIP, SAVE_Z)


@triton.jit
def _fused_bwd_kernel(
    DY, X, PRE, GATE, Z, H, SKIP, DX, DPRE, DGATE, DH_PART, DSKIP_PART, RT,
    B, D, L, LH, b_per_prog, inv_n,
    HAS_PRE: tl.constexpr, HAS_GATE: tl.constexpr, HAS_SKIP: tl.constexpr, NEED_DGATE: tl.constexpr,
    R1: tl.constexpr, R2: tl.constexpr, IN_ROWS: tl.constexpr, OUT_ROWS: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    d = 2 * tl.program_id(0)
    d2 = d + 1
    has2 = d2 < D
    t_in = tl.arange(0, IN_ROWS)[:, None] * R2 + tl.arange(0, R2)[None, :]
    t_out = tl.arange(0, OUT_ROWS)[:, None] * R2 + tl.arange(0, R2)[None, :]
    hrow = d.to(tl.int64) * LH
    h1r, h1i, h2r, h2i = _real_pair_spectra(
        H, H, hrow, hrow + LH, t_in, t_in < LH, has2, RT, False, IN_ROWS, R1, R2, PREC
    )
    skip1, skip2 = _load_skip(SKIP, d, d2, has2, HAS_SKIP)
    accr = tl.zeros((R1, R2), dtype=tl.float32)
    acci = tl.zeros((R1, R2), dtype=tl.float32)
    b0 = tl.program_id(1) * b_per_prog
    for b in range(b0, tl.minimum(b0 + b_per_prog, B)):
        row1 = (b * D + d).to(tl.int64) * L
        row2 = row1 + L
        g1r, g1i, g2r, g2i = _real_pair_spectra(
            DY, GATE, row1, row2, t_in, t_in < L, has2, RT, HAS_GATE, IN_ROWS, R1, R2, PREC
        )
        yr, yi = _pack_product(g1r, g1i, h1r, -h1i, g2r, g2i, h2r, -h2i, inv_n)
        cr, ci = row_idft(yr, yi, RT, OUT_ROWS, R1, R2, PREC)  # corr(g, h) of channels d, d2
        m = t_out < L
        p1 = _epilogue_bwd(
            cr, DY, X, PRE, GATE, Z, DX, DPRE, DGATE, skip1, row1, t_out, m, HAS_PRE, HAS_GATE, HAS_SKIP, NEED_DGATE
        )
        p2 = _epilogue_bwd(
            ci, DY, X, PRE, GATE, Z, DX, DPRE, DGATE, skip2, row2, t_out, m & has2,
            HAS_PRE, HAS_GATE, HAS_SKIP, NEED_DGATE,
        )  # fmt: skip
        if HAS_SKIP:
            tl.store(DSKIP_PART + b * D + d, p1)
            tl.store(DSKIP_PART + b * D + d2, p2, mask=has2)
        u1r, u1i, u2r, u2i = _real_pair_spectra(
            X, PRE, row1, row2, t_in, t_in < L, has2, RT, HAS_PRE, IN_ROWS, R1, R2, PREC
        )
        qr, qi = _pack_product(g1r, g1i, u1r, -u1i, g2r, g2i, u2r, -u2i, inv_n)
        accr += qr
        acci += qi
    dr, di = row_idft(accr, acci, RT, OUT_ROWS, R1, R2, PREC)  # this batch slice's share of dh[d], dh[d2]
    out = (tl.program_id(1) * D + d).to(tl.int64) * LH
    tl.store(DH_PART + out + t_out, dr, mask=t_out < LH)
    tl.store(DH_PART + out + LH + t_out, di, mask=(t_out < LH) & has2)


# --------------------------------------------------------------------------------------------
# three-pass kernels (rows of ROW_MAX)
# --------------------------------------------------------------------------------------------


@triton.jit
def _col_fwd_kernel(
    S, M, BUF, CT, D, L_SIG, P, N,
    HAS_M: tl.constexpr, N2: tl.constexpr, IN_ROWS: tl.constexpr,
    P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Column pass of ``S * M`` (``(B, D, L_SIG)``, channel pairs packed) into ``BUF`` ``(B, P, 2, N)``."""
    tile, b = _col_program(N2, C)
    c0 = tile * C
    pair = tl.program_id(1)
    d = 2 * pair
    has2 = d + 1 < D
    j = tl.arange(0, P2 * C)[None, :]
    t = N2 * (P2 * tl.arange(0, IN_ROWS)[:, None] + j // C) + c0 + j % C  # (IN_ROWS, P2*C)
    row1 = (b * D + d).to(tl.int64) * L_SIG
    s1 = _load_signal(S, M, row1, t, t < L_SIG, HAS_M)
    s2 = _load_signal(S, M, row1 + L_SIG, t, (t < L_SIG) & has2, HAS_M)
    base = (b * P + pair).to(tl.int64) * 2 * N
    _col_forward_store(s1, s2, BUF, base, c0, N2, CT, IN_ROWS, P1, P2, C, PREC)


@triton.jit
def _row_fwd_kernel(
    AX, AH, OUT, RT, B, P, N1, N, b_per_prog, inv_n,
    N2: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr, PREC: tl.constexpr, PAIRED: tl.constexpr,
):  # fmt: skip
    """Row pass of the forward: ``OUT[b] = row-IDFT(row-DFT(AX[b]) * row-DFT(AH))`` per channel pair, for
    the rows of :func:`_rows_of` (a partner row comes from its row's spectra, :func:`_store_rows`)."""
    k1, kp = _rows_of(N1, PAIRED)
    pair = tl.program_id(1)
    h1r, h1i, h2r, h2i = _pair_spectra(AH, pair.to(tl.int64) * 2 * N, k1, kp, N, RT, N2, R1, R2, PREC)
    b0 = tl.program_id(2) * b_per_prog
    for b in range(b0, tl.minimum(b0 + b_per_prog, B)):
        base = (b * P + pair).to(tl.int64) * 2 * N
        x1r, x1i, x2r, x2i = _pair_spectra(AX, base, k1, kp, N, RT, N2, R1, R2, PREC)
        pr, pi, qr, qi = _products(x1r, x1i, h1r, h1i, x2r, x2i, h2r, h2i, inv_n)
        _store_rows(pr, pi, qr, qi, OUT, base, k1, kp, N, RT, N2, R1, R2, PREC, PAIRED)


@triton.jit
def _row_bwd_kernel(
    AG, AU, AH, OUT_DU, OUT_DH, RT, B, P, N1, N, b_per_prog, inv_n,
    N2: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr, PREC: tl.constexpr, PAIRED: tl.constexpr,
):  # fmt: skip
    """Row pass of the backward: ``OUT_DU[b]`` from ``G conj(H)``; ``OUT_DH[split]`` from ``sum_b G conj(U)``."""
    k1, kp = _rows_of(N1, PAIRED)
    pair = tl.program_id(1)
    h1r, h1i, h2r, h2i = _pair_spectra(AH, pair.to(tl.int64) * 2 * N, k1, kp, N, RT, N2, R1, R2, PREC)
    s1r = tl.zeros((R1, R2), dtype=tl.float32)
    s1i = tl.zeros((R1, R2), dtype=tl.float32)
    s2r = tl.zeros((R1, R2), dtype=tl.float32)
    s2i = tl.zeros((R1, R2), dtype=tl.float32)
    b0 = tl.program_id(2) * b_per_prog
    for b in range(b0, tl.minimum(b0 + b_per_prog, B)):
        base = (b * P + pair).to(tl.int64) * 2 * N
        g1r, g1i, g2r, g2i = _pair_spectra(AG, base, k1, kp, N, RT, N2, R1, R2, PREC)
        pr, pi, qr, qi = _products(g1r, g1i, h1r, -h1i, g2r, g2i, h2r, -h2i, inv_n)
        _store_rows(pr, pi, qr, qi, OUT_DU, base, k1, kp, N, RT, N2, R1, R2, PREC, PAIRED)
        u1r, u1i, u2r, u2i = _pair_spectra(AU, base, k1, kp, N, RT, N2, R1, R2, PREC)
        pr, pi, qr, qi = _products(g1r, g1i, u1r, -u1i, g2r, g2i, u2r, -u2i, inv_n)
        s1r += pr
        s1i += pi
        s2r += qr
        s2i += qi
    base = (tl.program_id(2) * P + pair).to(tl.int64) * 2 * N
    _store_rows(s1r, s1i, s2r, s2i, OUT_DH, base, k1, kp, N, RT, N2, R1, R2, PREC, PAIRED)


@triton.jit
def _col_inv_fwd_kernel(
    BUF, X, PRE, GATE, SKIP, Y, Z, CT, D, L, P, N,
    HAS_PRE: tl.constexpr, HAS_GATE: tl.constexpr, HAS_SKIP: tl.constexpr, SAVE_Z: tl.constexpr,
    N2: tl.constexpr, OUT_ROWS: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """Inverse column pass of the forward: ``y = gate * (conv + D*u)`` from the row pass's buffer."""
    tile, b = _col_program(N2, C)
    c0 = tile * C
    pair = tl.program_id(1)
    d = 2 * pair
    has2 = d + 1 < D
    cr, ci, t = _col_inverse(BUF, (b * P + pair).to(tl.int64) * 2 * N, c0, N2, CT, OUT_ROWS, P1, P2, C, PREC)
    skip1, skip2 = _load_skip(SKIP, d, d + 1, has2, HAS_SKIP)
    row1 = (b * D + d).to(tl.int64) * L
    m = t < L
    _epilogue_fwd(cr, X, PRE, GATE, Y, Z, skip1, row1, t, m, HAS_PRE, HAS_GATE, HAS_SKIP, SAVE_Z)
    _epilogue_fwd(ci, X, PRE, GATE, Y, Z, skip2, row1 + L, t, m & has2, HAS_PRE, HAS_GATE, HAS_SKIP, SAVE_Z)


@triton.jit
def _col_inv_bwd_kernel(
    BUF, DY, X, PRE, GATE, Z, SKIP, DX, DPRE, DGATE, DSKIP_PART, CT, D, L, P, N, n_tiles,
    HAS_PRE: tl.constexpr, HAS_GATE: tl.constexpr, HAS_SKIP: tl.constexpr, NEED_DGATE: tl.constexpr,
    N2: tl.constexpr, OUT_ROWS: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """Inverse column pass of the backward: ``dx``, ``dpre``, ``dgate`` and partial ``dD`` sums."""
    pid_c, b = _col_program(N2, C)
    pair = tl.program_id(1)
    d = 2 * pair
    d2 = d + 1
    has2 = d2 < D
    cr, ci, t = _col_inverse(BUF, (b * P + pair).to(tl.int64) * 2 * N, pid_c * C, N2, CT, OUT_ROWS, P1, P2, C, PREC)
    skip1, skip2 = _load_skip(SKIP, d, d2, has2, HAS_SKIP)
    row1 = (b * D + d).to(tl.int64) * L
    m = t < L
    p1 = _epilogue_bwd(
        cr, DY, X, PRE, GATE, Z, DX, DPRE, DGATE, skip1, row1, t, m, HAS_PRE, HAS_GATE, HAS_SKIP, NEED_DGATE
    )
    p2 = _epilogue_bwd(
        ci, DY, X, PRE, GATE, Z, DX, DPRE, DGATE, skip2, row1 + L, t, m & has2, HAS_PRE, HAS_GATE, HAS_SKIP, NEED_DGATE
    )
    if HAS_SKIP:
        tl.store(DSKIP_PART + (b * D + d) * n_tiles + pid_c, p1)
        tl.store(DSKIP_PART + (b * D + d2) * n_tiles + pid_c, p2, mask=has2)


@triton.jit
def _col_inv_dh_kernel(
    BUF, DH, CT, D, LH, N,
    N2: tl.constexpr, OUT_ROWS: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """Inverse column pass of ``dh``: the first ``LH`` samples of both packed channels."""
    pair = tl.program_id(1)
    d = 2 * pair
    has2 = d + 1 < D
    dr, di, t = _col_inverse(BUF, pair.to(tl.int64) * 2 * N, tl.program_id(0) * C, N2, CT, OUT_ROWS, P1, P2, C, PREC)
    row1 = d.to(tl.int64) * LH
    m = t < LH
    tl.store(DH + row1 + t, dr.to(DH.dtype.element_ty), mask=m)
    tl.store(DH + row1 + LH + t, di.to(DH.dtype.element_ty), mask=m & has2)


# --------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------


def _batch_split(B: int, programs: int, device: torch.device) -> tuple[int, int]:
    """``(splits, b_per_prog)``: split the batch loop only as far as needed to fill the device."""
    splits = max(1, min(B, num_programs_hint(device) // max(programs, 1)))
    b_per_prog = triton.cdiv(B, splits)
    return triton.cdiv(B, b_per_prog), b_per_prog


def _half(rows: int) -> int:
    """Rows of the first level that can hold samples ``< L <= N/2`` (all rows when half is below ``MIN_DFT``)."""
    return rows // 2 if rows // 2 >= MIN_DFT else rows


def _row_launches(plan: Plan) -> tuple[tuple[bool, int], ...]:
    """``(PAIRED, programs along axis 0)`` of the row-pass launches: ``N1/2 - 1`` programs that each do a
    row and its partner, and 2 for the rows that are their own partners (``0`` and ``N1/2``)."""
    return (True, plan.N1 // 2 - 1), (False, 2)


def _row_meta(plan: Plan, prec: str) -> dict:
    return {
        "R1": plan.R1,
        "R2": plan.R2,
        "PREC": prec,
        "num_warps": ROW_WARPS.get(plan.N2, 8),
        "num_stages": NUM_STAGES,
    }


def _fused_meta(plan: Plan, prec: str) -> dict:
    return {**_row_meta(plan, prec), "IN_ROWS": _half(plan.R1), "OUT_ROWS": plan.R1 // 2}


def _col_meta(plan: Plan, prec: str, inverse: bool) -> dict:
    meta = {"N2": plan.N2, "P1": plan.P1, "P2": plan.P2, "C": plan.C, "PREC": prec}
    meta.update(num_warps=plan.col_warps, num_stages=NUM_STAGES)
    meta["OUT_ROWS" if inverse else "IN_ROWS"] = plan.P1 // 2 if inverse else _half(plan.P1)
    return meta


def _column_pass(s: torch.Tensor, m: torch.Tensor | None, plan: Plan, prec: str) -> torch.Tensor:
    """Column pass of ``s * m`` ``(B, D, Ls)`` into a new fp32 buffer ``(B, ceil(D/2), 2, N)``."""
    B, D, Ls = s.shape
    P = triton.cdiv(D, 2)
    buf = torch.empty(B, P, 2, plan.N, dtype=torch.float32, device=s.device)
    ct = dft_tables(plan.P1, plan.P2, s.device)
    _col_fwd_kernel[(plan.N2 // plan.C * B, P)](
        s, m if m is not None else s, buf, ct, D, Ls, P, plan.N, HAS_M=m is not None, **_col_meta(plan, prec, False)
    )
    return buf


def fftconv_fwd(
    x: torch.Tensor,
    h: torch.Tensor,
    skip: torch.Tensor | None,
    pre: torch.Tensor | None,
    gate: torch.Tensor | None,
    save_z: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward on contiguous ``x`` ``(B, D, L)``, ``h`` ``(D, LH)`` with ``LH <= L``; returns ``(y, z)``
    (``z`` = the output before the post-gate, an empty tensor unless ``save_z``)."""
    B, D, L = x.shape
    LH = h.shape[1]
    y = torch.empty_like(x)
    z = torch.empty_like(x) if save_z else x.new_empty(0)
    if B == 0 or L == 0 or D == 0:
        return y, z
    prec = dot_precision(*(t.dtype for t in (x, pre, gate) if t is not None))
    plan = make_plan(L, prec)
    P = triton.cdiv(D, 2)
    rt = dft_tables(plan.R1, plan.R2, x.device)
    flags = {"HAS_PRE": pre is not None, "HAS_GATE": gate is not None, "HAS_SKIP": skip is not None}
    pre_, gate_, skip_ = (t if t is not None else x for t in (pre, gate, skip))
    z_ = z if save_z else y
    if plan.fused:
        splits, bpp = _batch_split(B, P, x.device)
        _fused_fwd_kernel[(P, splits)](
            x, pre_, gate_, h, skip_, y, z_, rt, B, D, L, LH, bpp, 1.0 / plan.N,
            SAVE_Z=save_z, **flags, **_fused_meta(plan, prec),
        )  # fmt: skip
        return y, z
    a_h = _column_pass(h.unsqueeze(0), None, plan, prec)  # (1, P, 2, N)
    a_x = _column_pass(x, pre, plan, prec)  # (B, P, 2, N)
    out = torch.empty_like(a_x)
    splits, bpp = _batch_split(B, (plan.N1 // 2 + 1) * P, x.device)
    for paired, rows in _row_launches(plan):
        _row_fwd_kernel[(rows, P, splits)](
            a_x, a_h, out, rt, B, P, plan.N1, plan.N, bpp, 1.0 / plan.N,
            N2=plan.N2, PAIRED=paired, **_row_meta(plan, prec),
        )  # fmt: skip
    del a_x, a_h
    ct = dft_tables(plan.P1, plan.P2, x.device)
    _col_inv_fwd_kernel[(plan.N2 // plan.C * B, P)](
        out, x, pre_, gate_, skip_, y, z_, ct, D, L, P, plan.N, SAVE_Z=save_z, **flags, **_col_meta(plan, prec, True)
    )
    return y, z


def fftconv_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    h: torch.Tensor,
    skip: torch.Tensor | None,
    pre: torch.Tensor | None,
    gate: torch.Tensor | None,
    z: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Backward; returns ``(dx, dh, dskip, dpre, dgate)`` (``None`` for absent inputs; ``dgate`` needs ``z``)."""
    B, D, L = x.shape
    LH = h.shape[1]
    dx = torch.empty_like(x)
    dpre = torch.empty_like(pre) if pre is not None else None
    need_dgate = gate is not None and z is not None
    dgate = torch.empty_like(gate) if need_dgate else None
    if B == 0 or L == 0 or D == 0:
        dskip = torch.zeros_like(skip) if skip is not None else None
        return dx, torch.zeros_like(h), dskip, dpre, dgate
    prec = dot_precision(*(t.dtype for t in (dy, x, pre, gate) if t is not None))
    plan = make_plan(L, prec)
    P = triton.cdiv(D, 2)
    rt = dft_tables(plan.R1, plan.R2, x.device)
    flags = {"HAS_PRE": pre is not None, "HAS_GATE": gate is not None, "HAS_SKIP": skip is not None}
    pre_, gate_, skip_, z_ = (t if t is not None else x for t in (pre, gate, skip, z))
    dpre_, dgate_ = (t if t is not None else dx for t in (dpre, dgate))
    if plan.fused:
        splits, bpp = _batch_split(B, P, x.device)
        dh_part = torch.empty(splits, D, LH, dtype=torch.float32, device=x.device)
        dskip_part = torch.empty(B, D, 1, dtype=torch.float32, device=x.device)
        _fused_bwd_kernel[(P, splits)](
            dy, x, pre_, gate_, z_, h, skip_, dx, dpre_, dgate_, dh_part, dskip_part, rt,
            B, D, L, LH, bpp, 1.0 / plan.N, NEED_DGATE=need_dgate, **flags, **_fused_meta(plan, prec),
        )  # fmt: skip
        dh = dh_part.sum(0).to(h.dtype)
    else:
        a_h = _column_pass(h.unsqueeze(0), None, plan, prec)
        a_g = _column_pass(dy, gate, plan, prec)
        a_u = _column_pass(x, pre, plan, prec)
        out_du = torch.empty_like(a_g)
        splits, bpp = _batch_split(B, (plan.N1 // 2 + 1) * P, x.device)
        out_dh = torch.empty(splits, P, 2, plan.N, dtype=torch.float32, device=x.device)
        for paired, rows in _row_launches(plan):
            _row_bwd_kernel[(rows, P, splits)](
                a_g, a_u, a_h, out_du, out_dh, rt, B, P, plan.N1, plan.N, bpp, 1.0 / plan.N,
                N2=plan.N2, PAIRED=paired, **_row_meta(plan, prec),
            )  # fmt: skip
        del a_g, a_u, a_h
        if splits > 1:
            out_dh = out_dh.sum(0, keepdim=True)
        n_tiles = plan.N2 // plan.C
        dskip_part = torch.empty(B, D, n_tiles, dtype=torch.float32, device=x.device)
        meta = _col_meta(plan, prec, True)
        ct = dft_tables(plan.P1, plan.P2, x.device)
        _col_inv_bwd_kernel[(n_tiles * B, P)](
            out_du, dy, x, pre_, gate_, z_, skip_, dx, dpre_, dgate_, dskip_part, ct, D, L, P, plan.N, n_tiles,
            NEED_DGATE=need_dgate, **flags, **meta,
        )  # fmt: skip
        del out_du
        dh = torch.empty_like(h)
        _col_inv_dh_kernel[(n_tiles, P)](out_dh, dh, ct, D, LH, plan.N, **meta)
    dskip = dskip_part.sum((0, 2)).to(skip.dtype) if skip is not None else None
    return dx, dh, dskip, dpre, dgate
