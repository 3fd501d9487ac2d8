"""Converters between a list of sequences, a padded batch ``(B, L, ...)`` and a :class:`PackedBatch`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from longseq.core.packing.batch import PackedBatch, cu_seqlens_from_lengths, position_ids_from_cu_seqlens, segment_ids


def pack(seqs: Sequence[torch.Tensor], labels: Sequence[torch.Tensor] | torch.Tensor | None = None) -> PackedBatch:
    """Concatenate sequences ``[(L_i, ...)]`` into a :class:`PackedBatch` with ``x`` of shape ``(T, ...)``.

    Args:
        seqs: N tensors on one device with equal dtype and trailing shape; empty sequences
            (``L_i = 0``) are kept, so ``unpack(pack(seqs))`` returns exactly ``seqs``.
        labels: optional targets: a list of per-token tensors ``[(L_i, ...)]`` (packed the same way)
            or a tensor ``(N, ...)`` of per-sequence targets.
    """
    if len(seqs) == 0:
        raise ValueError("pack needs at least one sequence, got an empty list")
    first = seqs[0]
    for i, s in enumerate(seqs):
        if s.dim() < 1 or s.shape[1:] != first.shape[1:] or s.dtype != first.dtype or s.device != first.device:
            raise ValueError(
                f"every sequence must be (L_i, *{tuple(first.shape[1:])}) {first.dtype} on {first.device}; "
                f"sequence {i} is {tuple(s.shape)} {s.dtype} on {s.device}"
            )
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int32, device=first.device)
    cu_seqlens = cu_seqlens_from_lengths(lengths)
    total = int(cu_seqlens[-1])
    if labels is not None and not isinstance(labels, torch.Tensor):
        if len(labels) != len(seqs):
            raise ValueError(f"labels must give one tensor per sequence ({len(seqs)}), got {len(labels)}")
        for i, (s, y) in enumerate(zip(seqs, labels)):
            if y.shape[:1] != s.shape[:1]:
                raise ValueError(
                    f"labels[{i}] must have leading size {s.shape[0]} like its sequence, got {tuple(y.shape)}"
                )
        labels = torch.cat(list(labels))
    return PackedBatch(
        x=torch.cat(list(seqs)),  # (T, ...)
        cu_seqlens=cu_seqlens,
        max_seqlen=int(lengths.max()),
        position_ids=position_ids_from_cu_seqlens(cu_seqlens, total),
        labels=labels,
    )


def unpack(x: torch.Tensor | PackedBatch, cu_seqlens: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Split packed ``(T, ...)`` back into N sequences ``[(L_i, ...)]`` (views, differentiable).

    Takes a :class:`PackedBatch`, or features ``x`` with the ``cu_seqlens`` of their batch.
    """
    if isinstance(x, PackedBatch):
        x, cu_seqlens = x.x, x.cu_seqlens
    if cu_seqlens is None:
        raise ValueError("unpack(x, cu_seqlens): cu_seqlens is required when x is a tensor")
    return list(torch.split(x, (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()))


def pad_to_packed(
    x: torch.Tensor, mask: torch.Tensor | None = None, *, lengths: torch.Tensor | None = None
) -> PackedBatch:
    """Pack a padded batch ``(B, L, ...)``: keep the valid tokens of each row, in order.

    Give exactly one of ``mask`` (bool ``(B, L)``, True = valid; any pattern, e.g. left padding) or
    ``lengths`` (``(B,)``, the first ``lengths[b]`` tokens of row b are valid: right padding).
    """
    if x.dim() < 2:
        raise ValueError(f"x must be padded (B, L, ...), got shape {tuple(x.shape)}")
    b, l = x.shape[:2]
    if (mask is None) == (lengths is None):
        raise ValueError("give exactly one of mask (B, L) or lengths (B,)")
    if lengths is not None:
        if lengths.shape != (b,):
            raise ValueError(f"lengths must have shape ({b},), got {tuple(lengths.shape)}")
        if bool(((lengths < 0) | (lengths > l)).any()):
            raise ValueError(f"lengths must lie in [0, {l}], got {lengths.tolist()}")
        mask = torch.arange(l, device=x.device) < lengths.to(x.device)[:, None]  # (B, L)
    elif mask.shape != (b, l) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool of shape ({b}, {l}), got {mask.dtype} {tuple(mask.shape)}")
    seqlens = mask.sum(1, dtype=torch.int32)  # (B,)
    cu_seqlens = cu_seqlens_from_lengths(seqlens)
    total = int(cu_seqlens[-1])
    return PackedBatch(
        x=x[mask],  # (T, ...) row-major: row 0's tokens, then row 1's, ...
        cu_seqlens=cu_seqlens,
        max_seqlen=int(seqlens.max()) if b else 0,
        position_ids=position_ids_from_cu_seqlens(cu_seqlens, total),
    )


def packed_to_pad(
    x: torch.Tensor | PackedBatch,
    cu_seqlens: torch.Tensor | None = None,
    *,
    max_len: int | None = None,
    pad_value: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter packed ``(T, ...)`` into a right-padded ``(N, L, ...)`` batch; differentiable.

    Args:
        x: packed features, or a :class:`PackedBatch` (then ``cu_seqlens`` comes from it).
        cu_seqlens: the boundaries of ``x`` when it is a tensor.
        max_len: the padded length L; default the longest sequence. Must be >= it (nothing is cut).
        pad_value: the value of padding positions.

    Returns:
        ``(padded (N, L, ...), mask (N, L) bool)`` with True at real tokens.
    """
    if isinstance(x, PackedBatch):
        x, cu_seqlens, positions = x.x, x.cu_seqlens, x.position_ids.long()
    elif cu_seqlens is None:
        raise ValueError("packed_to_pad(x, cu_seqlens): cu_seqlens is required when x is a tensor")
    else:
        positions = position_ids_from_cu_seqlens(cu_seqlens, x.shape[0]).long()
    n = cu_seqlens.shape[0] - 1
    seqlens = cu_seqlens[1:] - cu_seqlens[:-1]
    longest = int(seqlens.max()) if n else 0
    max_len = longest if max_len is None else max_len
    if max_len < longest:
        raise ValueError(f"max_len {max_len} would cut sequences; the longest has {longest} tokens")
    seg = segment_ids(cu_seqlens, x.shape[0])
    out = x.new_full((n, max_len, *x.shape[1:]), pad_value)
    out = out.index_put((seg, positions), x)  # (N, L, ...)
    mask = torch.arange(max_len, device=x.device) < seqlens[:, None]  # (N, L)
    return out, mask
