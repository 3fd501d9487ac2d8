"""Split-KV decode ("flash decoding") for ``flash_attn_with_kvcache``: kernels and launcher.

The rows of a program are the ``G * Lq`` (query head, query) pairs that share one KV head, so each
key block is read once per group; the visible key range of a batch element (its own cache length) is
split into ``num_splits`` chunks that run in parallel, and a combine kernel merges the chunks by
their log-sum-exps. Rows that see no key get ``out = 0`` and ``lse = -inf``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from longseq.kernels.flash_attn.tiles import (
    LOG2E,
    attend_tiles,
    finish_rows,
    load_tile,
    mask_params,
    seq_ptr,
    store_tile,
)
from longseq.kernels.flash_attn.triton import check_grid
from longseq.kernels.flash_attn.tuning import block_d_for, dot_precision, launcher


@triton.jit(
    do_not_specialize=[
        "seqlen_q",
        "G",
        "H_KV",
        "window_left",
        "window_right",
        "stride_slope_b",
        "stride_lb",
        "stride_lh",
    ]
)
def _decode_kernel(
    Q, K, V, SEQLENS_K, SLOPES, O, LSE,
    stride_qb, stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_os, stride_ob, stride_ot, stride_oh, stride_ls, stride_lb, stride_lh, stride_slope_b,
    seqlen_q, H_KV, G, sm_scale, softcap, window_left, window_right,
    D: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PREC: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, ALIBI: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One (row tile, split, batch x KV head): rows are the ``G * Lq`` (query head, query) pairs of a
    KV head; keys are the split's chunk of the visible range. Writes normalised partial outputs and
    their log-sum-exps (``-inf``/zeros for an empty chunk), or the final ones when there is one split."""
    EVEN_D: tl.constexpr = D == BLOCK_D
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    num_splits = tl.num_programs(1)
    b = tl.program_id(2) // H_KV
    kv_h = tl.program_id(2) % H_KV
    Lq = seqlen_q
    Lk = tl.load(SEQLENS_K + b)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) flattened (head in group, query)
    row_ok = rows < G * Lq
    qi = tl.where(row_ok, rows % Lq, 0)
    h = kv_h * G + tl.where(row_ok, rows // Lq, 0)  # (BLOCK_M,) query head of each row
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_off = qi[:, None].to(tl.int64) * stride_qt + h[:, None].to(tl.int64) * stride_qh
    Q = seq_ptr(Q, b, 0, 0, stride_qb, 0, 0)
    q = load_tile(Q + q_off + offs_d[None, :], rows, G * Lq, offs_d, D, True, EVEN_D)  # (BLOCK_M, BLOCK_D)
    K = seq_ptr(K, b, 0, kv_h, stride_kb, 0, stride_kh)
    V = seq_ptr(V, b, 0, kv_h, stride_vb, 0, stride_vh)

    diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out = mask_params(
        Lq, Lk, window_left, window_right, sm_scale, softcap
    )  # fmt: skip
    slope2 = tl.zeros([BLOCK_M, 1], dtype=tl.float32)
    if ALIBI:  # one slope per row: rows belong to different query heads
        slope = tl.load(SLOPES + b * stride_slope_b + h, mask=row_ok, other=0.0).to(tl.float32)
        slope2 = -slope[:, None] * LOG2E
    # Key range visible from any row of the tile, then this split's share of it.
    q_min = tl.min(tl.where(row_ok, qi, Lq), 0)
    q_max = tl.max(tl.where(row_ok, qi, 0), 0)
    lo = q_min * 0
    hi = q_min * 0 + Lk
    if HAS_LEFT:
        lo = tl.maximum(q_min + lo_diag, 0)
        lo = (lo // BLOCK_N) * BLOCK_N
    if HAS_RIGHT:
        hi = tl.minimum(q_max + hi_diag + 1, Lk)
    hi = tl.maximum(hi, lo)
    per_split = tl.cdiv(tl.cdiv(hi - lo, BLOCK_N), num_splits) * BLOCK_N
    start = lo + split * per_split
    end = tl.minimum(start + per_split, hi)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc, m_i, l_i = attend_tiles(
        acc, m_i, l_i, q, K, V, stride_kt, stride_vt, start, end, qi, offs_n, offs_d,
        Lq, Lk, diag, lo_diag, hi_diag, qk_scale, cap_in, cap_out, slope2,
        D, EVEN_D, BLOCK_N, DOT_PREC, True, HAS_LEFT, HAS_RIGHT, SOFTCAP, ALIBI,
    )  # fmt: skip
    out, lse = finish_rows(acc, m_i, l_i)
    O = seq_ptr(O, split, b, 0, stride_os, stride_ob, 0)
    store_tile(
        O + qi[:, None] * stride_ot + h[:, None] * stride_oh + offs_d[None, :], out.to(O.dtype.element_ty),
        rows, G * Lq, offs_d, D, EVEN_D,
    )  # fmt: skip
    tl.store(seq_ptr(LSE, split, b, 0, stride_ls, stride_lb, 0) + h * stride_lh + qi, lse, mask=row_ok)


@triton.jit(do_not_specialize=["num_splits"])
def _decode_combine_kernel(
    OP, LSEP, O, LSE, num_splits,
    stride_ops, stride_opb, stride_opt, stride_oph, stride_ls, stride_lb, stride_lh,
    stride_ob, stride_ot, stride_oh, stride_lse_b, stride_lse_h,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    """Merge the splits of one (query, head, batch): weights ``exp(lse_s - max)``."""
    t = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < num_splits
    lse_s = tl.load(LSEP + offs_s * stride_ls + b * stride_lb + h * stride_lh + t, mask=s_ok, other=float("-inf"))
    m = tl.max(lse_s, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp(lse_s - m_safe)  # (BLOCK_S,) zero for empty splits
    w_sum = tl.sum(w, 0)
    o_ptrs = OP + offs_s[:, None] * stride_ops + b * stride_opb + t * stride_opt + h * stride_oph + offs_d[None, :]
    o_s = tl.load(o_ptrs, mask=s_ok[:, None] & (offs_d[None, :] < D), other=0.0)  # (BLOCK_S, BLOCK_D)
    out = tl.sum(w[:, None] * o_s, 0) / tl.where(w_sum == 0.0, 1.0, w_sum)
    lse = tl.where(w_sum == 0.0, float("-inf"), m_safe + tl.log(tl.where(w_sum == 0.0, 1.0, w_sum)))
    tl.store(O + b * stride_ob + t * stride_ot + h * stride_oh + offs_d, out.to(O.dtype.element_ty), mask=offs_d < D)
    tl.store(LSE + b * stride_lse_b + h * stride_lse_h + t, lse)


#: Most splits of the key range (as flash-attn's cap of 128): more only adds combine work.
MAX_SPLITS = 128


def num_splits_heuristic(batch_kv_tiles: int, seqlen_k: int, device: torch.device) -> int:
    """Splits of the key range so that ``batch_kv_tiles * splits`` programs fill the GPU about twice,
    keeping at least 256 keys per split (at most 64 splits)."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    else:
        sms = 2
    want = math.ceil(2 * sms / max(batch_kv_tiles, 1))
    return int(max(1, min(want, math.ceil(seqlen_k / 256), 64)))


def flash_attn_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seqlens_k: torch.Tensor,
    softmax_scale: float,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: torch.Tensor | None,
    num_splits: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split-KV forward of q ``(B, Lq, H, D)`` against a cache ``(B, L_cache, H_kv, D)`` whose batch
    element ``b`` holds ``seqlens_k[b]`` valid keys; returns ``out`` and ``lse`` ``(B, H, Lq)``.

    ``num_splits <= 0`` picks :func:`num_splits_heuristic`; at most :data:`MAX_SPLITS` are used.
    """
    B, Lq, H, D = q.shape
    H_kv = k_cache.shape[2]
    G = H // H_kv
    out = torch.empty_like(q)
    lse = torch.empty(B, H, Lq, device=q.device, dtype=torch.float32)
    if q.numel() == 0:
        return out, lse
    check_grid(B * H_kv)
    block_d = block_d_for(D)
    block_m = max(16, min(64 if block_d <= 128 else 32, triton.next_power_of_2(G * Lq)))
    m_tiles = triton.cdiv(G * Lq, block_m)
    if num_splits <= 0:
        num_splits = num_splits_heuristic(B * H_kv * m_tiles, k_cache.shape[1], q.device)
    num_splits = min(num_splits, MAX_SPLITS)  # a performance knob: the result does not depend on it
    split = num_splits > 1
    if split:
        o_part = torch.empty(num_splits, B, Lq, H, D, device=q.device, dtype=torch.float32)
        lse_part = torch.empty(num_splits, B, H, Lq, device=q.device, dtype=torch.float32)
        o_strides = [o_part.stride(0), o_part.stride(1), o_part.stride(2), o_part.stride(3)]
        l_strides = [lse_part.stride(0), lse_part.stride(1), lse_part.stride(2)]
        o_dst, l_dst = o_part, lse_part
    else:
        o_strides = [0, out.stride(0), out.stride(1), out.stride(2)]
        l_strides = [0, lse.stride(0), lse.stride(1)]
        o_dst, l_dst = out, lse
    slope_b = 0 if alibi_slopes is None or alibi_slopes.dim() == 1 else alibi_slopes.stride(0)
    kernel, meta = launcher("decode", _decode_kernel, block_d, q.dtype)
    kernel[(m_tiles, num_splits, B * H_kv)](
        q, k_cache, v_cache, seqlens_k, alibi_slopes if alibi_slopes is not None else q, o_dst, l_dst,
        q.stride(0), q.stride(1), q.stride(2), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), *o_strides, *l_strides, slope_b,
        Lq, H_kv, G, softmax_scale, softcap if softcap > 0 else 1.0, max(window_left, 0), max(window_right, 0),
        D=D, BLOCK_D=block_d, DOT_PREC=dot_precision(q.dtype), HAS_LEFT=window_left >= 0, HAS_RIGHT=window_right >= 0,
        SOFTCAP=softcap > 0, ALIBI=alibi_slopes is not None, BLOCK_M=block_m, **meta,
    )  # fmt: skip
    if split:
        _decode_combine_kernel[(Lq, H, B)](
            o_part, lse_part, out, lse, num_splits,
            *o_strides, *l_strides, out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
            D=D, BLOCK_D=block_d, BLOCK_S=max(2, triton.next_power_of_2(num_splits)),
        )  # fmt: skip
    return out, lse
