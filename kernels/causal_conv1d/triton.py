"""Depthwise causal conv1d Triton kernels and their launchers.

Forward: each program computes a ``(BLOCK_D, BLOCK_L)`` tile of the output; tap ``k`` is one masked
load of ``x`` shifted by ``W - 1 - k`` (the tile's neighbours stay in L1/L2, so HBM traffic is about
one read of ``x`` and one write of ``out``). Strides are free: ``x`` may be ``(B, D, L)`` contiguous
or channel-last (a transposed ``(B, L, D)``).

Backward: with ``g = dout * act'(pre)``, ``dx[s] = sum_k weight[k] * g[s + W - 1 - k]``,
``dweight[k] = sum_t g[t] * x[t - (W - 1) + k]`` and ``dbias = sum_t g[t]``. Each program walks a
contiguous range of ``L`` for one ``(batch, channel block)``, recomputing the pre-activation at the
``W`` shifted positions it needs (``W**2`` cached loads, no extra HBM pass), and writes one fp32
partial of ``dweight``/``dbias``; the partials are summed afterwards (deterministic, no atomics).

Update (decoding): one program per ``(batch, channel block)`` reads the state and the new tokens,
writes the outputs, then (after a barrier) shifts the state in place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longseq.kernels._common import num_programs_hint

#: Widest convolution the kernels unroll.
MAX_WIDTH = 8
#: Most new tokens one ``causal_conv1d_update`` call takes.
MAX_UPDATE_TOKENS = 256
#: Backward grid: about this many times :func:`num_programs_hint` programs (the H100 benchmark of the
#: old value 1, 192 programs of 4 warps at B=2, D=1536, ran 3x slower than cuDNN's conv1d backward).
BWD_PROGRAMS_PER_HINT = 16
#: Elements per backward tile. The backward holds ``W + 1`` recomputed pre-activation tiles at once: at
#: 4096 elements it spilled 3.1 KB per thread (ptxas, sm_90, W=4 with SiLU) and ran 3x slower than
#: cuDNN; at 512 (4 x 128, 4 warps) it spills nothing.
BWD_TILE = 512


@triton.jit
def _pre_activation(
    X, Wt, BIAS, SEQ, b, d, t, D, L,
    sxb, sxd, sxl, swd, swk, ssb, ssl,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr,
):  # fmt: skip
    """``bias + sum_k w_k x[t - (W-1) + k]`` for channels ``d`` ``(BD,)`` and times ``t`` ``(BL,)``."""
    d_mask = d < D
    t_ok = (t >= 0) & (t < L)
    if HAS_BIAS:
        acc = tl.load(BIAS + d, mask=d_mask, other=0.0).to(tl.float32)[:, None] + tl.zeros(
            (d.shape[0], t.shape[0]), tl.float32
        )
    else:
        acc = tl.zeros((d.shape[0], t.shape[0]), tl.float32)
    if HAS_SEQ:
        seq_t = tl.load(SEQ + b * ssb + t * ssl, mask=t_ok, other=-1)
    for k in tl.static_range(WIDTH):
        src = t - (WIDTH - 1) + k
        ok = t_ok & (src >= 0)
        if HAS_SEQ:
            seq_s = tl.load(SEQ + b * ssb + src * ssl, mask=ok, other=-2)
            ok = ok & (seq_s == seq_t)
        xv = tl.load(X + b * sxb + d[:, None] * sxd + src[None, :] * sxl, mask=d_mask[:, None] & ok[None, :], other=0.0)
        w = tl.load(Wt + d * swd + k * swk, mask=d_mask, other=0.0).to(tl.float32)
        acc += w[:, None] * xv.to(tl.float32)
    return acc


@triton.jit
def _conv_fwd_kernel(
    X, Wt, BIAS, SEQ, OUT,
    D, L, sxb, sxd, sxl, swd, swk, ssb, ssl, sob, sod, sol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    d = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    t = (tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)).to(tl.int64)
    y = _pre_activation(
        X, Wt, BIAS, SEQ, b, d, t, D, L, sxb, sxd, sxl, swd, swk, ssb, ssl, WIDTH, HAS_BIAS, HAS_SEQ
    )  # (BD, BL)
    if SILU:
        y = y * tl.sigmoid(y)
    mask = (d < D)[:, None] & (t < L)[None, :]
    tl.store(OUT + b * sob + d[:, None] * sod + t[None, :] * sol, y.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _grad_pre(
    X, Wt, BIAS, SEQ, DOUT, b, d, t, D, L,
    sxb, sxd, sxl, swd, swk, ssb, ssl, sgb, sgd, sgl,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr, SILU: tl.constexpr,
):  # fmt: skip
    """``dout * act'(pre)`` at times ``t`` (0 outside ``[0, L)``), fp32 ``(BD, BL)``."""
    mask = (d < D)[:, None] & ((t >= 0) & (t < L))[None, :]
    g = tl.load(DOUT + b * sgb + d[:, None] * sgd + t[None, :] * sgl, mask=mask, other=0.0).to(tl.float32)
    if SILU:
        pre = _pre_activation(
            X, Wt, BIAS, SEQ, b, d, t, D, L, sxb, sxd, sxl, swd, swk, ssb, ssl, WIDTH, HAS_BIAS, HAS_SEQ
        )
        sig = tl.sigmoid(pre)
        g = g * sig * (1.0 + pre * (1.0 - sig))
    return g


@triton.jit
def _conv_bwd_kernel(
    X, Wt, BIAS, SEQ, DOUT, DX, DW_PART, DB_PART,
    D, L, l_per_program,
    sxb, sxd, sxl, swd, swk, ssb, ssl, sgb, sgd, sgl, sdb, sdd, sdl,
    WIDTH: tl.constexpr, WIDTH_P2: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SEQ: tl.constexpr,
    SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    pid_l = tl.program_id(2)
    d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    d_mask = d < D
    taps = tl.arange(0, WIDTH_P2)
    dw = tl.zeros((BLOCK_D, WIDTH_P2), tl.float32)
    db = tl.zeros((BLOCK_D,), tl.float32)
    start = pid_l * l_per_program
    for off in range(0, l_per_program, BLOCK_L):
        s = (start + off + tl.arange(0, BLOCK_L)).to(tl.int64)  # (BL,) times of this tile
        s_ok = s < L
        if HAS_SEQ:
            seq_s = tl.load(SEQ + b * ssb + s * ssl, mask=s_ok, other=-1)
        # dweight, dbias: g at the tile's own times against x shifted back by W - 1 - k.
        g = _grad_pre(
            X, Wt, BIAS, SEQ, DOUT, b, d, s, D, L, sxb, sxd, sxl, swd, swk, ssb, ssl, sgb, sgd, sgl,
            WIDTH, HAS_BIAS, HAS_SEQ, SILU,
        )  # fmt: skip
        db += tl.sum(g, axis=1)
        dx = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
        for k in tl.static_range(WIDTH):
            shift = WIDTH - 1 - k
            src = s - shift
            ok = s_ok & (src >= 0)
            if HAS_SEQ:
                seq_src = tl.load(SEQ + b * ssb + src * ssl, mask=ok, other=-2)
                ok = ok & (seq_src == seq_s)
            xv = tl.load(
                X + b * sxb + d[:, None] * sxd + src[None, :] * sxl, mask=d_mask[:, None] & ok[None, :], other=0.0
            )
            part = tl.sum(g * xv.to(tl.float32), axis=1)  # (BD,)
            dw += tl.where(taps[None, :] == k, part[:, None], 0.0)
            # dx[s] += w_k * g[s + shift], for outputs of the same sequence.
            dst = s + shift
            ok2 = s_ok & (dst < L)
            if HAS_SEQ:
                seq_dst = tl.load(SEQ + b * ssb + dst * ssl, mask=ok2, other=-2)
                ok2 = ok2 & (seq_dst == seq_s)
            g_dst = _grad_pre(
                X, Wt, BIAS, SEQ, DOUT, b, d, dst, D, L, sxb, sxd, sxl, swd, swk, ssb, ssl, sgb, sgd, sgl,
                WIDTH, HAS_BIAS, HAS_SEQ, SILU,
            )  # fmt: skip
            w = tl.load(Wt + d * swd + k * swk, mask=d_mask, other=0.0).to(tl.float32)
            dx += tl.where(ok2[None, :], w[:, None] * g_dst, 0.0)
        mask = d_mask[:, None] & s_ok[None, :]
        tl.store(DX + b * sdb + d[:, None] * sdd + s[None, :] * sdl, dx.to(DX.dtype.element_ty), mask=mask)
    part_row = (b * tl.num_programs(2) + pid_l) * D
    tl.store(
        DW_PART + (part_row + d[:, None]) * WIDTH + taps[None, :], dw, mask=d_mask[:, None] & (taps < WIDTH)[None, :]
    )
    if HAS_BIAS:
        tl.store(DB_PART + part_row + d, db, mask=d_mask)


@triton.jit
def _conv_update_kernel(
    X, STATE, Wt, BIAS, OUT,
    D, S, LNEW, sxb, sxd, sxl, stb, std, sts, swd, swk, sob, sod, sol,
    WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    # The sequence is cat(state (S), x (LNEW)); position p < S reads the state, p >= S reads x.
    b = tl.program_id(0).to(tl.int64)
    d = (tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    d_mask = d < D
    t = tl.arange(0, BLOCK_T)  # new-token index
    t_ok = t < LNEW
    if HAS_BIAS:
        acc = tl.load(BIAS + d, mask=d_mask, other=0.0).to(tl.float32)[:, None] + tl.zeros(
            (BLOCK_D, BLOCK_T), tl.float32
        )
    else:
        acc = tl.zeros((BLOCK_D, BLOCK_T), tl.float32)
    for k in tl.static_range(WIDTH):
        p = S + t - (WIDTH - 1) + k  # >= 0 because S >= W - 1
        from_state = p < S
        m_state = d_mask[:, None] & (t_ok & from_state)[None, :]
        m_x = d_mask[:, None] & (t_ok & (p >= S))[None, :]
        xs = tl.load(STATE + b * stb + d[:, None] * std + p[None, :] * sts, mask=m_state, other=0.0).to(tl.float32)
        xn = tl.load(X + b * sxb + d[:, None] * sxd + (p - S)[None, :] * sxl, mask=m_x, other=0.0).to(tl.float32)
        w = tl.load(Wt + d * swd + k * swk, mask=d_mask, other=0.0).to(tl.float32)
        acc += w[:, None] * (xs + xn)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(
        OUT + b * sob + d[:, None] * sod + t[None, :] * sol,
        acc.to(OUT.dtype.element_ty),
        mask=d_mask[:, None] & t_ok[None, :],
    )
    # New state j = old sequence position LNEW + j.
    j = tl.arange(0, BLOCK_S)
    q = LNEW + j
    j_ok = j < S
    m_state = d_mask[:, None] & (j_ok & (q < S))[None, :]
    m_x = d_mask[:, None] & (j_ok & (q >= S))[None, :]
    ns = tl.load(STATE + b * stb + d[:, None] * std + q[None, :] * sts, mask=m_state, other=0.0)
    nx = tl.load(X + b * sxb + d[:, None] * sxd + (q - S)[None, :] * sxl, mask=m_x, other=0.0)
    new_state = tl.where(m_state, ns, nx.to(ns.dtype))
    tl.debug_barrier()  # every thread has read the old state before any thread overwrites it
    tl.store(STATE + b * stb + d[:, None] * std + j[None, :] * sts, new_state, mask=d_mask[:, None] & j_ok[None, :])


def empty_like_layout(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``(B, D, L)`` tensor laid out like ``x``: channel-last (a transposed
    contiguous ``(B, L, D)``) when ``x`` has unit channel stride, else contiguous. Slices such as
    Mamba-2's ``xBC`` view keep a channel-last output, so the layer after needs no copy."""
    B, D, L = x.shape
    if x.stride(1) == 1 and L > 1 and D > 1:
        return torch.empty(B, L, D, dtype=x.dtype, device=x.device).transpose(1, 2)
    return torch.empty(B, D, L, dtype=x.dtype, device=x.device)


def _blocks(x: torch.Tensor, elements: int = 4096) -> tuple[int, int]:
    """``(BLOCK_D, BLOCK_L)`` of about ``elements``, long along the contiguous axis of ``x``."""
    _B, D, L = x.shape
    if x.stride(1) == 1 and D > 1:  # channel-last: contiguous along D
        block_d = min(128, triton.next_power_of_2(D))
        return block_d, min(triton.next_power_of_2(max(L, 1)), max(4, elements // block_d))
    block_l = min(128, triton.next_power_of_2(max(L, 1)))
    return min(triton.next_power_of_2(max(D, 1)), max(4, elements // block_l)), block_l


def _seq_strides(seq_idx: torch.Tensor | None) -> tuple[int, int]:
    return (0, 0) if seq_idx is None else (seq_idx.stride(0), seq_idx.stride(1))


def causal_conv1d_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, seq_idx: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """Launch the forward on ``x`` ``(B, D, L)`` (any strides); ``out`` as :func:`empty_like_layout`."""
    B, D, L = x.shape
    out = empty_like_layout(x)
    if out.numel() == 0:
        return out
    block_d, block_l = _blocks(x)
    grid = (B, triton.cdiv(D, block_d), triton.cdiv(L, block_l))
    _conv_fwd_kernel[grid](
        x, weight, bias if bias is not None else weight, seq_idx if seq_idx is not None else x, out,
        D, L, *x.stride(), *weight.stride(), *_seq_strides(seq_idx), *out.stride(),
        WIDTH=weight.shape[1], HAS_BIAS=bias is not None, HAS_SEQ=seq_idx is not None, SILU=silu,
        BLOCK_D=block_d, BLOCK_L=block_l, num_warps=4,
    )  # fmt: skip
    return out


def causal_conv1d_bwd(
    dout: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    silu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launch the backward; returns ``(dx, dweight, dbias)`` (``dbias`` ``None`` without a bias)."""
    B, D, L = x.shape
    W = weight.shape[1]
    dx = empty_like_layout(x)
    if x.numel() == 0:
        return dx, torch.zeros_like(weight), None if bias is None else torch.zeros_like(bias)
    block_d, block_l = _blocks(x, BWD_TILE)
    d_blocks = triton.cdiv(D, block_d)
    # Enough programs to keep every SM busy (each walks a serial range of L): the partials of dweight
    # cost ``B * splits * D * W`` floats, a small price against a grid that leaves SMs idle.
    target = BWD_PROGRAMS_PER_HINT * num_programs_hint(x.device)
    splits = max(1, min(triton.cdiv(L, block_l), target // max(1, B * d_blocks)))
    l_per_program = triton.cdiv(triton.cdiv(L, splits), block_l) * block_l
    splits = triton.cdiv(L, l_per_program)
    dw_part = torch.empty(B * splits, D, W, dtype=torch.float32, device=x.device)
    db_part = torch.empty(B * splits, D, dtype=torch.float32, device=x.device) if bias is not None else None
    _conv_bwd_kernel[(B, d_blocks, splits)](
        x, weight, bias if bias is not None else weight, seq_idx if seq_idx is not None else x, dout, dx,
        dw_part, db_part if db_part is not None else dw_part,
        D, L, l_per_program,
        *x.stride(), *weight.stride(), *_seq_strides(seq_idx), *dout.stride(), *dx.stride(),
        WIDTH=W, WIDTH_P2=triton.next_power_of_2(W), HAS_BIAS=bias is not None, HAS_SEQ=seq_idx is not None,
        SILU=silu, BLOCK_D=block_d, BLOCK_L=block_l, num_warps=4,
    )  # fmt: skip
    dw = dw_part.sum(0).to(weight.dtype)
    db = None if db_part is None else db_part.sum(0).to(bias.dtype)
    return dx, dw, db


def causal_conv1d_update(
    x3: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """Launch the decoding update on ``x3`` ``(B, D, Lnew)``; mutates ``conv_state`` ``(B, D, S)``."""
    B, D, Lnew = x3.shape
    S = conv_state.shape[-1]
    out = torch.empty_like(x3)
    if out.numel() == 0:
        return out
    block_t = triton.next_power_of_2(Lnew)
    block_s = triton.next_power_of_2(max(S, 1))
    block_d = min(triton.next_power_of_2(D), max(1, 2048 // max(block_t, block_s)), 64)
    _conv_update_kernel[(B, triton.cdiv(D, block_d))](
        x3, conv_state, weight, bias if bias is not None else weight, out,
        D, S, Lnew, *x3.stride(), *conv_state.stride(), *weight.stride(), *out.stride(),
        WIDTH=weight.shape[1], HAS_BIAS=bias is not None, SILU=silu,
        BLOCK_D=block_d, BLOCK_T=block_t, BLOCK_S=block_s, num_warps=4,
    )  # fmt: skip
    return out
