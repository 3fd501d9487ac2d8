"""``PackedBatch``: the one varlen layout (flash-attn's) and its validation.

A packed batch concatenates N variable-length sequences into ``x`` of shape ``(T, ...)`` with
``cu_seqlens`` int32 ``[N+1]`` (``cu_seqlens[0] == 0``, ``cu_seqlens[-1] == T``, non-decreasing),
``max_seqlen`` (a Python int, at least the longest sequence) and ``position_ids`` int32 ``[T]``
restarting at 0 per sequence.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from typing import Any

import torch

from longseq.kernels._common import check_cu_seqlens


@dataclass(frozen=True)
class PackedBatch:
    """N sequences packed along dim 0 of ``x``; see the module docstring for the convention.

    Attributes:
        x: ``(T, ...)`` token features or token ids.
        cu_seqlens: int32 ``[N+1]`` sequence boundaries.
        max_seqlen: the longest sequence (a Python int, so kernels need no device sync).
        position_ids: int32 ``[T]``, restarting at 0 at each sequence start.
        labels: optional targets carried with the batch (by :class:`~longseq.core.packing.PackedCollate`):
            ``(T, ...)`` per token or ``(N, ...)`` per sequence. Layers never read them.
        check: validate the boundaries (a few device syncs). ``False`` is for callers that derived
            them from an already validated batch; validation is skipped while ``torch.compile`` traces.

    Layers take the features as their own argument and read only the boundaries from a
    ``PackedBatch`` (``mixer(h, packed=batch)``), so ``batch.x`` need not be the current features.
    Lightning moves a ``PackedBatch`` between devices through :meth:`to`.
    """

    x: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    position_ids: torch.Tensor
    labels: torch.Tensor | None = None
    check: InitVar[bool] = True

    def __post_init__(self, check: bool) -> None:
        total = self.x.shape[0]
        if self.position_ids.shape != (total,):
            raise ValueError(
                f"position_ids must have shape ({total},) = total tokens, got {tuple(self.position_ids.shape)}"
            )
        if self.position_ids.dtype != torch.int32:
            raise ValueError(f"position_ids must be int32, got {self.position_ids.dtype}")
        if not isinstance(self.max_seqlen, int) or isinstance(self.max_seqlen, bool):
            raise TypeError(f"max_seqlen must be a Python int, got {type(self.max_seqlen).__name__}")
        if self.labels is not None and self.labels.shape[0] not in (total, self.cu_seqlens.shape[0] - 1):
            raise ValueError(
                f"labels must have leading size T={total} (per token) or N={self.cu_seqlens.shape[0] - 1} "
                f"(per sequence), got shape {tuple(self.labels.shape)}"
            )
        if not check or torch.compiler.is_compiling():
            return
        for name in ("cu_seqlens", "position_ids", "labels"):
            t = getattr(self, name)
            if t is not None and t.device != self.x.device:
                raise ValueError(f"{name} is on {t.device} but x is on {self.x.device}; move the whole batch")
        validate_cu_seqlens(self.cu_seqlens, total)
        longest = int(self.seqlens.max()) if self.num_seqs > 0 else 0
        if self.max_seqlen < longest:
            raise ValueError(f"max_seqlen must be >= the longest sequence {longest}, got {self.max_seqlen}")

    @property
    def num_seqs(self) -> int:
        """Number of packed sequences N."""
        return self.cu_seqlens.shape[0] - 1

    @property
    def num_tokens(self) -> int:
        """Total packed tokens T."""
        return self.x.shape[0]

    @property
    def seqlens(self) -> torch.Tensor:
        """Length of each sequence, ``(N,)`` int32."""
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    def with_x(self, x: torch.Tensor) -> PackedBatch:
        """The same boundaries (and labels) around new token features ``x`` (same leading size T)."""
        if x.shape[0] != self.num_tokens:
            raise ValueError(f"x must keep the total token count {self.num_tokens}, got leading size {x.shape[0]}")
        return PackedBatch(x, self.cu_seqlens, self.max_seqlen, self.position_ids, self.labels, check=False)

    def _map(self, fn: Any) -> PackedBatch:
        labels = None if self.labels is None else fn(self.labels)
        return PackedBatch(fn(self.x), fn(self.cu_seqlens), self.max_seqlen, fn(self.position_ids), labels, check=False)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        """Every tensor moved to ``device`` (dtypes kept); what Lightning's batch transfer calls."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedBatch:
        """Every tensor in pinned memory; what ``DataLoader(pin_memory=True)`` calls."""
        return self._map(lambda t: t.pin_memory())


def validate_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> None:
    """Raise ``ValueError`` unless ``cu_seqlens`` is int32 ``[N+1]``, starts at 0, is
    non-decreasing and ends at ``total`` tokens."""
    check_cu_seqlens(cu_seqlens, total)


def cu_seqlens_from_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """int32 ``[N+1]`` boundaries from per-sequence lengths ``(N,)``."""
    return torch.nn.functional.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))


def segment_ids(cu_seqlens: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """int64 ``[T]``: the index of the sequence each packed token belongs to."""
    total = int(cu_seqlens[-1]) if total is None else total
    n = cu_seqlens.shape[0] - 1
    seqlens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(n, device=cu_seqlens.device), seqlens, output_size=total)


def position_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """``position_ids`` int32 ``[T]`` restarting at 0 at each sequence start."""
    total = int(cu_seqlens[-1]) if total is None else total
    starts = cu_seqlens[:-1].long()[segment_ids(cu_seqlens, total)]
    return (torch.arange(total, device=cu_seqlens.device) - starts).to(torch.int32)
