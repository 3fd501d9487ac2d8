"""Collate functions for the genomics datasets: pad to the batch maximum, or pack (varlen).

Both take the items of :mod:`longseq.apps.genomics.datasets`: ``{"input_ids": (L_i,) long}`` and
optionally ``"labels"`` (a per-sequence class index); either every item has labels or none has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from longseq.apps.genomics.tokenizer import DNATokenizer
from longseq.core.packing import PackedBatch, packed_to_pad

__all__ = ["PadCollate", "reverse_complement_batch"]


def _split(items: Sequence[Mapping[str, torch.Tensor]]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The 1-D ``input_ids`` of every item and the stacked labels ``(B,)`` (or None), validated."""
    if len(items) == 0:
        raise ValueError("cannot collate an empty list of items")
    ids, labels = [], []
    for i, item in enumerate(items):
        if "input_ids" not in item:
            raise KeyError(f"item {i} has no 'input_ids'; keys: {sorted(item)}")
        x = item["input_ids"]
        if x.dim() != 1 or x.numel() == 0:
            raise ValueError(f"item {i}: input_ids must be 1-D and non-empty, got shape {tuple(x.shape)}")
        ids.append(x)
        if "labels" in item:
            labels.append(torch.as_tensor(item["labels"]))
    if labels and len(labels) != len(items):
        raise ValueError(f"{len(labels)} of {len(items)} items have 'labels'; expected all or none")
    return ids, (torch.stack(labels) if labels else None)


@dataclass
class PadCollate:
    """Pad ``input_ids`` to the longest item (or a multiple of ``pad_to_multiple_of``) with ``pad_id``.

    Returns ``{"input_ids": (B, L) long, "attention_mask": (B, L) bool, "lengths": (B,) long}`` plus
    ``"labels": (B,)`` when the items have labels.
    """

    pad_id: int = DNATokenizer.pad_id
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1 or None, got {self.pad_to_multiple_of}")

    def __call__(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        ids, labels = _split(items)
        lengths = torch.tensor([x.numel() for x in ids])  # (B,)
        width = int(lengths.max())
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        out = torch.full((len(ids), width), self.pad_id, dtype=torch.long)  # (B, L)
        mask = torch.arange(width) < lengths[:, None]  # (B, L)
        out[mask] = torch.cat(ids).long()
        batch = {"input_ids": out, "attention_mask": mask, "lengths": lengths}
        if labels is not None:
            batch["labels"] = labels
        return batch


def reverse_complement_batch(
    batch: PackedBatch | Mapping[str, torch.Tensor], tokenizer: DNATokenizer | None = None
) -> PackedBatch | dict[str, torch.Tensor]:
    """The same batch with every sequence reverse-complemented (special tokens stay in place).

    Works on the two batch forms of the app: a :class:`~longseq.core.packing.PackedBatch` of token ids
    (each packed sequence is reversed within its own boundaries) and a padded dict with ``input_ids``
    ``(B, L)`` (padding is a special token, so it stays where it is). Labels and masks are unchanged.
    """
    tok = tokenizer or DNATokenizer()
    if isinstance(batch, PackedBatch):
        padded, mask = packed_to_pad(batch.x, batch.cu_seqlens, pad_value=tok.pad_id)  # (N, L)
        rc = tok.reverse_complement_ids(padded)[mask]  # (T,) in packed order
        return replace(batch, x=rc, check=False)
    if "input_ids" not in batch:
        raise KeyError(f"a padded batch needs 'input_ids'; keys: {sorted(batch)}")
    return {**batch, "input_ids": tok.reverse_complement_ids(batch["input_ids"])}
