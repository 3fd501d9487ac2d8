"""DataLoader pieces: a collate function that packs, a token-budget batch sampler, a packing stream.

Map-style datasets (lengths known)::

    sampler = TokenBudgetBatchSampler(lengths, max_tokens=16384, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=PackedCollate())

Iterable datasets::

    loader = DataLoader(PackedStream(dataset, max_tokens=16384, collate=PackedCollate()), batch_size=None)

Both yield :class:`PackedBatch` objects (``x``, boundaries, ``labels``). With Lightning and more than
one device, pass ``Trainer(use_distributed_sampler=False)``: Lightning cannot re-create a custom
batch sampler around its ``DistributedSampler``; :class:`TokenBudgetBatchSampler` splits batches over
ranks itself (``num_replicas``/``rank``, read from ``torch.distributed`` when not given).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import IterableDataset, Sampler, get_worker_info

from longseq.core.packing.batch import PackedBatch
from longseq.core.packing.bins import PackingStats, first_fit_decreasing, packing_stats, stream_pack
from longseq.core.packing.convert import pack

LabelKind = Literal["auto", "token", "sequence", "none"]


def _as_tensor(value: Any) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)


@dataclass
class PackedCollate:
    """``collate_fn`` turning a list of examples into one :class:`PackedBatch` (a plain, picklable callable).

    An example is a tensor ``(L, ...)`` (input only), a pair ``(input, label)``, or a mapping with
    ``input_key`` and optionally ``label_key``. Labels are per token (``(L, ...)``, packed like the
    inputs to ``(T, ...)``) or per sequence (a scalar or ``(...)``, stacked to ``(N, ...)``).

    Attributes:
        input_key: the input's key in mapping examples.
        label_key: the label's key in mapping examples.
        labels: ``"auto"`` takes a label whose leading size equals its input's length as per-token and
            anything else as per-sequence; ``"token"``/``"sequence"`` force one kind; ``"none"`` drops labels.
    """

    input_key: str = "input_ids"
    label_key: str = "labels"
    labels: LabelKind = "auto"

    def __post_init__(self) -> None:
        if self.labels not in ("auto", "token", "sequence", "none"):
            raise ValueError(f"labels must be 'auto', 'token', 'sequence' or 'none', got {self.labels!r}")

    def split(self, example: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(input (L, ...), label or None)`` of one example."""
        if isinstance(example, Mapping):
            if self.input_key not in example:
                raise KeyError(f"example has no input key {self.input_key!r}; keys: {sorted(example)}")
            x, y = example[self.input_key], example.get(self.label_key)
        elif isinstance(example, (tuple, list)):
            if len(example) != 2:
                raise ValueError(f"a sequence example must be (input, label), got {len(example)} items")
            x, y = example
        else:
            x, y = example, None
        x = _as_tensor(x)
        if x.dim() < 1:
            raise ValueError(f"an example's input must be (L, ...), got a 0-d tensor {x}")
        return x, (None if y is None or self.labels == "none" else _as_tensor(y))

    def length(self, example: Any) -> int:
        """Token count of one example's input."""
        return self.split(example)[0].shape[0]

    def __call__(self, examples: Sequence[Any]) -> PackedBatch:
        pairs = [self.split(e) for e in examples]
        xs = [x for x, _ in pairs]
        ys = [y for _, y in pairs]
        if all(y is None for y in ys):
            return pack(xs)
        if any(y is None for y in ys):
            raise ValueError("some examples have labels and some do not")
        kinds = {self._kind(x, y) for x, y in pairs}
        if len(kinds) != 1:
            raise ValueError("examples mix per-token and per-sequence labels; set labels='token' or 'sequence'")
        return pack(xs, ys if kinds == {"token"} else torch.stack(ys))

    def _kind(self, x: torch.Tensor, y: torch.Tensor) -> str:
        if self.labels != "auto":
            return self.labels
        return "token" if y.dim() >= 1 and y.shape[0] == x.shape[0] else "sequence"


def input_length(example: Any) -> int:
    """Token count of an example's input, found as :class:`PackedCollate` (default keys) finds it."""
    return PackedCollate(labels="none").length(example)


def _distributed(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``: given values, else torch.distributed's when initialised, else (1, 0)."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if initialised else 1)
    rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas=} {rank=}")
    return num_replicas, rank


def _padded_batches(lengths: Sequence[int], max_tokens: int, max_batch_size: int | None) -> list[list[int]]:
    """Length-sorted consecutive batches with ``batch_size * longest <= max_tokens``."""
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"sequence {i} has {n} tokens, more than max_tokens={max_tokens}; split or truncate it")
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        b = batches[-1] if batches else None
        longest = lengths[b[0]] if b else 0  # sorted: the first member is the longest
        if b is None or (len(b) + 1) * longest > max_tokens or (max_batch_size and len(b) >= max_batch_size):
            batches.append([i])
        else:
            b.append(i)
    return batches


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batch sampler whose batches hold at most ``max_tokens`` tokens ("batch by token count").

    Each epoch: indices are shuffled (``seed + epoch``), cut into windows of ``window`` indices (all of
    them by default), packed per window, and the batches shuffled. ``layout="packed"`` bounds the sum
    of lengths (first-fit-decreasing; for :class:`PackedCollate`); ``layout="padded"`` bounds
    ``batch_size * longest`` (length-sorted batches for padded collation). A sequence longer than
    ``max_tokens`` raises ``ValueError``.

    Distributed: every rank computes the same batches and takes every ``num_replicas``-th one. When
    the count does not divide, ``drop_last=True`` drops the remainder, otherwise the first batches
    are repeated (as ``DistributedSampler`` does) so every rank runs the same number of steps. With a
    single replica every index appears exactly once per epoch. Call :meth:`set_epoch` each epoch
    (Lightning does, through the :attr:`sampler` attribute). Lengths are validated, and the first
    epoch packed, on construction.

    Args:
        lengths: token count of each dataset item.
        max_tokens: the token budget of one batch.
        layout: ``"packed"`` or ``"padded"``, see above.
        shuffle: shuffle indices and batch order; ``False`` gives the same batches in packing order.
        seed: base seed; the epoch is added.
        window: pack within windows of this many shuffled indices so batch composition changes
            between epochs (``None``: one window; the composition is then fixed up to ties).
        max_batch_size: optional cap on sequences per batch.
        drop_last: with several replicas, drop the batches that do not divide evenly.
        num_replicas, rank: the data-parallel layout; default from ``torch.distributed`` or (1, 0).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        layout: Literal["packed", "padded"] = "packed",
        shuffle: bool = True,
        seed: int = 0,
        window: int | None = None,
        max_batch_size: int | None = None,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if layout not in ("packed", "padded"):
            raise ValueError(f"layout must be 'packed' or 'padded', got {layout!r}")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.lengths = [int(n) for n in lengths]
        self.max_tokens = max_tokens
        self.layout = layout
        self.shuffle = shuffle
        self.seed = seed
        self.window = window
        self.max_batch_size = max_batch_size
        self.drop_last = drop_last
        self.num_replicas, self.rank = _distributed(num_replicas, rank)
        self.epoch = 0
        self._cache: tuple[int, list[list[int]]] | None = None
        self.all_batches()  # validate lengths now rather than at the first epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the shuffle); call before iterating."""
        self.epoch = epoch

    @property
    def sampler(self) -> TokenBudgetBatchSampler:
        """This object: Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler`` every epoch."""
        return self

    def all_batches(self) -> list[list[int]]:
        """This epoch's batches over all ranks, before the split between ranks."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.lengths)
        order = torch.randperm(n, generator=gen).tolist() if self.shuffle else list(range(n))
        window = self.window or max(n, 1)
        batches: list[list[int]] = []
        for start in range(0, n, window):
            chunk = order[start : start + window]
            lens = [self.lengths[i] for i in chunk]
            if self.layout == "packed":
                bins = first_fit_decreasing(lens, self.max_tokens, max_per_bin=self.max_batch_size)
            else:
                bins = _padded_batches(lens, self.max_tokens, self.max_batch_size)
            batches += [[chunk[j] for j in b] for b in bins]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        self._cache = (self.epoch, batches)
        return batches

    def _rank_batches(self) -> list[list[int]]:
        batches = self.all_batches()
        r = self.num_replicas
        if r == 1:
            return batches
        if self.drop_last:
            batches = batches[: len(batches) // r * r]
        elif batches and len(batches) % r:
            pad = r - len(batches) % r
            batches = batches + [batches[i % len(batches)] for i in range(pad)]
        return batches[self.rank :: r]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._rank_batches())

    def __len__(self) -> int:
        return len(self._rank_batches())

    def stats(self) -> PackingStats:
        """Padding efficiency of this epoch's batches (all ranks) against ``max_tokens`` slots
        (``layout="packed"``) or per-batch padding to the longest (``layout="padded"``)."""
        return packing_stats(self.all_batches(), self.lengths, layout=self.layout, budget=self.max_tokens)


class PackedStream(IterableDataset):
    """An iterable of examples packed on the fly into batches of at most ``max_tokens`` tokens.

    Use with ``DataLoader(stream, batch_size=None)``. Examples are split between DataLoader workers
    and data-parallel ranks round-robin (example ``i`` goes to shard ``i % (replicas * workers)``),
    so each is used once per pass even though every worker reads the whole source. Ranks may end
    with different batch counts; bound the epoch by steps (e.g. ``max_steps``) under DDP.

    Args:
        source: any iterable of examples (re-iterable for several epochs).
        max_tokens: the token budget of one batch.
        collate: applied to each packed list of examples (e.g. :class:`PackedCollate`); ``None``
            yields the lists.
        length: an example's token count; default the length of its input as ``collate`` (when a
            :class:`PackedCollate`) or :func:`input_length` finds it.
        buffer_size, max_per_bin: see :func:`~longseq.core.packing.stream_pack`.
        num_replicas, rank: the data-parallel layout; default from ``torch.distributed`` or (1, 0).
    """

    def __init__(
        self,
        source: Iterable[Any],
        max_tokens: int,
        *,
        collate: Callable[[list[Any]], Any] | None = None,
        length: Callable[[Any], int] | None = None,
        buffer_size: int = 1,
        max_per_bin: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.source = source
        self.max_tokens = max_tokens
        self.collate = collate
        if length is None:
            length = collate.length if isinstance(collate, PackedCollate) else input_length
        self.length = length
        self.buffer_size = buffer_size
        self.max_per_bin = max_per_bin
        self.num_replicas, self.rank = _distributed(num_replicas, rank)

    def _shard(self) -> Iterator[Any]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        shards, shard = self.num_replicas * workers, self.rank * workers + worker
        for i, example in enumerate(self.source):
            if i % shards == shard:
                yield example

    def __iter__(self) -> Iterator[Any]:
        for members in stream_pack(
            self._shard(),
            self.max_tokens,
            length=self.length,
            buffer_size=self.buffer_size,
            max_per_bin=self.max_per_bin,
        ):
            yield self.collate(members) if self.collate is not None else members
