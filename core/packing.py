"""Sequence packing: one convention for the whole project (flash-attn's varlen layout).

A packed batch concatenates N variable-length sequences into ``x`` of shape ``(T, ...)`` with
``cu_seqlens`` int32 ``[N+1]`` (``cu_seqlens[0] == 0``, ``cu_seqlens[-1] == T``, non-decreasing),
``max_seqlen`` (the longest sequence) and ``position_ids`` int32 ``[T]`` restarting at 0 per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedBatch:
    """N sequences packed along dim 0 of ``x``; see the module docstring for the convention."""

    x: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    position_ids: torch.Tensor

    def __post_init__(self) -> None:
        validate_cu_seqlens(self.cu_seqlens, self.x.shape[0])
        if self.position_ids.shape != (self.x.shape[0],):
            raise ValueError(
                f"position_ids must have shape ({self.x.shape[0]},) = total tokens, got {tuple(self.position_ids.shape)}"
            )

    @property
    def num_seqs(self) -> int:
        """Number of packed sequences N."""
        return self.cu_seqlens.numel() - 1

    @property
    def seqlens(self) -> torch.Tensor:
        """Length of each sequence, ``(N,)`` int32."""
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    def with_x(self, x: torch.Tensor) -> PackedBatch:
        """The same boundaries around new token features ``x`` (same leading size T)."""
        return PackedBatch(x, self.cu_seqlens, self.max_seqlen, self.position_ids)


def validate_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> None:
    """Raise ``ValueError`` unless ``cu_seqlens`` is int32 ``[N+1]``, starts at 0, is
    non-decreasing and ends at ``total`` tokens."""
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(
            f"cu_seqlens must be a 1-D int32 tensor [N+1], got dtype {cu_seqlens.dtype} shape {tuple(cu_seqlens.shape)}"
        )
    if int(cu_seqlens[0]) != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {int(cu_seqlens[0])}")
    if int(cu_seqlens[-1]) != total:
        raise ValueError(f"cu_seqlens must end at total tokens {total}, got {int(cu_seqlens[-1])}")
    if cu_seqlens.numel() > 1 and bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
        raise ValueError(f"cu_seqlens must be non-decreasing, got {cu_seqlens.tolist()}")


def position_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """``position_ids`` int32 ``[T]`` restarting at 0 at each sequence start."""
    total = int(cu_seqlens[-1]) if total is None else total
    seqlens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    starts = torch.repeat_interleave(cu_seqlens[:-1].long(), seqlens, output_size=total)
    return (torch.arange(total, device=cu_seqlens.device) - starts).to(torch.int32)
