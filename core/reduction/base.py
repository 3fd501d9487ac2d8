"""What a token reduction layer returns, and mapping its outputs back to input positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ReductionOutput:
    """The result of one token reduction layer on padded input.

    Attributes:
        x: ``(B, L', D)`` reduced tokens; the ``num_prefix_tokens`` prefix tokens come first, unchanged.
        sizes: ``(B, L', 1)`` float, how many original tokens each output token stands for; a row sums to
            the input's total size (``L`` when the input sizes were all one).
        merge_map: int64 ``(B, L)``, for every input token the index of the output token it went to, so
            ``unmerge(y, merge_map)`` (a gather) maps per-output results back to input positions; ``None``
            for layers that drop tokens (a dropped token has no output; use ``keep_index``).
        keep_index: optional int64 ``(B, L')``, the input index each output token was taken from, for layers
            that select rather than merge; ``None`` for merging.
    """

    x: torch.Tensor
    sizes: torch.Tensor
    merge_map: torch.Tensor | None
    keep_index: torch.Tensor | None = None


def _check_map(merge_map: torch.Tensor, batch: int | None, what: str) -> None:
    """Raise unless ``merge_map`` is int64 ``(B, L)`` with ``B == batch`` (any ``B`` when ``batch`` is None)."""
    ok = merge_map.dtype == torch.int64 and merge_map.dim() == 2
    if not ok or batch not in (None, merge_map.shape[0]):
        expected = "(B, L)" if batch is None else f"(B={batch}, L)"
        raise ValueError(f"{what} must be int64 {expected}, got {merge_map.dtype} {tuple(merge_map.shape)}")


def unmerge(y: torch.Tensor, merge_map: torch.Tensor) -> torch.Tensor:
    """Copy each output token back to every input position merged into it.

    Args:
        y: ``(B, L', D)`` per-output-token values, or packed ``(T', D)``.
        merge_map: int64 ``(B, L)`` from :class:`ReductionOutput`, entries in ``[0, L')``; with packed ``y``
            the int64 ``(T,)`` packed map of a packed result (entries in ``[0, T')``).

    Returns:
        ``(B, L, D)`` with row ``i`` equal to ``y[:, merge_map[:, i]]``; packed: ``(T, D)``, ``y[merge_map]``.
    """
    if y.dim() == 2 and merge_map.dim() == 1:  # packed: the map holds packed output positions
        if merge_map.dtype != torch.int64:
            raise ValueError(f"merge_map must be int64 (T,), got {merge_map.dtype} {tuple(merge_map.shape)}")
        return y[merge_map]
    if y.dim() != 3:
        raise ValueError(f"y must be (B, L', D), got shape {tuple(y.shape)}")
    _check_map(merge_map, y.shape[0], "merge_map")
    # (B, L) -> (B, L, D)
    index = merge_map.unsqueeze(-1).expand(-1, -1, y.shape[-1])
    return y.gather(1, index)


def compose_merge_maps(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The merge map of two reductions in a row: input token -> output of ``first`` -> output of ``second``.

    Args:
        first: int64 ``(B, L)`` into ``[0, L1)``, or packed ``(T,)`` into ``[0, T1)``.
        second: int64 ``(B, L1)`` into ``[0, L2)``, or packed ``(T1,)`` into ``[0, T2)``.

    Returns:
        int64 ``(B, L)`` into ``[0, L2)``; packed: ``(T,)`` into ``[0, T2)``.
    """
    if first.dim() == 1 and second.dim() == 1 and first.dtype == second.dtype == torch.int64:
        return second[first]
    _check_map(first, None, "first")
    _check_map(second, first.shape[0], "second")
    return second.gather(1, first)
