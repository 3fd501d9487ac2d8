"""Attention mask patterns as FlexAttention ``mask_mod`` functions ``(b, h, q_idx, kv_idx) -> bool``.

One function serves every backend: ``flex`` hands it to ``create_block_mask``; ``math`` and ``sdpa``
call it once on broadcast index grids (:func:`materialize_mask`), so the patterns cannot disagree.
Every pattern uses only elementwise ops and table lookups, which both evaluations support.

Indices follow the spec in :mod:`longseq.core.attention.base`: ``q_idx`` is the query's position on
the key axis (``row + Lk - Lq``), indices are local to a sequence in packed batches and ``b`` is then
the sequence index. Patterns that look up tables (global tokens, BigBird blocks) clamp indices into
the table, so they assume ``0 <= q_idx, kv_idx < seq_len``.

>>> spec = AttentionSpec(mask_mod=longformer_mask(window=64, is_global=global_tokens(4096, [0])))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from longseq.core.attention.base import AttentionSpec, MaskMod
from longseq.core.packing import segment_ids

Offset = int | torch.Tensor  # a scalar, or one value per batch row b


# --------------------------------------------------------------------------------------------
# evaluation on dense grids
# --------------------------------------------------------------------------------------------


def _per_batch(value: Offset, b: torch.Tensor) -> torch.Tensor | int:
    """``value[b]`` for a per-batch tensor, ``value`` itself for a scalar."""
    return value[b] if isinstance(value, torch.Tensor) else value


def index_grids(
    B: int, H: int, Lq: int, Lk: int, device: torch.device | str | None = None, *, q_offset: Offset | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Broadcastable ``(b, h, q_idx, kv_idx)`` grids of shapes ``(B,1,1,1)``, ``(1,H,1,1)``,
    ``(B|1,1,Lq,1)`` and ``(1,1,1,Lk)``; ``q_idx = row + q_offset`` (default ``Lk - Lq``), where a
    tensor ``q_offset`` holds one offset per batch row."""
    q_offset = Lk - Lq if q_offset is None else q_offset
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)
    q = torch.arange(Lq, device=device).view(1, 1, Lq, 1) + _per_batch(q_offset, b)
    kv = torch.arange(Lk, device=device).view(1, 1, 1, Lk)
    return b, h, q, kv


def materialize_mask(
    mask_mod: MaskMod,
    B: int,
    H: int,
    Lq: int,
    Lk: int,
    device: torch.device | str | None = None,
    *,
    q_offset: Offset | None = None,
) -> torch.Tensor:
    """``mask_mod`` evaluated densely: a ``(B, H, Lq, Lk)`` bool tensor (an expanded view)."""
    mask = mask_mod(*index_grids(B, H, Lq, Lk, device, q_offset=q_offset))
    return torch.as_tensor(mask, device=device).expand(B, H, Lq, Lk)


def and_masks(*mods: MaskMod) -> MaskMod:
    """A mask allowing a pair only when every one of ``mods`` allows it."""
    if not mods:
        raise ValueError("and_masks needs at least one mask_mod")

    def mask(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for mod in mods[1:]:
            out = out & mod(b, h, q_idx, kv_idx)
        return out

    return mask


def or_masks(*mods: MaskMod) -> MaskMod:
    """A mask allowing a pair when any of ``mods`` allows it."""
    if not mods:
        raise ValueError("or_masks needs at least one mask_mod")

    def mask(b, h, q_idx, kv_idx):
        out = mods[0](b, h, q_idx, kv_idx)
        for mod in mods[1:]:
            out = out | mod(b, h, q_idx, kv_idx)
        return out

    return mask


def _lookup(table: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table[idx]`` (1-D table) or ``table[b, idx]`` (2-D, one row per batch), index clamped into range."""
    idx = idx.clamp(0, table.shape[-1] - 1)
    return table[idx] if table.dim() == 1 else table[b, idx]


# --------------------------------------------------------------------------------------------
# patterns
# --------------------------------------------------------------------------------------------


def causal_mask() -> MaskMod:
    """Keys up to the query: ``kv_idx <= q_idx``."""

    def mask(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    return mask


def sliding_window_mask(left: int, right: int) -> MaskMod:
    """``q_idx - left <= kv_idx <= q_idx + right``; ``-1`` leaves a side unlimited (flash-attn's window)."""
    if left < -1 or right < -1:
        raise ValueError(f"window sides must be >= 0 or -1 (unlimited), got ({left}, {right})")

    def both(b, h, q_idx, kv_idx):
        return (kv_idx >= q_idx - left) & (kv_idx <= q_idx + right)

    def left_only(b, h, q_idx, kv_idx):
        return kv_idx >= q_idx - left

    def right_only(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + right

    def unlimited(b, h, q_idx, kv_idx):
        return kv_idx >= 0

    if left >= 0:
        return both if right >= 0 else left_only
    return right_only if right >= 0 else unlimited


def doc_ids(cu_seqlens: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Sequence index of every packed token: int32 ``[T]`` from ``cu_seqlens`` int32 ``[N+1]``."""
    return segment_ids(cu_seqlens, total).to(torch.int32)


def document_mask(cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor | None = None) -> MaskMod:
    """Packing mask over *global* packed indices: a query sees only keys of its own sequence."""
    doc_q = doc_ids(cu_seqlens_q)
    doc_k = doc_q if cu_seqlens_k is None else doc_ids(cu_seqlens_k)

    def mask(b, h, q_idx, kv_idx):
        return _lookup(doc_q, b, q_idx) == _lookup(doc_k, b, kv_idx)

    return mask


def global_tokens(seq_len: int, indices: Sequence[int] | torch.Tensor, device=None) -> torch.Tensor:
    """A ``(seq_len,)`` bool table, True at ``indices`` (for :func:`longformer_mask`)."""
    table = torch.zeros(seq_len, dtype=torch.bool, device=device)
    idx = torch.as_tensor(indices, dtype=torch.long, device=device)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= seq_len):
        raise ValueError(f"global token indices must lie in [0, {seq_len}), got {idx.tolist()}")
    table[idx] = True
    return table


def longformer_mask(window: int, is_global: torch.Tensor) -> MaskMod:
    """Longformer: local band ``|q_idx - kv_idx| <= window`` plus global tokens, which attend to and are
    attended by every token.

    Args:
        window: one-sided radius (Longformer's total window ``w`` is ``2 * window``).
        is_global: bool ``(L,)`` or ``(B, L)`` (per batch row) table of global tokens; see :func:`global_tokens`.
    """
    if window < 0:
        raise ValueError(f"longformer window must be >= 0, got {window}")
    if is_global.dtype != torch.bool or is_global.dim() not in (1, 2):
        raise ValueError(
            f"is_global must be a bool (L,) or (B, L) tensor, got {is_global.dtype} {tuple(is_global.shape)}"
        )

    def mask(b, h, q_idx, kv_idx):
        local = (q_idx - kv_idx).abs() <= window
        return local | _lookup(is_global, b, q_idx) | _lookup(is_global, b, kv_idx)

    return mask


def bigbird_blocks(
    seq_len: int,
    block_size: int = 64,
    num_window_blocks: int = 3,
    num_global_blocks: int = 1,
    num_random_blocks: int = 2,
    seed: int = 0,
) -> torch.Tensor:
    """BigBird's block adjacency, bool ``(nb, nb)`` with ``nb = ceil(seq_len / block_size)``.

    Query block ``i`` sees key blocks within ``num_window_blocks // 2`` of ``i``, the first
    ``num_global_blocks`` blocks (which also see every block) and ``num_random_blocks`` blocks drawn
    without replacement from the rest by a generator seeded with ``seed`` (reproducible, CPU-drawn).
    """
    for name, val in (("block_size", block_size), ("num_window_blocks", num_window_blocks)):
        if val < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")
    if num_global_blocks < 0 or num_random_blocks < 0:
        raise ValueError(f"global/random block counts must be >= 0, got {num_global_blocks}, {num_random_blocks}")
    nb = math.ceil(seq_len / block_size)
    idx = torch.arange(nb)
    adj = (idx[:, None] - idx[None, :]).abs() <= num_window_blocks // 2
    adj[:num_global_blocks, :] = True
    adj[:, :num_global_blocks] = True
    gen = torch.Generator().manual_seed(seed)
    for i in range(num_global_blocks, nb):
        free = (~adj[i]).nonzero().flatten()
        pick = free[torch.randperm(free.numel(), generator=gen)[:num_random_blocks]]
        adj[i, pick] = True
    return adj


def bigbird_mask(seq_len: int, block_size: int = 64, *, device=None, **layout: int) -> MaskMod:
    """BigBird (local + global + random blocks) as a token mask.

    ``layout`` takes :func:`bigbird_blocks`' ``num_window_blocks``, ``num_global_blocks``,
    ``num_random_blocks`` and ``seed``; the block table is built once and moved to ``device``.
    """
    adj = bigbird_blocks(seq_len, block_size, **layout).to(device)
    nb = adj.shape[0]

    def mask(b, h, q_idx, kv_idx):
        qb = (q_idx // block_size).clamp(0, nb - 1)
        kb = (kv_idx // block_size).clamp(0, nb - 1)
        return adj[qb, kb]

    return mask


def dilated_mask(segments: Sequence[tuple[int, int]], head_offsets: bool = True) -> MaskMod:
    """LongNet dilated attention: for each ``(w, r)``, tokens attend within segments of length ``w`` to
    every ``r``-th token; head ``h`` uses offset ``h % r`` when ``head_offsets`` (so heads cover every
    position). The patterns are ORed into one softmax, which equals LongNet's denominator-weighted mix
    where the patterns do not overlap (overlapping keys are counted once). Query rows that no pattern
    selects see no key (zero output): include ``(w, 1)`` to cover every row. Combine with ``causal``.
    """
    if not segments:
        raise ValueError("dilated_mask needs at least one (segment_length, dilation) pair")
    for w, r in segments:
        if w < 1 or r < 1 or r > w:
            raise ValueError(f"each (segment_length w, dilation r) needs 1 <= r <= w, got ({w}, {r})")

    def one(w: int, r: int) -> MaskMod:
        def mask(b, h, q_idx, kv_idx):
            off = h % r if head_offsets else 0
            same = (q_idx // w) == (kv_idx // w)
            return same & ((q_idx % w) % r == off) & ((kv_idx % w) % r == off)

        return mask

    return or_masks(*(one(w, r) for w, r in segments))


def prefix_lm_mask(prefix_len: int | torch.Tensor) -> MaskMod:
    """Prefix-LM: keys in the prefix ``[0, prefix_len)`` are visible to every query (bidirectional
    prefix), later keys causally. ``prefix_len`` is an int or an int ``(B,)`` tensor (one per batch row
    or packed sequence). Use with ``causal=False``: the causal flag would hide the prefix's future.
    """

    def mask(b, h, q_idx, kv_idx):
        return (kv_idx < _per_batch(prefix_len, b)) | (kv_idx <= q_idx)

    return mask


# --------------------------------------------------------------------------------------------
# a spec's whole mask, for the backends
# --------------------------------------------------------------------------------------------


def spec_mask_mod(spec: AttentionSpec, q_offset: Offset, kv_len: torch.Tensor | None = None) -> MaskMod | None:
    """Everything ``spec`` masks (window/causal, ``mask_mod``, keys beyond ``kv_len[b]``) as one mask_mod
    in *row* coordinates: it maps query row ``r`` to ``r + q_offset`` (per batch when a tensor) first.
    ``None`` when nothing is masked."""
    parts: list[MaskMod] = []
    if spec.window != (-1, -1):
        parts.append(sliding_window_mask(*spec.window))
    if spec.mask_mod is not None:
        parts.append(spec.mask_mod)
    if kv_len is not None:
        parts.append(lambda b, h, q_idx, kv_idx: kv_idx < kv_len[b])
    if not parts:
        return None
    inner = and_masks(*parts)

    def mask(b, h, q_row, kv_idx):
        return inner(b, h, q_row + _per_batch(q_offset, b), kv_idx)

    return mask
