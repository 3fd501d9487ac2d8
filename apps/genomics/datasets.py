"""Map-style datasets: genome language-model windows and sequence classification.

Both yield dicts that :mod:`longseq.apps.genomics.collate` (and ``longseq.core.packing``'s collate)
understand: ``{"input_ids": LongTensor (L,)}``, plus ``"labels"`` (a 0-d LongTensor) for classification.
Randomness (window positions, reverse-complement augmentation) is a function of ``(seed, epoch,
index)``, so DataLoader workers agree and runs reproduce; call ``set_epoch`` before each epoch
(with ``persistent_workers=True`` the workers keep the epoch they were started with).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from longseq.apps.genomics.alphabet import IupacPolicy, SequenceError, SequenceWarning, SoftMaskPolicy
from longseq.apps.genomics.fasta import SequenceRecord, read_sequences
from longseq.apps.genomics.tables import encode_labels, read_label_table, read_sequence_table
from longseq.apps.genomics.tokenizer import DNATokenizer

__all__ = ["GenomeWindowDataset", "SequenceClassificationDataset", "Window"]

OnShort = Literal["error", "skip"]
_MAX_IDS = 5


def _first(items: Sequence[str]) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > _MAX_IDS else ""
    return ", ".join(map(repr, items[:_MAX_IDS])) + more


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _short(what: str, n_short: int, n_total: int, ids: Sequence[str], need: str, on_short: OnShort) -> None:
    """Raise (``on_short="error"``) or warn about ``n_short`` of ``n_total`` items below the minimum length."""
    if not n_short:
        return
    if on_short not in ("error", "skip"):
        raise ValueError(f"on_short must be 'error' or 'skip', got {on_short!r}")
    message = f"{n_short} of {n_total} {what} shorter than {need}: {_first(list(ids))}"
    if on_short == "error" or n_short == n_total:
        hint = "; pass on_short='skip' to leave them out" if n_short < n_total else ""
        raise SequenceError(message + hint)
    warnings.warn(f"skipped {message}", SequenceWarning, stacklevel=3)


@dataclass(frozen=True)
class Window:
    """Where item ``i`` of a :class:`GenomeWindowDataset` comes from, in record coordinates.

    Attributes:
        record: record id.
        start: first base (0-based, inclusive).
        end: last base + 1 (exclusive); the item has ``end - start`` tokens.
        reverse_complement: whether the item is the reverse complement of ``seq[start:end]``.
    """

    record: str
    start: int
    end: int
    reverse_complement: bool


class GenomeWindowDataset(Dataset):
    """Windows of ``window + 1`` tokens from one or more reference sequences, for causal LM.

    Each record is split by region: the first ``1 - val_fraction`` is ``"train"``, the last
    ``val_fraction`` (``round(len * val_fraction)`` bases) is ``"val"``. Windows never cross the
    region boundary nor a record end. An item has ``window + 1`` tokens so that inputs
    ``ids[:-1]`` and targets ``ids[1:]`` are both ``window`` long.

    Sampling:
        ``"random"``: ``num_windows`` windows per epoch, uniform over every valid position of the
        split (records weighted by their number of positions), drawn from ``(seed, epoch)``.
        ``"strided"``: windows start every ``stride`` bases (default ``window``: consecutive windows
        share one base, so every base after a region's first is a target exactly once). With
        ``keep_tail`` the region's remaining bases form one last shorter window (at least 2 tokens);
        without, they are counted in :attr:`uncovered_bases`.

    Regions shorter than ``window + 1`` bases raise (``on_short="error"``) or are skipped with a
    :class:`SequenceWarning` naming them (``"skip"``).

    Args:
        records: the reference sequences (``ACGTN``, any case).
        window: L, the number of input (and target) tokens.
        split: ``"train"`` or ``"val"``.
        val_fraction: fraction of each record at its end held out for validation, in [0, 1).
        sampling: ``"random"`` or ``"strided"``; None means random for train, strided for val.
        num_windows: windows per epoch in random mode; default: the split's bases // window.
        stride: start-to-start distance in strided mode; default ``window``.
        keep_tail: strided mode: add the last shorter window (see above).
        rc_prob: probability that an item is reverse-complemented.
        seed: base seed of the random draws.
        on_short: ``"error"`` or ``"skip"`` regions too short for one window.

    Attributes:
        record_ids: ids of the records, in order.
        tokens: ``(T,)`` uint8 token ids of all records concatenated.
        regions: ``(R, 3)`` int64 rows ``(record index, start, end)`` of the split's usable regions, in
            ``tokens`` coordinates.
        num_bases: bases in those regions.
        uncovered_bases: strided mode: bases at region tails in no window (0 with ``keep_tail`` unless
            ``stride > window + 1``, which also leaves gaps between windows by choice).
    """

    def __init__(
        self,
        records: Sequence[SequenceRecord],
        window: int,
        *,
        split: Literal["train", "val"] = "train",
        val_fraction: float = 0.1,
        sampling: Literal["random", "strided"] | None = None,
        num_windows: int | None = None,
        stride: int | None = None,
        keep_tail: bool = True,
        rc_prob: float = 0.0,
        seed: int = 0,
        on_short: OnShort = "error",
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if split == "val" and val_fraction == 0.0:
            raise ValueError("split='val' needs val_fraction > 0 (the validation region is empty)")
        sampling = sampling or ("random" if split == "train" else "strided")
        if sampling not in ("random", "strided"):
            raise ValueError(f"sampling must be 'random' or 'strided', got {sampling!r}")
        if stride is not None and stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if num_windows is not None and num_windows < 1:
            raise ValueError(f"num_windows must be >= 1, got {num_windows}")
        _check_probability("rc_prob", rc_prob)
        if len(records) == 0:
            raise ValueError("records is empty; expected at least one reference sequence")
        self.window, self.split, self.val_fraction, self.sampling = window, split, val_fraction, sampling
        self.stride, self.keep_tail = stride or window, keep_tail
        self.rc_prob, self.seed, self.epoch = rc_prob, seed, 0
        self.record_ids = [r.id for r in records]
        self.tokens, offsets = DNATokenizer().encode_many([r.seq for r in records], names=self.record_ids)  # (T,) uint8
        self.regions = self._regions(offsets, on_short)  # (R, 3): record index, global start, global end
        self._offsets = offsets
        span = self.regions[:, 2] - self.regions[:, 1]
        self.num_bases = int(span.sum())
        if sampling == "random":
            self.num_windows = num_windows or max(1, self.num_bases // window)
            self._positions = np.cumsum(span - window)  # valid starts per region, cumulated
            self._strided = None
            self.uncovered_bases = 0
        else:
            self._strided = self._strided_windows()
            self.num_windows = len(self._strided)
            self.uncovered_bases = int(np.maximum(self.regions[:, 2] - self._region_ends(), 0).sum())
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_files(
        cls,
        paths: str | Path | Sequence[str | Path],
        window: int,
        *,
        soft_mask: SoftMaskPolicy = "upper",
        iupac: IupacPolicy = "to_n",
        **kwargs: Any,
    ) -> GenomeWindowDataset:
        """Read FASTA/FASTQ files (:func:`~longseq.apps.genomics.fasta.read_sequences`) and build the
        dataset from all their records; ``kwargs`` go to the constructor."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        records = [rec for path in paths for rec in read_sequences(path, soft_mask=soft_mask, iupac=iupac).records]
        return cls(records, window, **kwargs)

    def _regions(self, offsets: np.ndarray, on_short: OnShort) -> np.ndarray:
        """``(R, 3)`` int64 rows ``(record, start, end)`` in global token coordinates, short ones removed."""
        rows, short = [], []
        for i, (begin, end) in enumerate(zip(offsets[:-1], offsets[1:])):
            n = int(end - begin)
            boundary = int(begin) + n - int(round(n * self.val_fraction))
            start, stop = (int(begin), boundary) if self.split == "train" else (boundary, int(end))
            if stop - start < self.window + 1:
                short.append(f"{self.record_ids[i]} ({self.split} region {stop - start} bases)")
            else:
                rows.append((i, start, stop))
        _short("records", len(short), len(offsets) - 1, short, f"window + 1 = {self.window + 1}", on_short)
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def _strided_windows(self) -> np.ndarray:
        """``(W, 3)`` rows ``(region, global start, length)`` of the strided windows."""
        out = []
        for r, (_, start, end) in enumerate(self.regions):
            starts = np.arange(start, end - self.window, self.stride)  # full windows: start + window + 1 <= end
            rows = [np.stack([np.full_like(starts, r), starts, np.full_like(starts, self.window + 1)], 1)]
            tail = int(starts[-1]) + self.stride
            if self.keep_tail and end - tail >= 2:
                rows.append(np.array([[r, tail, end - tail]]))
            out.extend(rows)
        return np.concatenate(out).astype(np.int64)

    def _region_ends(self) -> np.ndarray:
        """``(R,)`` the end of the last window of each region (strided mode)."""
        assert self._strided is not None
        ends = np.zeros(len(self.regions), dtype=np.int64)
        np.maximum.at(ends, self._strided[:, 0], self._strided[:, 1] + self._strided[:, 2])
        return ends

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose windows (random mode) and augmentation draws are used."""
        self.epoch = int(epoch)

    def _epoch_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(region (W,), global start (W,), reverse (W,) bool)`` of the current epoch, cached."""
        if self._cache is None or self._cache[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            if self._strided is None:
                draw = rng.integers(0, int(self._positions[-1]), size=self.num_windows)
                region = np.searchsorted(self._positions, draw, side="right")
                before = np.concatenate([[0], self._positions[:-1]])[region]
                start = self.regions[region, 1] + (draw - before)
            else:
                region, start = self._strided[:, 0], self._strided[:, 1]
            reverse = rng.random(self.num_windows) < self.rc_prob
            self._cache = (self.epoch, region, start, reverse)
        return self._cache[1:]

    def __len__(self) -> int:
        return self.num_windows

    def _locate(self, index: int) -> tuple[int, int, int, bool]:
        """``(record index, global start, length, reverse)`` of item ``index`` in the current epoch."""
        if not 0 <= index < self.num_windows:
            raise IndexError(f"index {index} out of range for {self.num_windows} windows")
        region, start, reverse = (a[index] for a in self._epoch_table())
        length = self.window + 1 if self._strided is None else int(self._strided[index, 2])
        return int(self.regions[region, 0]), int(start), length, bool(reverse)

    def window_at(self, index: int) -> Window:
        """Record coordinates of item ``index`` in the current epoch."""
        record, start, length, reverse = self._locate(index)
        local = start - int(self._offsets[record])
        return Window(self.record_ids[record], local, local + length, reverse)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        _, start, length, reverse = self._locate(index)
        ids = self.tokens[start : start + length].long()  # (L+1,)
        if reverse:
            ids = DNATokenizer().reverse_complement_ids(ids)
        return {"input_ids": ids}


class SequenceClassificationDataset(Dataset):
    """Labelled sequences, tokenised once (one byte per base), with optional reverse-complement augmentation.

    Items are ``{"input_ids": LongTensor (L_i,), "labels": LongTensor ()}``; lengths may differ
    (the collate functions pad or pack). Build from lists, or with :meth:`from_fasta_per_class`
    (one FASTA per class, the iEnhancer layout), :meth:`from_csv` (``seq,label``, the Genomic
    Benchmarks layout) or :meth:`from_fasta_and_labels` (a FASTA plus an ``id,label`` table).

    Args:
        sequences: ``ACGTN`` strings (any case).
        labels: class index of each sequence, in ``[0, num_classes)``.
        ids: an id per sequence (default ``"0"``, ``"1"``, ...).
        class_names: one name per class (default ``"0" .. str(max label)``).
        add_cls: put ``[CLS]`` first in every item.
        add_eos: put ``[EOS]`` last in every item.
        rc_prob: probability that an item is reverse-complemented (special tokens stay in place).
        seed: base seed of the augmentation draws (with ``epoch`` and the index).
        min_length: shortest accepted sequence (bases).
        on_short: ``"error"`` or ``"skip"`` (with a :class:`SequenceWarning`) shorter sequences.
    """

    def __init__(
        self,
        sequences: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        *,
        ids: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        add_cls: bool = False,
        add_eos: bool = False,
        rc_prob: float = 0.0,
        seed: int = 0,
        min_length: int = 1,
        on_short: OnShort = "error",
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        ids = [str(i) for i in range(len(sequences))] if ids is None else list(ids)
        if not (len(sequences) == len(labels) == len(ids)):
            raise ValueError(
                f"sequences, labels and ids must have the same length, got {len(sequences)}, {len(labels)}, {len(ids)}"
            )
        if len(sequences) == 0:
            raise ValueError("no sequences; expected at least one")
        if labels.ndim != 1 or labels.min() < 0:
            raise ValueError(f"labels must be non-negative class indices, got min {labels.min()}")
        names = [str(i) for i in range(int(labels.max()) + 1)] if class_names is None else list(class_names)
        if labels.max() >= len(names):
            raise ValueError(f"label {int(labels.max())} has no class name; class_names has {len(names)}: {names}")
        _check_probability("rc_prob", rc_prob)
        if min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {min_length}")
        short = [i for i, s in enumerate(sequences) if len(s) < min_length]
        described = [f"{ids[i]} ({len(sequences[i])} bp)" for i in short]
        _short("sequences", len(short), len(sequences), described, f"min_length = {min_length}", on_short)
        keep = np.setdiff1d(np.arange(len(sequences)), short)
        self._ids = [ids[i] for i in keep]
        self.tokens, self._offsets = DNATokenizer().encode_many([sequences[i] for i in keep], names=self._ids)
        self._labels = labels[keep]
        self._index = np.arange(len(keep))  # dataset position -> stored sequence (subsets share storage)
        self.class_names = names
        self.add_cls, self.add_eos, self.rc_prob, self.seed, self.epoch = add_cls, add_eos, rc_prob, seed, 0

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_fasta_per_class(
        cls,
        files: Mapping[str, str | Path | Sequence[str | Path]],
        *,
        soft_mask: SoftMaskPolicy = "upper",
        iupac: IupacPolicy = "to_n",
        **kwargs: Any,
    ) -> SequenceClassificationDataset:
        """One FASTA (or several) per class: ``{class name: path(s)}``; class ``i`` is the ``i``-th key."""
        if not files:
            raise ValueError("files is empty; expected {class name: FASTA path(s)}")
        seqs, labels, ids = [], [], []
        for label, paths in enumerate(files.values()):
            for path in [paths] if isinstance(paths, (str, Path)) else paths:
                for rec in read_sequences(path, soft_mask=soft_mask, iupac=iupac).records:
                    seqs.append(rec.seq)
                    labels.append(label)
                    ids.append(rec.id)
        return cls(seqs, labels, ids=ids, class_names=[str(k) for k in files], **kwargs)

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        *,
        seq_col: str = "seq",
        label_col: str = "label",
        soft_mask: SoftMaskPolicy = "upper",
        iupac: IupacPolicy = "to_n",
        **kwargs: Any,
    ) -> SequenceClassificationDataset:
        """A ``seq,label`` table; labels encoded by :func:`~longseq.apps.genomics.tables.encode_labels`
        (``class_names`` may rename them); ids are ``"line N"`` (N counts lines in the file)."""
        seqs, raw, _ = read_sequence_table(path, seq_col=seq_col, label_col=label_col, soft_mask=soft_mask, iupac=iupac)
        labels, names = encode_labels(raw, source=str(path))
        kwargs.setdefault("ids", [f"line {i + 2}" for i in range(len(seqs))])
        kwargs.setdefault("class_names", names)
        return cls(seqs, labels, **kwargs)

    @classmethod
    def from_fasta_and_labels(
        cls,
        fasta: str | Path,
        label_table: str | Path,
        *,
        id_col: str = "id",
        label_col: str = "label",
        strict: bool = True,
        soft_mask: SoftMaskPolicy = "upper",
        iupac: IupacPolicy = "to_n",
        **kwargs: Any,
    ) -> SequenceClassificationDataset:
        """A user's FASTA plus an ``id,label`` table (CSV or TSV with a header), matched by record id.

        Ids in the table but not in the FASTA, or in the FASTA but not in the table, are an error
        listing the first few (``strict=True``); with ``strict=False`` they are left out with a
        :class:`SequenceWarning` giving the counts. A FASTA id listed twice is always an error.
        """
        records = read_sequences(fasta, soft_mask=soft_mask, iupac=iupac).records
        table = read_label_table(label_table, id_col=id_col, label_col=label_col)
        seen: dict[str, int] = {}
        for rec in records:
            if rec.id in seen:
                raise SequenceError(f"{fasta}: record id {rec.id!r} appears more than once; ids must be unique")
            seen[rec.id] = 1
        no_label = [r.id for r in records if r.id not in table]
        no_seq = [i for i in table if i not in seen]
        if no_label or no_seq:
            message = (
                f"{label_table} does not match {fasta}: {len(no_seq)} labelled id(s) not in the FASTA"
                f"{' (' + _first(no_seq) + ')' if no_seq else ''}, {len(no_label)} FASTA record(s) without a label"
                f"{' (' + _first(no_label) + ')' if no_label else ''}"
            )
            if strict:
                raise SequenceError(message + "; pass strict=False to use only the ids found in both")
            warnings.warn(
                f"{message}; using the {len(records) - len(no_label)} ids found in both", SequenceWarning, stacklevel=2
            )
        matched = [r for r in records if r.id in table]
        if not matched:
            raise SequenceError(f"{label_table} and {fasta} share no ids")
        labels, names = encode_labels([table[r.id] for r in matched], source=str(label_table))
        return cls([r.seq for r in matched], labels, ids=[r.id for r in matched], class_names=names, **kwargs)

    # ---------------------------------------------------------------- access

    def __len__(self) -> int:
        return len(self._index)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` int64 class index of every item."""
        return self._labels[self._index]

    @property
    def ids(self) -> list[str]:
        """The id of every item."""
        return [self._ids[i] for i in self._index]

    @property
    def lengths(self) -> np.ndarray:
        """``(N,)`` number of tokens of every item (special tokens included)."""
        stored = np.diff(self._offsets)[self._index]
        return stored + int(self.add_cls) + int(self.add_eos)

    def class_counts(self) -> dict[str, int]:
        """Items per class name."""
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return dict(zip(self.class_names, counts.tolist()))

    def sequence(self, index: int) -> str:
        """The bases of item ``index`` (uppercase, before augmentation)."""
        i = int(self._index[index])
        return DNATokenizer().decode(self.tokens[self._offsets[i] : self._offsets[i + 1]])

    def subset(self, indices: Sequence[int] | np.ndarray) -> SequenceClassificationDataset:
        """A dataset of the items at ``indices`` (sharing token storage), e.g. a k-fold split."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"subset indices must be in [0, {len(self)}), got min {indices.min()} max {indices.max()}")
        sub = object.__new__(type(self))
        sub.__dict__.update(self.__dict__)
        sub._index = self._index[indices]
        return sub

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws are used."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        i = int(self._index[index])
        ids = self.tokens[self._offsets[i] : self._offsets[i + 1]].long()  # (L,)
        tok = DNATokenizer()
        if self.rc_prob > 0 and np.random.default_rng([self.seed, self.epoch, i]).random() < self.rc_prob:
            ids = tok.reverse_complement_ids(ids)
        prefix = [tok.cls_id] if self.add_cls else []
        suffix = [tok.eos_id] if self.add_eos else []
        if prefix or suffix:
            ids = torch.cat([torch.tensor(prefix, dtype=torch.long), ids, torch.tensor(suffix, dtype=torch.long)])
        return {"input_ids": ids, "labels": torch.tensor(int(self._labels[i]))}
