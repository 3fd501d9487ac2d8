"""The fftconv kernels' building blocks: the integer-reduced twiddle ``phase`` against fp64 cos/sin."""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl

from longseq.kernels.fftconv.dft import phase


@triton.jit
def _phase_kernel(A, B, OUT_C, OUT_S, n, N: tl.constexpr, SIGN: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    a = tl.load(A + i, mask=m, other=0)
    b = tl.load(B + i, mask=m, other=0)
    c, s = phase(a, b, N, SIGN)
    tl.store(OUT_C + i, c, mask=m)
    tl.store(OUT_S + i, s, mask=m)


def _phase(a: torch.Tensor, b: torch.Tensor, N: int, sign: int) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = torch.empty(a.shape, device=a.device), torch.empty(a.shape, device=a.device)
    block = 1024
    _phase_kernel[(triton.cdiv(a.numel(), block),)](a, b, c, s, a.numel(), N=N, SIGN=sign, BLOCK=block)
    return c, s


@pytest.mark.parametrize("N", [8, 256, 2**12, 2**17, 2**21])
@pytest.mark.parametrize("sign", [-1, 1])
def test_phase_matches_fp64_at_every_residue(N, sign, device):
    """Every residue ``a mod N`` (all of them up to 2^12, a sample beyond, and the quarter and eighth turns),
    also from ``a >= N``: the error stays within a few fp32 ulps of 1, as for libdevice's cos/sin."""
    g = torch.Generator().manual_seed(N)
    r = torch.arange(N) if N <= 2**12 else torch.randint(0, N, (2**12,), generator=g)
    r = torch.cat([r, torch.tensor([0, N // 8, N // 4, N // 2, N - 1, 3 * N // 8, 5 * N // 8])])
    a = (r + N * (torch.arange(r.numel()) % 3)).int()
    b = torch.ones_like(a)
    c, s = _phase(a.to(device), b.to(device), N, sign)
    ang = (a.double() % N) * (sign * 2 * math.pi / N)
    err = max((c.cpu().double() - ang.cos()).abs().max(), (s.cpu().double() - ang.sin()).abs().max())
    assert err <= 4 * 2**-24, f"N={N}: max error {err:.3g} against fp64"


def test_phase_of_a_product(device):
    """The product ``a*b`` is reduced modulo ``N`` as an integer (the column twiddle ``w_N^(n2 k1)``)."""
    N = 2**17
    a = torch.arange(0, 512, dtype=torch.int32).repeat_interleave(256)
    b = torch.arange(0, 256, dtype=torch.int32).repeat(512)
    c, s = _phase(a.to(device), b.to(device), N, -1)
    ang = ((a.long() * b.long()) % N).double() * (-2 * math.pi / N)
    assert (c.cpu().double() - ang.cos()).abs().max() <= 4 * 2**-24
    assert (s.cpu().double() - ang.sin()).abs().max() <= 4 * 2**-24
