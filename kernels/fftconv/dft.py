"""Complex arithmetic and DFT building blocks of the blocked-FFT kernels (``triton.py``).

Every DFT of length ``R <= 128`` is one dense complex matmul (``tl.dot``, tensor cores) against an ``R x R``
DFT matrix read from a small table (:func:`dft_tables`, computed in fp64 on the host); a length ``S1*S2``
chains two such matmuls with the level twiddle in between. Spectra are kept in the "tile order" the two
levels produce (element ``[ka, kb]`` is frequency ``ka + S1*kb``); the inverse transforms retrace the steps.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TWO_PI = tl.constexpr(6.283185307179586)


#: Taylor coefficients of ``sin x / x`` and ``cos x`` in ``x^2`` (``|x| <= pi/4``: truncation below 2e-9).
_S3, _S5, _S7, _S9 = (tl.constexpr(-1 / 6), tl.constexpr(1 / 120), tl.constexpr(-1 / 5040), tl.constexpr(1 / 362880))
_C2, _C4, _C6, _C8, _C10 = (
    tl.constexpr(-1 / 2), tl.constexpr(1 / 24), tl.constexpr(-1 / 720), tl.constexpr(1 / 40320), tl.constexpr(-1 / 3628800)
)  # fmt: skip


@triton.jit
def phase(a, b, N: tl.constexpr, SIGN: tl.constexpr):
    """``cos, sin`` of ``SIGN * 2 pi (a*b mod N) / N`` for a power of two ``N >= 8`` (``0 <= a*b < 2^31``).

    The angle is reduced exactly in integers: ``a*b mod N = q N/4 + f`` with ``|f| <= N/8``, so the
    polynomials see ``|x| = 2 pi |f| / N <= pi/4`` and the quarter turn ``q`` is a swap and a sign. In place of
    ``tl.cos`` / ``tl.sin`` (libdevice, with its range reduction and slow path) this shrinks the column
    kernel from 7,320 to 2,536 SASS instructions (sm_90, L=64K, ``scripts/fftconv_sass_probe.py``); the error
    is that of one fp32 rounding of ``x`` and of the Horner steps, like libdevice's (``test_fftconv_dft.py``)."""
    QUARTER: tl.constexpr = N // 4
    m = (a * b) & (N - 1)
    q = (m + N // 8) // QUARTER
    x = (m - q * QUARTER).to(tl.float32) * (TWO_PI / N)
    x2 = x * x
    s = x + x * x2 * (_S3 + x2 * (_S5 + x2 * (_S7 + x2 * _S9)))
    c = 1.0 + x2 * (_C2 + x2 * (_C4 + x2 * (_C6 + x2 * (_C8 + x2 * _C10))))
    q = q & 3
    cos = tl.where(q == 0, c, tl.where(q == 1, -s, tl.where(q == 2, -c, s)))
    sin = tl.where(q == 0, s, tl.where(q == 1, c, tl.where(q == 2, -s, -c)))
    if SIGN < 0:
        sin = -sin
    return cos, sin


@triton.jit
def table(T, OFF: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr, LD: tl.constexpr, PLANE: tl.constexpr):
    """``(ROWS, COLS)`` block (leading dimension ``LD``) of a complex table at ``T + OFF`` as (re, im) tiles."""
    offs = OFF + tl.arange(0, ROWS)[:, None] * LD + tl.arange(0, COLS)[None, :]
    return tl.load(T + offs), tl.load(T + PLANE + offs)


@triton.jit
def cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def cmatmul(ar, ai, br, bi, PREC: tl.constexpr):
    """Complex matrix product ``(ar + i ai) @ (br + i bi)`` with four real ``tl.dot``."""
    re = tl.dot(ar, br, input_precision=PREC)
    re = tl.dot(-ai, bi, re, input_precision=PREC)
    im = tl.dot(ar, bi, input_precision=PREC)
    im = tl.dot(ai, br, im, input_precision=PREC)
    return re, im


@triton.jit
def row_dft(
    xr, xi, RT, IN_ROWS: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr, REAL: tl.constexpr, PREC: tl.constexpr
):
    """Forward DFT of length ``R1*R2`` of a row held as an ``(IN_ROWS, R2)`` tile (element ``n = R2*m1 + m2``,
    rows ``m1 >= IN_ROWS`` zero; ``xi`` ignored when ``REAL``). Returns the ``(R1, R2)`` spectrum tile whose
    element ``[ka, kb]`` is ``X[ka + R1*kb]``. ``RT``: the tables of :func:`dft_tables` ``(R1, R2)``."""
    fr, fi = table(RT, 0, R1, IN_ROWS, R1, R1 * R1)
    if REAL:
        ar = tl.dot(fr, xr, input_precision=PREC)
        ai = tl.dot(fi, xr, input_precision=PREC)
    else:
        ar, ai = cmatmul(fr, fi, xr, xi, PREC)  # (R1, R2) [ka, m2]
    tr, ti = table(RT, 2 * R1 * R1 + 2 * R2 * R2, R1, R2, R2, R1 * R2)
    ar, ai = cmul(ar, ai, tr, ti)
    gr, gi = table(RT, 2 * R1 * R1, R2, R2, R2, R2 * R2)
    return cmatmul(ar, ai, gr, gi, PREC)  # (R1, R2) [ka, kb]


@triton.jit
def row_idft(sr, si, RT, OUT_ROWS: tl.constexpr, R1: tl.constexpr, R2: tl.constexpr, PREC: tl.constexpr):
    """Inverse of :func:`_row_dft` without the ``1/N`` factor: ``(R1, R2)`` spectrum tile to the first
    ``OUT_ROWS`` rows of the ``(R1, R2)`` signal tile (the conjugate tables)."""
    gr, gi = table(RT, 2 * R1 * R1, R2, R2, R2, R2 * R2)
    br, bi = cmatmul(sr, si, gr, -gi, PREC)  # (R1, R2) [ka, m2]
    tr, ti = table(RT, 2 * R1 * R1 + 2 * R2 * R2, R1, R2, R2, R1 * R2)
    br, bi = cmul(br, bi, tr, -ti)
    fr, fi = table(RT, 0, OUT_ROWS, R1, R1, R1 * R1)
    return cmatmul(fr, -fi, br, bi, PREC)  # (OUT_ROWS, R2) [m1, m2]


@triton.jit
def col_twiddle(CT, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr):
    """The level twiddle ``w_(P1 P2)^(ka b)`` of :func:`dft_tables` ``(P1, P2)`` broadcast to ``(P1, P2*C)``."""
    offs = 2 * P1 * P1 + 2 * P2 * P2 + tl.arange(0, P1)[:, None] * P2 + tl.arange(0, P2 * C)[None, :] // C
    return tl.load(CT + offs), tl.load(CT + P1 * P2 + offs)


@triton.jit
def dft_middle(xr, xi, CT, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr, SIGN: tl.constexpr, PREC: tl.constexpr):
    """DFT (``SIGN`` -1) or inverse DFT (+1) of length ``P2`` along the middle axis of ``(P1, P2*C)`` = ``(P1, P2, C)``."""
    xr = tl.reshape(tl.permute(tl.reshape(xr, (P1, P2, C)), (0, 2, 1)), (P1 * C, P2))
    xi = tl.reshape(tl.permute(tl.reshape(xi, (P1, P2, C)), (0, 2, 1)), (P1 * C, P2))
    gr, gi = table(CT, 2 * P1 * P1, P2, P2, P2, P2 * P2)
    if SIGN > 0:  # inverse: the conjugate matrix
        gi = -gi
    yr, yi = cmatmul(xr, xi, gr, gi, PREC)  # (P1*C, P2)
    yr = tl.reshape(tl.permute(tl.reshape(yr, (P1, C, P2)), (0, 2, 1)), (P1, P2 * C))
    yi = tl.reshape(tl.permute(tl.reshape(yi, (P1, C, P2)), (0, 2, 1)), (P1, P2 * C))
    return yr, yi


@triton.jit
def col_dft(xr, xi, CT, IN_ROWS: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr, PREC: tl.constexpr):
    """DFT of length ``P1*P2`` down the columns of ``C`` signals held as an ``(IN_ROWS, P2*C)`` tile:
    element ``[a, b*C + c]`` is sample ``n = P2*a + b`` of column ``c`` (rows ``a >= IN_ROWS`` zero).
    Returns ``(P1, P2*C)`` with element ``[ka, kb*C + c]`` = frequency ``ka + P1*kb`` of column ``c``."""
    fr, fi = table(CT, 0, P1, IN_ROWS, P1, P1 * P1)
    ar, ai = cmatmul(fr, fi, xr, xi, PREC)  # (P1, P2*C) [ka, (b, c)]
    if P2 > 1:
        tr, ti = col_twiddle(CT, P1, P2, C)
        ar, ai = cmul(ar, ai, tr, ti)
        ar, ai = dft_middle(ar, ai, CT, P1, P2, C, -1, PREC)  # [ka, (kb, c)]
    return ar, ai


@triton.jit
def col_idft(
    br, bi, CT, OUT_ROWS: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, C: tl.constexpr, PREC: tl.constexpr
):
    """Inverse of :func:`_col_dft` without ``1/N``: returns the first ``OUT_ROWS`` rows ``a`` of ``(P1, P2*C)``."""
    if P2 > 1:
        br, bi = dft_middle(br, bi, CT, P1, P2, C, 1, PREC)  # [ka, (b, c)]
        tr, ti = col_twiddle(CT, P1, P2, C)
        br, bi = cmul(br, bi, tr, -ti)
    fr, fi = table(CT, 0, OUT_ROWS, P1, P1, P1 * P1)
    return cmatmul(fr, -fi, br, bi, PREC)  # (OUT_ROWS, P2*C) [a, (b, c)]


_TABLES: dict[tuple[int, int, str], torch.Tensor] = {}


def dft_tables(S1: int, S2: int, device: torch.device) -> torch.Tensor:
    """DFT matrices and level twiddle of a two-level transform of length ``S1*S2`` as one flat fp32 tensor:
    ``[F_S1 re, F_S1 im, F_S2 re, F_S2 im, T re, T im]`` with ``F_S[j, k] = exp(-2 pi i jk / S)`` (``S x S``)
    and ``T[a, b] = exp(-2 pi i ab / (S1 S2))`` (``S1 x S2``). Computed in fp64, cached per device."""
    key = (S1, S2, str(device))
    if key not in _TABLES:

        def expo(rows: int, cols: int, n: int) -> torch.Tensor:
            jk = torch.outer(torch.arange(rows, dtype=torch.int64), torch.arange(cols, dtype=torch.int64)) % n
            ang = jk.double() * (-2 * torch.pi / n)
            return torch.stack([ang.cos(), ang.sin()]).flatten()

        parts = [expo(S1, S1, S1), expo(S2, S2, S2), expo(S1, S2, S1 * S2)]
        _TABLES[key] = torch.cat(parts).float().to(device)
    return _TABLES[key]
