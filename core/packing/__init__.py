"""Sequence packing: one convention for the whole project (flash-attn's varlen layout).

A packed batch concatenates N variable-length sequences into ``x`` of shape ``(T, ...)`` with
``cu_seqlens`` int32 ``[N+1]`` (``cu_seqlens[0] == 0``, ``cu_seqlens[-1] == T``, non-decreasing),
``max_seqlen`` (the longest sequence) and ``position_ids`` int32 ``[T]`` restarting at 0 per sequence.

* ``batch``: :class:`PackedBatch` and its validation;
* ``convert``: :func:`pack` / :func:`unpack`, :func:`pad_to_packed` / :func:`packed_to_pad`;
* ``segments``: per-sequence reductions and loss masks (:func:`next_token_labels`, :func:`mask_prefix`);
* ``bins``: :func:`first_fit_decreasing`, :func:`stream_pack`, :func:`packing_stats`;
* ``loader``: :class:`PackedCollate`, :class:`TokenBudgetBatchSampler`, :class:`PackedStream`.

Every layer that accepts packed input is tested to give the same outputs and gradients as running
each sequence alone.
"""

from longseq.core.packing.batch import (
    PackedBatch,
    cu_seqlens_from_lengths,
    position_ids_from_cu_seqlens,
    segment_ids,
    validate_cu_seqlens,
)
from longseq.core.packing.bins import PackingStats, first_fit_decreasing, packing_stats, stream_pack
from longseq.core.packing.convert import pack, packed_to_pad, pad_to_packed, unpack
from longseq.core.packing.loader import PackedCollate, PackedStream, TokenBudgetBatchSampler, input_length
from longseq.core.packing.segments import mask_prefix, next_token_labels, segment_mean, segment_softmax, segment_sum

__all__ = [
    "PackedBatch",
    "PackedCollate",
    "PackedStream",
    "PackingStats",
    "TokenBudgetBatchSampler",
    "cu_seqlens_from_lengths",
    "first_fit_decreasing",
    "input_length",
    "mask_prefix",
    "next_token_labels",
    "pack",
    "packed_to_pad",
    "packing_stats",
    "pad_to_packed",
    "position_ids_from_cu_seqlens",
    "segment_ids",
    "segment_mean",
    "segment_softmax",
    "segment_sum",
    "stream_pack",
    "unpack",
    "validate_cu_seqlens",
]
