"""RMSNorm Triton kernels and their launchers.

Forward: each program normalises ``BLOCK_M`` rows held whole in registers (``BLOCK_N >= N``),
computing in fp32 and storing ``rstd`` for the backward.
Backward: a persistent grid; each program walks a contiguous range of rows, writes ``dx`` and
accumulates its share of ``dweight`` in registers, then writes one fp32 partial row; the partials
are summed by one small reduction afterwards (no atomics, deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longseq.kernels._common import num_programs_hint

#: Largest hidden size the single-block kernels hold in registers.
MAX_HIDDEN = 65536


@triton.jit
def _rms_norm_fwd_kernel(
    X, W, Y, RSTD,
    M, N, stride_x, stride_y, eps,
    HAS_WEIGHT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    row_mask = rows < M
    col_mask = cols < N
    mask = row_mask[:, None] & col_mask[None, :]
    rows64 = rows.to(tl.int64)
    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / N + eps)  # (BLOCK_M,)
    y = x * rstd[:, None]
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
        y = y * w[None, :]
    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _rms_norm_bwd_kernel(
    X, W, DY, RSTD, DX, DW_PARTIAL,
    M, N, stride_x, stride_dy, stride_dx, rows_per_program,
    HAS_WEIGHT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
        dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    start = pid * rows_per_program
    for off in range(0, rows_per_program, BLOCK_M):
        rows = start + off + tl.arange(0, BLOCK_M)
        row_mask = rows < M
        mask = row_mask[:, None] & col_mask[None, :]
        rows64 = rows.to(tl.int64)
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
        xhat = x * rstd[:, None]
        if HAS_WEIGHT:
            g = dy * w[None, :]
            dw += tl.sum(dy * xhat, axis=0)
        else:
            g = dy
        # d/dx of x * rstd(x): rstd * (g - xhat * mean(g * xhat))
        c = tl.sum(g * xhat, axis=1) / N  # (BLOCK_M,)
        dx = (g - xhat * c[:, None]) * rstd[:, None]
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
    if HAS_WEIGHT:
        tl.store(DW_PARTIAL + pid * N + cols, dw, mask=col_mask)


def _block_shape(n: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_N, num_warps)`` for hidden size ``n``: about 8K elements per step."""
    block_n = triton.next_power_of_2(n)
    block_m = max(1, min(16, 8192 // block_n))
    elems = block_m * block_n
    num_warps = 4 if elems <= 4096 else 8 if elems <= 16384 else 16
    return block_m, block_n, num_warps


def rms_norm_fwd(x2d: torch.Tensor, weight: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward on ``x2d`` ``(M, N)`` (last dim contiguous); returns ``(y, rstd)``."""
    M, N = x2d.shape
    y = torch.empty_like(x2d)
    rstd = torch.empty(M, dtype=torch.float32, device=x2d.device)
    if M == 0:
        return y, rstd
    block_m, block_n, num_warps = _block_shape(N)
    grid = (triton.cdiv(M, block_m),)
    _rms_norm_fwd_kernel[grid](
        x2d, weight if weight is not None else x2d, y, rstd,
        M, N, x2d.stride(0), y.stride(0), eps,
        HAS_WEIGHT=weight is not None, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip
    return y, rstd


def rms_norm_bwd(
    dy: torch.Tensor, x2d: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the backward; returns ``(dx, dweight)`` with ``dweight`` ``None`` without a weight."""
    M, N = x2d.shape
    dx = torch.empty_like(x2d)
    if M == 0:
        dw = None if weight is None else torch.zeros_like(weight)
        return dx, dw
    block_m, block_n, num_warps = _block_shape(N)
    programs = min(num_programs_hint(x2d.device), triton.cdiv(M, block_m))
    rows_per_program = triton.cdiv(triton.cdiv(M, programs), block_m) * block_m
    programs = triton.cdiv(M, rows_per_program)
    partial = None
    if weight is not None:
        partial = torch.empty(programs, N, dtype=torch.float32, device=x2d.device)
    _rms_norm_bwd_kernel[(programs,)](
        x2d, weight if weight is not None else x2d, dy, rstd, dx,
        partial if partial is not None else rstd,
        M, N, x2d.stride(0), dy.stride(0), dx.stride(0), rows_per_program,
        HAS_WEIGHT=weight is not None, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )  # fmt: skip
    dw = None if partial is None else partial.sum(0).to(weight.dtype)
    return dx, dw
