"""Bin packing of sequences into token budgets, and how much of the budget real tokens fill.

* :func:`first_fit_decreasing`: the offline algorithm (sizes known up front, e.g. a map-style
  dataset): sort by length, put each sequence into the first bin it fits. O(n log n) with a
  max-segment-tree over the bins' free space; usually within a few percent of optimal.
* :func:`stream_pack`: the online variant for iterables: next-fit greedy, or first-fit-decreasing
  over a sliding buffer of ``buffer_size`` items.

A sequence longer than the budget is never dropped or cut silently: both raise ``ValueError`` naming
it. Split or truncate long sequences before packing (for example into windows).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")


def _check_budget(budget: int, max_per_bin: int | None) -> None:
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int (tokens per bin), got {budget!r}")
    if max_per_bin is not None and max_per_bin < 1:
        raise ValueError(f"max_per_bin must be >= 1 or None, got {max_per_bin}")


def _check_length(length: int, budget: int, where: str) -> None:
    if length < 0:
        raise ValueError(f"{where} has negative length {length}")
    if length > budget:
        raise ValueError(
            f"{where} has {length} tokens, more than the budget of {budget}; "
            "split or truncate long sequences before packing (nothing is dropped silently)"
        )


class _FirstFitTree:
    """Max segment tree over the free space of ``n`` bins; finds the leftmost bin with room in O(log n)."""

    def __init__(self, n: int, capacity: int) -> None:
        self.size = 1
        while self.size < max(n, 1):
            self.size *= 2
        self.free = [capacity] * (2 * self.size)  # unopened bins have the full capacity

    def first_fit(self, need: int) -> int:
        node = 1
        while node < self.size:
            node = 2 * node if self.free[2 * node] >= need else 2 * node + 1
        return node - self.size

    def set(self, leaf: int, value: int) -> None:
        node = leaf + self.size
        self.free[node] = value
        while node > 1:
            node //= 2
            self.free[node] = max(self.free[2 * node], self.free[2 * node + 1])


def first_fit_decreasing(lengths: Sequence[int], budget: int, *, max_per_bin: int | None = None) -> list[list[int]]:
    """Pack sequences into as few bins of ``budget`` tokens as first-fit-decreasing finds.

    Args:
        lengths: token count of each sequence.
        budget: the most tokens one bin may hold.
        max_per_bin: optional cap on sequences per bin (e.g. a maximum batch size).

    Returns:
        Bins as lists of indices into ``lengths``; every index appears exactly once, each bin's
        total is ``<= budget``. Deterministic: ties keep index order.

    Raises:
        ValueError: a sequence is longer than ``budget`` (or a length is negative).
    """
    _check_budget(budget, max_per_bin)
    for i, length in enumerate(lengths):
        _check_length(length, budget, f"sequence {i}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties in index order
    tree = _FirstFitTree(len(lengths), budget)
    bins: list[list[int]] = []
    used: list[int] = []
    for i in order:
        b = tree.first_fit(lengths[i])
        if b == len(bins):
            bins.append([])
            used.append(0)
        bins[b].append(i)
        used[b] += lengths[i]
        full = max_per_bin is not None and len(bins[b]) >= max_per_bin
        tree.set(b, -1 if full else budget - used[b])
    return bins


def stream_pack(
    items: Iterable[T],
    budget: int,
    *,
    length: Callable[[T], int] = len,
    buffer_size: int = 1,
    max_per_bin: int | None = None,
) -> Iterator[list[T]]:
    """Pack a stream of items into bins of at most ``budget`` tokens, lazily.

    With ``buffer_size=1`` this is next-fit greedy: items are appended in order and a bin is emitted
    when the next item does not fit. With ``buffer_size=k > 1``, ``k`` items are buffered and packed
    with :func:`first_fit_decreasing`; every bin but the emptiest is emitted and the emptiest one's
    items go back into the buffer to be topped up, which packs nearly as tightly as offline FFD.
    Every item is emitted exactly once, in a bin whose total length is ``<= budget``.

    Raises:
        ValueError: an item is longer than ``budget`` (raised when the stream reaches it).
    """
    _check_budget(budget, max_per_bin)
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    if buffer_size == 1:
        yield from _next_fit(items, budget, length, max_per_bin)
        return
    buffer: list[tuple[T, int]] = []
    for pos, item in enumerate(items):
        n = length(item)
        _check_length(n, budget, f"item {pos} of the stream")
        buffer.append((item, n))
        if len(buffer) >= buffer_size:
            bins = first_fit_decreasing([n for _, n in buffer], budget, max_per_bin=max_per_bin)
            keep = min(range(len(bins)), key=lambda b: sum(buffer[i][1] for i in bins[b])) if len(bins) > 1 else -1
            for b, members in enumerate(bins):
                if b != keep:
                    yield [buffer[i][0] for i in members]
            buffer = [buffer[i] for i in bins[keep]] if keep >= 0 else []
    if buffer:
        for members in first_fit_decreasing([n for _, n in buffer], budget, max_per_bin=max_per_bin):
            yield [buffer[i][0] for i in members]


def _next_fit(
    items: Iterable[T], budget: int, length: Callable[[T], int], max_per_bin: int | None
) -> Iterator[list[T]]:
    current: list[T] = []
    used = 0
    for pos, item in enumerate(items):
        n = length(item)
        _check_length(n, budget, f"item {pos} of the stream")
        if current and (used + n > budget or (max_per_bin is not None and len(current) >= max_per_bin)):
            yield current
            current, used = [], 0
        current.append(item)
        used += n
    if current:
        yield current


@dataclass(frozen=True)
class PackingStats:
    """How well batches use their token slots.

    Attributes:
        num_sequences: sequences over all batches.
        num_batches: batches.
        tokens: real tokens over all batches.
        slots: token slots the batches occupy: ``num_batches * budget`` for fixed-size packed
            buffers, ``sum(batch_size * longest)`` for padded batches.
        min_fill: the emptiest batch's share of its slots.
    """

    num_sequences: int
    num_batches: int
    tokens: int
    slots: int
    min_fill: float

    @property
    def efficiency(self) -> float:
        """Share of slots holding real tokens (1.0 = no padding)."""
        return self.tokens / self.slots if self.slots else 1.0

    @property
    def padding(self) -> int:
        """Slots holding padding."""
        return self.slots - self.tokens

    def __str__(self) -> str:
        return (
            f"{self.num_sequences} sequences in {self.num_batches} batches: {self.tokens:,} tokens in "
            f"{self.slots:,} slots, efficiency {self.efficiency:.1%} (emptiest batch {self.min_fill:.1%})"
        )


def packing_stats(
    batches: Sequence[Sequence[int]],
    lengths: Sequence[int],
    *,
    layout: Literal["packed", "padded"] = "packed",
    budget: int | None = None,
) -> PackingStats:
    """Padding efficiency of ``batches`` (lists of indices into ``lengths``).

    ``layout="packed"`` measures fixed-size packed buffers of ``budget`` tokens (what a static-shape
    step pays for); ``layout="padded"`` measures padding every sequence of a batch to its longest.
    """
    if layout == "packed":
        if budget is None:
            raise ValueError("layout='packed' needs the budget (tokens per batch)")
        sizes = [budget] * len(batches)
    elif layout == "padded":
        sizes = [len(b) * max((lengths[i] for i in b), default=0) for b in batches]
    else:
        raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
    filled = [sum(lengths[i] for i in b) for b in batches]
    fills = [f / s if s else 1.0 for f, s in zip(filled, sizes)]
    return PackingStats(
        num_sequences=sum(len(b) for b in batches),
        num_batches=len(batches),
        tokens=sum(filled),
        slots=sum(sizes),
        min_fill=min(fills, default=1.0),
    )
