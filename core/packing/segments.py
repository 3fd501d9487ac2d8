"""Per-sequence reductions over packed tokens and the loss masks that respect sequence boundaries.

All functions take packed ``(T, ...)`` values with the ``cu_seqlens`` of their batch and never mix
tokens of different sequences.
"""

from __future__ import annotations

import torch

from longseq.core.packing.batch import position_ids_from_cu_seqlens, segment_ids


def segment_sum(values: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Sum of each sequence's tokens: ``(T, ...)`` -> ``(N, ...)`` (0 for an empty sequence)."""
    seg = segment_ids(cu_seqlens, values.shape[0])
    out = values.new_zeros((cu_seqlens.shape[0] - 1, *values.shape[1:]))
    return out.index_add(0, seg, values)


def segment_mean(values: torch.Tensor, cu_seqlens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of each sequence's tokens ``(T, ...)`` -> ``(N, ...)``, over tokens where ``mask`` ``(T,)``
    is True when given; a sequence with no counted token gives 0."""
    if mask is None:
        counts = (cu_seqlens[1:] - cu_seqlens[:-1]).to(values.dtype)  # (N,)
    else:
        if mask.shape != values.shape[:1]:
            raise ValueError(f"mask must have shape ({values.shape[0]},), got {tuple(mask.shape)}")
        values = values * mask.reshape(-1, *[1] * (values.dim() - 1)).to(values.dtype)
        counts = segment_sum(mask.to(values.dtype), cu_seqlens)
    counts = counts.clamp_min(1).reshape(-1, *[1] * (values.dim() - 1))
    return segment_sum(values, cu_seqlens) / counts


def segment_softmax(scores: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Softmax over the tokens of each sequence: ``(T, ...)`` -> ``(T, ...)``, computed in at least fp32."""
    seg = segment_ids(cu_seqlens, scores.shape[0])
    s = scores.to(torch.promote_types(scores.dtype, torch.float32))
    n = cu_seqlens.shape[0] - 1
    idx = seg.reshape(-1, *[1] * (s.dim() - 1)).expand_as(s)
    smax = s.new_full((n, *s.shape[1:]), float("-inf")).scatter_reduce(0, idx, s.detach(), "amax")
    e = torch.exp(s - smax[seg])  # (T, ...)
    return (e / segment_sum(e, cu_seqlens)[seg]).to(scores.dtype)


def _shift_left(labels: torch.Tensor, fill: int) -> torch.Tensor:
    """``out[..., t] = labels[..., t + 1]`` along the last dim, ``fill`` at the end (same shape)."""
    out = torch.full_like(labels, fill)
    out[..., :-1] = labels[..., 1:]
    return out


def next_token_labels(
    labels: torch.Tensor, cu_seqlens: torch.Tensor | None = None, ignore_index: int = -100
) -> torch.Tensor:
    """Targets for next-token prediction: position t gets ``labels[t + 1]`` of the same sequence.

    Packed ``(T,)`` with ``cu_seqlens``: the last token of every sequence gets ``ignore_index``, so no
    target crosses a boundary. Padded ``(B, L)`` (``cu_seqlens=None``): each row is shifted and its
    last position gets ``ignore_index``.
    """
    if cu_seqlens is None:
        if labels.dim() != 2:
            raise ValueError(f"padded labels must be (B, L), got shape {tuple(labels.shape)}")
        return _shift_left(labels, ignore_index)
    if labels.dim() != 1:
        raise ValueError(f"packed labels must be (T,), got shape {tuple(labels.shape)}")
    shifted = _shift_left(labels, ignore_index)  # (T,)
    next_pos = torch.arange(1, labels.shape[0] + 1, device=labels.device)
    is_last = torch.isin(next_pos, cu_seqlens[1:].to(next_pos.dtype))  # (T,) last token of its sequence
    return shifted.masked_fill(is_last, ignore_index)


def mask_prefix(
    labels: torch.Tensor, cu_seqlens: torch.Tensor, prefix_lengths: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """``labels`` ``(T, ...)`` with the first ``prefix_lengths[i]`` tokens of sequence i set to
    ``ignore_index`` (prompt masking: loss on completions only; 0 keeps a sequence, its length
    drops it from the loss entirely)."""
    n = cu_seqlens.shape[0] - 1
    if prefix_lengths.shape != (n,):
        raise ValueError(f"prefix_lengths must have shape ({n},), got {tuple(prefix_lengths.shape)}")
    positions = position_ids_from_cu_seqlens(cu_seqlens, labels.shape[0])
    masked = positions < prefix_lengths.to(positions.device)[segment_ids(cu_seqlens, labels.shape[0])]  # (T,)
    return labels.masked_fill(masked.reshape(-1, *[1] * (labels.dim() - 1)), ignore_index)
