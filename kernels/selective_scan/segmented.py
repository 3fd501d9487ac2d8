"""An alternative selective-scan forward: channels on lanes, the sequence split into segments.

The default forward (``FWD_IMPL`` in ``kernels/selective_scan/triton.py``): on an H200 at B=2, D=1536,
N=16, L=8K (bf16, no grad) it takes 0.46 ms at these knobs against the chunked kernel's 1.30 ms
(``scripts/kernel_sweep.py scan``, ``benchmarks/results/sweep_scan-h200.jsonl``); on an H100, saving the
backward's states too, 0.50 ms (``sweep_scan-h100.jsonl``, rows ``fwd-train``; 8 tokens per thread spill a
little then, ``scripts/scan_layout_probe.py``, and are still the fastest). Why it exists: the default kernel tiles
``(channel, state, token)`` and Triton puts lanes on the token axis, so every step of its chunk scan and
the sum over states shuffle between lanes. Tiled ``(token, state, channel)`` as here, the lanes hold
channels and a chunk of ``LANE_CHUNK`` tokens is scanned inside each thread (``scripts/scan_layout_probe.py``:
0 shuffles against 548-3656 per chunk body). One lane per channel leaves only ``batch * D / BLOCK_D``
programs, so the sequence is cut into ``S`` segments:

1. every segment runs the recurrence from a zero state and writes its end state and the product of its
   decays (``_seg_kernel`` with ``WRITE_Y=False``);
2. one pass over the segments in order gives each its true entering state (``_combine_kernel``:
   ``h_in[s + 1] = prod[s] * h_in[s] + end[s]``; a sequence reset inside a segment makes ``prod`` 0);
3. every segment runs again from its entering state and writes ``y``, the gated output, and the states
   the backward needs at its chunk boundaries (``_seg_kernel`` with ``WRITE_Y=True``).

Steps 1-2 are skipped when one segment suffices. The outputs (``out``, ``last_state``, per-chunk states)
are exactly those of :func:`~longseq.kernels.selective_scan.triton.selective_scan_fwd`, so the backward
is shared.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from longseq.kernels._common import interpreting, num_programs_hint
from longseq.kernels.selective_scan.triton import LOG2E, _reset_mask, _softplus, fit_group, linear_scan

#: Tokens scanned inside one thread per step, channels per program (lanes), warps per program.
LANE_CHUNK, LANE_BLOCK_D, LANE_WARPS = 8, 32, 1
#: Aim for this many programs per SM-slot hint when choosing the number of segments.
PROGRAMS_PER_HINT = 8


@triton.jit
def _load_tc(X, off, d, t, s_d, s_t, mask):
    """A ``(CH, BD)`` fp32 tile of a ``(batch, D, L)`` tensor: tokens ``t`` of channels ``d``."""
    return tl.load(X + off + d[None, :] * s_d + t[:, None] * s_t, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_bc(P, off_b, grp, d, n, t, nd_mask, tn_mask, s0, s1, s2, s3, VAR: tl.constexpr):
    """``B`` or ``C`` as ``(CH, BN, 1)`` (per token, group ``grp``) or ``(1, BN, BD)`` (per channel)."""
    if VAR:
        v = tl.load(P + off_b + grp * s1 + n[None, :] * s2 + t[:, None] * s3, mask=tn_mask, other=0.0)
        return v.to(tl.float32)[:, :, None]
    else:
        v = tl.load(P + d[None, :] * s0 + n[:, None] * s1, mask=nd_mask, other=0.0)
        return v.to(tl.float32)[None, :, :]


@triton.jit
def lane_tile(DIM, N, g_size, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CH: tl.constexpr):
    """The program's place in the ``(batch, channel block, segment)`` grid and its index vectors, shared by
    the segmented forward and backward: ``(pid_b, pid_s, d, n, tt, d_mask, n_mask, nd_mask, grp)`` with the
    channels ``d`` on lanes, states ``n``, the ``CH`` in-thread tokens ``tt`` and the B/C group ``grp``."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    d = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)  # (BD,) on lanes
    n = tl.arange(0, BLOCK_N)
    d_mask, n_mask = d < DIM, n < N
    nd_mask = n_mask[:, None] & d_mask[None, :]  # (BN, BD)
    grp = (pid_d * BLOCK_D) // g_size
    return pid_b, tl.program_id(2), d, n, tl.arange(0, CH).to(tl.int64), d_mask, n_mask, nd_mask, grp


@triton.jit
def _seg_kernel(
    U, DELTA, A, Bp, Cp, Dp, Z, DBIAS, HIN, SEQ,
    OUT, HEND, PROD, STATES,
    DIM, L, N, g_size, seg_len, n_segs, n_chunks,
    s_ub, s_ud, s_ul, s_db, s_dd, s_dl, s_zb, s_zd, s_zl, s_ob, s_od, s_ol,
    s_ad, s_an, sB0, sB1, sB2, sB3, sC0, sC1, sC2, sC3, s_sb, s_sl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DBIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_HIN: tl.constexpr, HAS_SEQ: tl.constexpr, VAR_B: tl.constexpr, VAR_C: tl.constexpr,
    WRITE_Y: tl.constexpr, SAVE_STATES: tl.constexpr, STORE_END: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CH: tl.constexpr, STATE_CHUNK: tl.constexpr,
    INTERPRET: tl.constexpr,
):  # fmt: skip
    pid_b, pid_s, d, n, tt, d_mask, n_mask, nd_mask, grp = lane_tile(DIM, N, g_size, BLOCK_D, BLOCK_N, CH)
    A2 = tl.load(A + d[None, :] * s_ad + n[:, None] * s_an, mask=nd_mask, other=0.0).to(tl.float32) * LOG2E
    if HAS_DBIAS:
        bias = tl.load(DBIAS + d, mask=d_mask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(Dp + d, mask=d_mask, other=0.0).to(tl.float32)
    seg_off = ((pid_b * n_segs + pid_s) * DIM + d[None, :]) * N + n[:, None]  # (BN, BD) in (B, S, D, N)
    if HAS_HIN:
        h = tl.load(HIN + seg_off, mask=nd_mask, other=0.0)
    else:
        h = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    prod = tl.full((BLOCK_N, BLOCK_D), 1.0, tl.float32)
    t_start = pid_s * seg_len
    t_end = tl.minimum(t_start + seg_len, L)
    # Segments start on the backward's chunk borders: the outer loop walks those chunks (storing the state
    # entering each, no branch inside the token loop), the inner one CH tokens at a time.
    for c0 in range(t_start, t_end, STATE_CHUNK):
        if SAVE_STATES:  # the state entering the backward's chunk c0 // STATE_CHUNK
            chunk_off = ((pid_b * n_chunks + c0 // STATE_CHUNK) * DIM + d[None, :]) * N + n[:, None]
            tl.store(STATES + chunk_off, h, mask=nd_mask)
        for c in range(c0, c0 + STATE_CHUNK, CH):
            t = c + tt  # (CH,)
            t_mask = t < t_end
            mask = t_mask[:, None] & d_mask[None, :]  # (CH, BD)
            tn_mask = t_mask[:, None] & n_mask[None, :]  # (CH, BN)
            u = _load_tc(U, pid_b * s_ub, d, t, s_ud, s_ul, mask)
            dt = _load_tc(DELTA, pid_b * s_db, d, t, s_dd, s_dl, mask)
            if HAS_DBIAS:
                dt += bias[None, :]
            if SOFTPLUS:
                dt = _softplus(dt)
            dt = tl.where(mask, dt, 0.0)
            a = tl.exp2(dt[:, None, :] * A2[None, :, :])  # (CH, BN, BD)
            if HAS_SEQ:  # up to the segment's end: tail tokens past it keep a = 1 (the state carries through)
                a = tl.where(_reset_mask(SEQ, pid_b * s_sb, t, t_end, s_sl)[:, None, None], 0.0, a)
            Bv = _load_bc(Bp, pid_b * sB0, grp, d, n, t, nd_mask, tn_mask, sB0, sB1, sB2, sB3, VAR_B)
            ac, hs = linear_scan(a, (dt * u)[:, None, :] * Bv, CH, False, INTERPRET, 0)
            hs += ac * h[None, :, :]  # (CH, BN, BD): the state after every token of the step
            if WRITE_Y:
                Cv = _load_bc(Cp, pid_b * sC0, grp, d, n, t, nd_mask, tn_mask, sC0, sC1, sC2, sC3, VAR_C)
                y = tl.sum(hs * Cv, axis=1)  # (CH, BD)
                if HAS_D:
                    y += Dv[None, :] * u
                if HAS_Z:
                    zv = _load_tc(Z, pid_b * s_zb, d, t, s_zd, s_zl, mask)
                    y = y * zv * tl.sigmoid(zv)
                tl.store(
                    OUT + pid_b * s_ob + d[None, :] * s_od + t[:, None] * s_ol, y.to(OUT.dtype.element_ty), mask=mask
                )
            last = (tt == CH - 1)[:, None, None]  # masked tail tokens have a = 1, b = 0: the state carries through
            h = tl.sum(tl.where(last, hs, 0.0), axis=0)
            prod *= tl.sum(tl.where(last, ac, 0.0), axis=0)
    if STORE_END:
        tl.store(HEND + seg_off, h, mask=nd_mask)
    if not WRITE_Y:
        tl.store(PROD + seg_off, prod, mask=nd_mask)


@triton.jit
def _combine_kernel(HEND, PROD, H0, HIN, HLAST, DN, n_segs, HAS_H0: tl.constexpr, BLOCK: tl.constexpr):
    """Entering state of every segment, in order: ``h_in[s + 1] = prod[s] * h_in[s] + end[s]``."""
    pid_b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = i < DN
    if HAS_H0:
        h = tl.load(H0 + pid_b * DN + i, mask=m, other=0.0)
    else:
        h = tl.zeros((BLOCK,), tl.float32)
    for s in range(n_segs):
        off = (pid_b * n_segs + s) * DN + i
        tl.store(HIN + off, h, mask=m)
        h = tl.load(PROD + off, mask=m, other=0.0) * h + tl.load(HEND + off, mask=m, other=0.0)
    tl.store(HLAST + pid_b * DN + i, h, mask=m)


def combine_segments(
    ends: torch.Tensor, prods: torch.Tensor, first: torch.Tensor | None, last: torch.Tensor
) -> torch.Tensor:
    """:func:`_combine_kernel` over the ``S`` segments of ``(B, S, ...)`` fp32 ``ends`` / ``prods``, in order,
    from ``first`` (``(B, ...)``, zeros if ``None``): returns every segment's entering value and writes the
    value after the last segment into ``last``. The forward combines states left to right; the backward
    passes its segments in reverse and combines state gradients with the same kernel."""
    batch, S = ends.shape[:2]
    inner = ends[0, 0].numel()
    entering = torch.empty_like(ends)
    block = 1024
    _combine_kernel[(batch, triton.cdiv(inner, block))](
        ends, prods, first if first is not None else ends, entering, last, inner, S,
        HAS_H0=first is not None, BLOCK=block,
    )  # fmt: skip
    return entering


def _block_d(dim: int, g_size: int | None) -> int:
    """Channels per program: ``LANE_BLOCK_D``, halved until it divides the group size of per-token B/C."""
    return fit_group(max(1, min(LANE_BLOCK_D, triton.next_power_of_2(dim))), g_size)


def num_segments(L: int, state_chunk: int, programs_per_segment: int, device: torch.device) -> int:
    """Segments (each a whole number of the backward's chunks) so that about ``PROGRAMS_PER_HINT`` times
    the device's program hint run at once; 1 when the channels alone are enough."""
    chunks = triton.cdiv(L, state_chunk)
    want = triton.cdiv(PROGRAMS_PER_HINT * num_programs_hint(device), max(1, programs_per_segment))
    return max(1, min(chunks, want))


def selective_scan_fwd_segmented(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    softplus: bool,
    save_states: bool,
    state_chunk: int,
    g_size: int | None,
    strides_bc: tuple[tuple[int, ...], tuple[int, ...]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same contract as :func:`~longseq.kernels.selective_scan.triton.selective_scan_fwd` (which calls
    this when ``FWD_IMPL == "segmented"``): ``(out, last_state, per-chunk entering states)``."""
    batch, dim, L = u.shape
    N = A.shape[1]
    bn = triton.next_power_of_2(N)
    ch = min(LANE_CHUNK, state_chunk)
    n_chunks = triton.cdiv(L, state_chunk)
    bd = _block_d(dim, g_size)
    dev, f32 = u.device, torch.float32
    out = torch.empty(batch, dim, L, dtype=u.dtype, device=dev)
    last = torch.empty(batch, dim, N, dtype=f32, device=dev)
    states = torch.empty(batch, n_chunks if save_states else 0, dim, N, dtype=f32, device=dev)
    if batch * dim == 0:
        return out, last, states
    if L == 0:  # no token: the last state is the initial one
        return out, last.copy_(initial_state) if initial_state is not None else last.zero_(), states
    d_blocks = triton.cdiv(dim, bd)
    S = num_segments(L, state_chunk, batch * d_blocks, dev)
    seg_len = triton.cdiv(n_chunks, S) * state_chunk  # whole backward chunks per segment
    S = triton.cdiv(L, seg_len)
    z_strides = z.stride() if z is not None else (0, 0, 0)
    common = dict(
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DBIAS=delta_bias is not None, SOFTPLUS=softplus,
        HAS_SEQ=seq_idx is not None, VAR_B=B.dim() == 4, VAR_C=C.dim() == 4,
        BLOCK_D=bd, BLOCK_N=bn, CH=ch, INTERPRET=interpreting(), num_warps=LANE_WARPS,
    )  # fmt: skip

    def launch(hin: torch.Tensor | None, write_y: bool, hend: torch.Tensor, prod: torch.Tensor) -> None:
        _seg_kernel[(batch, d_blocks, S)](
            u, delta, A, B, C, D if D is not None else A, z if z is not None else u,
            delta_bias if delta_bias is not None else A, hin if hin is not None else last,
            seq_idx if seq_idx is not None else u, out, hend, prod, states,
            dim, L, N, g_size or bd, seg_len, S, n_chunks,
            *u.stride(), *delta.stride(), *z_strides, *out.stride(), *A.stride(), *strides_bc[0], *strides_bc[1],
            *(seq_idx.stride() if seq_idx is not None else (0, 0)),
            HAS_HIN=hin is not None, WRITE_Y=write_y, SAVE_STATES=save_states and write_y,
            STORE_END=not write_y or S == 1, STATE_CHUNK=state_chunk, **common,
        )  # fmt: skip

    if S == 1:  # one pass: from the initial state, writing y and (as its end state) the last state
        launch(None if initial_state is None else initial_state, True, last, last)
        return out, last, states
    hend = torch.empty(batch, S, dim, N, dtype=f32, device=dev)
    prod = torch.empty_like(hend)
    launch(None, False, hend, prod)
    launch(combine_segments(hend, prod, initial_state, last), True, hend, prod)
    return out, last, states
