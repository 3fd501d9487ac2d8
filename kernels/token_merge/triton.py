"""ToMe Triton kernels (forward only) and their launchers.

Matching runs three small kernels, none of which materialises the ``(B, n_a, n_b)`` scores:

1. ``_match_kernel`` (grid ``(B, a-tiles)``): cosine similarity of a tile of ``a`` tokens against every
   ``b`` token (``tl.dot`` in fp32 IEEE, norms computed on the fly), keeping the running row max and its
   first argmax -> ``node_max`` fp32, ``node_idx`` int32 ``(B, n_a)``.
2. ``_select_kernel`` (grid ``(B, a-tiles)``): the rank of every ``a`` token in the order (score
   descending, index ascending) by counting, so ``is_src = rank < r`` is exactly the first ``r`` of a
   stable descending argsort; the order is total (scores are never NaN), so exactly ``r`` tokens merge.
3. ``_plan_kernel`` (grid ``(B, tiles)``): by counting over the sources, every token's output index
   (``merge_map``) and its slot in the output-grouped token list (``indptr`` / ``indices``, the CSR
   form of ``merge_map`` whose groups keep input order).

The merge, ``_merge_kernel`` (grid ``(B, output tiles, D tiles)``), gathers each output's group through
the CSR lists and writes ``sum(x * s) / sum(s)`` and ``sum(s)``: no atomics, deterministic, and the
sum runs in input order (as a sequential ``scatter_add``), in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tile sizes (powers of two, >= 16 where they feed tl.dot). Not autotuned; chosen for ViT shapes
# (L ~ 200, head dim 64, D 768).
MATCH_BLOCK_A, MATCH_BLOCK_B, MATCH_MAX_BLOCK_C = 64, 64, 64
SELECT_BLOCK_I, SELECT_BLOCK_J = 64, 64
PLAN_BLOCK_T, PLAN_BLOCK_J = 64, 32
MERGE_BLOCK_O, MERGE_MAX_BLOCK_D = 16, 256


@triton.jit
def _match_kernel(
    M, NODE_MAX, NODE_IDX,
    n_a, n_b, C, P, stride_mb, stride_ml, stride_mc,
    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    ia = tl.program_id(1) * BLOCK_A + tl.arange(0, BLOCK_A)  # (BLOCK_A,) a-token index
    a_mask = ia < n_a
    base = M + bid * stride_mb
    a_rows = (P + 2 * ia).to(tl.int64) * stride_ml
    ssa = tl.zeros((BLOCK_A,), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        am = a_mask[:, None] & (cc < C)[None, :]
        av = tl.load(base + a_rows[:, None] + cc[None, :] * stride_mc, mask=am, other=0.0).to(tl.float32)
        ssa += tl.sum(av * av, axis=1)
    inv_a = 1.0 / tl.maximum(tl.sqrt(ssa), 1e-12)
    best = tl.full((BLOCK_A,), float("-inf"), dtype=tl.float32)
    best_idx = tl.zeros((BLOCK_A,), dtype=tl.int32)
    for j0 in range(0, n_b, BLOCK_B):
        jb = j0 + tl.arange(0, BLOCK_B)  # (BLOCK_B,) b-token index
        b_mask = jb < n_b
        b_rows = (P + 1 + 2 * jb).to(tl.int64) * stride_ml
        dot = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.float32)
        ssb = tl.zeros((BLOCK_B,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            c_mask = (cc < C)[None, :]
            av = tl.load(base + a_rows[:, None] + cc[None, :] * stride_mc, mask=a_mask[:, None] & c_mask, other=0.0)
            bv = tl.load(base + b_rows[:, None] + cc[None, :] * stride_mc, mask=b_mask[:, None] & c_mask, other=0.0)
            av, bv = av.to(tl.float32), bv.to(tl.float32)
            dot += tl.dot(av, tl.trans(bv), input_precision="ieee")  # (BLOCK_A, BLOCK_B)
            ssb += tl.sum(bv * bv, axis=1)
        inv_b = 1.0 / tl.maximum(tl.sqrt(ssb), 1e-12)
        score = dot * inv_a[:, None] * inv_b[None, :]
        score = tl.where(b_mask[None, :], score, float("-inf"))
        tile_max = tl.max(score, axis=1)
        tile_idx = tl.argmax(score, axis=1, tie_break_left=True).to(tl.int32) + j0
        better = tile_max > best  # strict: the first maximum wins; NaN never replaces
        best = tl.where(better, tile_max, best)
        best_idx = tl.where(better, tile_idx, best_idx)
    out = bid * n_a + ia
    tl.store(NODE_MAX + out, best, mask=a_mask)
    tl.store(NODE_IDX + out, best_idx, mask=a_mask)


@triton.jit
def _select_kernel(NODE_MAX, IS_SRC, n_a, r, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    bid = tl.program_id(0).to(tl.int64)
    ii = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    i_mask = ii < n_a
    row = NODE_MAX + bid * n_a
    si = tl.load(row + ii, mask=i_mask, other=float("-inf"))
    rank = tl.zeros((BLOCK_I,), dtype=tl.int32)
    for j0 in range(0, n_a, BLOCK_J):
        jj = j0 + tl.arange(0, BLOCK_J)
        j_mask = jj < n_a
        sj = tl.load(row + jj, mask=j_mask, other=float("-inf"))
        # j comes before i in (score descending, index ascending)
        ahead = (sj[None, :] > si[:, None]) | ((sj[None, :] == si[:, None]) & (jj[None, :] < ii[:, None]))
        rank += tl.sum((ahead & j_mask[None, :]).to(tl.int32), axis=1)
    tl.store(IS_SRC + bid * n_a + ii, (rank < r).to(tl.int8), mask=i_mask)


@triton.jit
def _plan_kernel(
    NODE_IDX, IS_SRC, MERGE_MAP, INDPTR, INDICES,
    L, P, n_a, n_b, n_unm, out_len,
    HAS_SRC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)  # prefix, a-token and b-token index at once
    mmap = MERGE_MAP + bid * L
    inds = INDICES + bid * L
    ptr = INDPTR + bid * (out_len + 1)
    # prefix tokens map to themselves; the last indptr entry is L
    p_mask = t < P
    tl.store(mmap + t, t.to(tl.int64), mask=p_mask)
    tl.store(inds + t, t, mask=p_mask)
    tl.store(ptr + t, t, mask=p_mask)
    tl.store(ptr + out_len + t, L + t, mask=t == 0)
    a_mask = t < n_a
    b_mask = t < n_b
    if HAS_SRC:
        src = tl.load(IS_SRC + bid * n_a + t, mask=a_mask, other=0) != 0
        dst = tl.load(NODE_IDX + bid * n_a + t, mask=a_mask, other=0)
    else:
        src = t < 0
        dst = t * 0
    src_before = tl.zeros((BLOCK_T,), dtype=tl.int32)  # a: sources with a lower index
    dst_lower = tl.zeros((BLOCK_T,), dtype=tl.int32)  # a source: sources into a lower b token
    same_before = tl.zeros((BLOCK_T,), dtype=tl.int32)  # a source: sources into its b token, lower index
    b_lower = tl.zeros((BLOCK_T,), dtype=tl.int32)  # b: sources into a lower b token
    b_same_le = tl.zeros((BLOCK_T,), dtype=tl.int32)  # b: its sources whose input position is before it
    if HAS_SRC:
        row_src, row_dst = IS_SRC + bid * n_a, NODE_IDX + bid * n_a
        for j0 in range(0, n_a, BLOCK_J):
            jj = j0 + tl.arange(0, BLOCK_J)
            j_mask = jj < n_a
            sj = (tl.load(row_src + jj, mask=j_mask, other=0) != 0)[None, :]
            dj = tl.load(row_dst + jj, mask=j_mask, other=0)[None, :]
            lower = jj[None, :] < t[:, None]
            src_before += tl.sum((sj & lower).to(tl.int32), axis=1)
            dst_lower += tl.sum((sj & (dj < dst[:, None])).to(tl.int32), axis=1)
            same_before += tl.sum((sj & (dj == dst[:, None]) & lower).to(tl.int32), axis=1)
            b_lower += tl.sum((sj & (dj < t[:, None])).to(tl.int32), axis=1)
            b_same_le += tl.sum((sj & (dj == t[:, None]) & (jj[None, :] <= t[:, None])).to(tl.int32), axis=1)
    # a tokens (input position P + 2i): kept ones in input order after the prefix; sources into their b group,
    # where b token j (input position P + 1 + 2j) comes before a token i exactly when j < i
    a_in = P + 2 * t
    kept = P + t - src_before
    src_out = P + n_unm + dst
    src_slot = src_out + dst_lower + same_before + (dst < t).to(tl.int32)
    tl.store(mmap + a_in, tl.where(src, src_out, kept).to(tl.int64), mask=a_mask)
    tl.store(inds + tl.where(src, src_slot, kept), a_in, mask=a_mask)
    tl.store(ptr + kept, kept, mask=a_mask & ~src)
    # b tokens: output P + n_unm + j, group start after the earlier groups
    b_in = P + 1 + 2 * t
    b_out = P + n_unm + t
    start = b_out + b_lower
    tl.store(mmap + b_in, b_out.to(tl.int64), mask=b_mask)
    tl.store(ptr + b_out, start, mask=b_mask)
    tl.store(inds + start + b_same_le, b_in, mask=b_mask)


@triton.jit
def _merge_kernel(
    X, S, INDPTR, INDICES, OUT, S_OUT,
    L, D, out_len, stride_xb, stride_xl, stride_xd, stride_sb, stride_sl,
    HAS_SIZES: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    bid = tl.program_id(0).to(tl.int64)
    o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)  # (BLOCK_O,) output tokens
    pid_d = tl.program_id(2)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,) channels
    o_mask = o < out_len
    d_mask = d < D
    ptr = INDPTR + bid * (out_len + 1)
    start = tl.load(ptr + o, mask=o_mask, other=0)
    count = tl.load(ptr + o + 1, mask=o_mask, other=0) - start
    acc = tl.zeros((BLOCK_O, BLOCK_D), dtype=tl.float32)
    total = tl.zeros((BLOCK_O,), dtype=tl.float32)
    x_row = X + bid * stride_xb
    for k in range(0, tl.max(count, axis=0)):
        valid = k < count
        tok = tl.load(INDICES + bid * L + start + k, mask=valid, other=0).to(tl.int64)  # (BLOCK_O,)
        if HAS_SIZES:
            s = tl.load(S + bid * stride_sb + tok * stride_sl, mask=valid, other=0.0).to(tl.float32)
        else:
            s = valid.to(tl.float32)
        xm = valid[:, None] & d_mask[None, :]
        xv = tl.load(x_row + tok[:, None] * stride_xl + d[None, :] * stride_xd, mask=xm, other=0.0)
        acc += xv.to(tl.float32) * s[:, None]
        total += s
    out = acc / tl.where(o_mask, total, 1.0)[:, None]
    out_ptr = OUT + (bid * out_len + o.to(tl.int64))[:, None] * D + d[None, :]
    tl.store(out_ptr, out.to(OUT.dtype.element_ty), mask=o_mask[:, None] & d_mask[None, :])
    tl.store(S_OUT + bid * out_len + o, total, mask=o_mask & (pid_d == 0))


def _pow2_at_least_16(n: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(max(n, 1))))


def bipartite_match(metric: torch.Tensor, r: int, num_prefix_tokens: int) -> tuple[torch.Tensor, ...]:
    """Launch the matching on ``metric`` ``(B, L, C)`` (any strides) with ``r`` already clipped.

    Returns:
        ``(merge_map, indptr, indices)``: int64 ``(B, L)``, int32 ``(B, L - r + 1)``, int32 ``(B, L)``.
    """
    B, L, C = metric.shape
    P = num_prefix_tokens
    n_a, n_b = (L - P + 1) // 2, (L - P) // 2
    out_len = L - r
    device = metric.device
    merge_map = torch.empty(B, L, dtype=torch.int64, device=device)
    indptr = torch.empty(B, out_len + 1, dtype=torch.int32, device=device)
    indices = torch.empty(B, L, dtype=torch.int32, device=device)
    if B == 0:
        return merge_map, indptr, indices
    node_idx = is_src = merge_map  # placeholders, unread when r == 0
    if r > 0:
        node_max = torch.empty(B, n_a, dtype=torch.float32, device=device)
        node_idx = torch.empty(B, n_a, dtype=torch.int32, device=device)
        is_src = torch.empty(B, n_a, dtype=torch.int8, device=device)
        block_c = _pow2_at_least_16(C, MATCH_MAX_BLOCK_C)
        _match_kernel[(B, triton.cdiv(n_a, MATCH_BLOCK_A))](
            metric, node_max, node_idx,
            n_a, n_b, C, P, metric.stride(0), metric.stride(1), metric.stride(2),
            BLOCK_A=MATCH_BLOCK_A, BLOCK_B=MATCH_BLOCK_B, BLOCK_C=block_c, num_warps=4,
        )  # fmt: skip
        _select_kernel[(B, triton.cdiv(n_a, SELECT_BLOCK_I))](
            node_max, is_src, n_a, r, BLOCK_I=SELECT_BLOCK_I, BLOCK_J=SELECT_BLOCK_J, num_warps=4
        )
    tiles = triton.cdiv(max(n_a, P, 1), PLAN_BLOCK_T)
    _plan_kernel[(B, tiles)](
        node_idx, is_src, merge_map, indptr, indices,
        L, P, n_a, n_b, n_a - r, out_len,
        HAS_SRC=r > 0, BLOCK_T=PLAN_BLOCK_T, BLOCK_J=PLAN_BLOCK_J, num_warps=4,
    )  # fmt: skip
    return merge_map, indptr, indices


def merge_weighted(
    x: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, sizes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the merge on ``x`` ``(B, L, D)`` (any strides) and ``sizes`` ``(B, L)`` or ``None``.

    Returns:
        ``(x', sizes')``: ``(B, L', D)`` contiguous in ``x``'s dtype and fp32 ``(B, L')``.
    """
    B, L, D = x.shape
    out_len = indptr.shape[1] - 1
    out = torch.empty(B, out_len, D, dtype=x.dtype, device=x.device)
    out_sizes = torch.empty(B, out_len, dtype=torch.float32, device=x.device)
    if B == 0 or out_len == 0:
        return out, out_sizes
    block_d = _pow2_at_least_16(D, MERGE_MAX_BLOCK_D)
    grid = (B, triton.cdiv(out_len, MERGE_BLOCK_O), triton.cdiv(D, block_d))
    _merge_kernel[grid](
        x, sizes if sizes is not None else x, indptr, indices, out, out_sizes,
        L, D, out_len, x.stride(0), x.stride(1), x.stride(2),
        sizes.stride(0) if sizes is not None else 0, sizes.stride(1) if sizes is not None else 0,
        HAS_SIZES=sizes is not None, BLOCK_O=MERGE_BLOCK_O, BLOCK_D=block_d, num_warps=4,
    )  # fmt: skip
    return out, out_sizes
