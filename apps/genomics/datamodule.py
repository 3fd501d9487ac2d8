"""LightningDataModules: genome language modelling and sequence classification.

* :class:`GenomeLMDataModule`: windows of reference sequences (E. coli K-12 from the data registry,
  or the user's FASTA files); the last ``val_fraction`` of every record is held out for validation
  (and test); random or strided training windows, reverse-complement augmentation, and
  :meth:`~GenomeLMDataModule.set_window` to change the window length between epochs (used by
  :class:`~longseq.apps.genomics.callbacks.SequenceLengthWarmup`, HyenaDNA's warm-up).
* :class:`SequenceClassificationDataModule`: iEnhancer (FASTA per class), human_nontata_promoters,
  a ``seq,label`` CSV, FASTA files per class or a FASTA plus an ``id,label`` table; a stratified
  validation fold (``folds``/``fold`` for k-fold cross-validation) and a test split.

Data roots resolve as :func:`longseq.core.data.resolve_root` does: ``root`` (``--data.root``), then
``$LONGSEQ_DATA``, then ``~/.cache/longseq``. Batches: LM windows padded to ``(B, L + 1)``
(:class:`~longseq.apps.genomics.collate.PadCollate`); classification items packed
(:class:`~longseq.core.packing.PackedCollate`, exact for every mixer whatever the lengths).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset

from longseq.apps.genomics.alphabet import SequenceWarning
from longseq.apps.genomics.collate import PadCollate
from longseq.apps.genomics.datasets import GenomeWindowDataset, SequenceClassificationDataset
from longseq.apps.genomics.fasta import SequenceRecord, read_sequences
from longseq.apps.genomics.sources import ienhancer_files, load_ecoli_k12, load_human_nontata_promoters
from longseq.apps.genomics.splits import kfold_splits
from longseq.core.packing import PackedCollate

__all__ = ["ClassificationSource", "GenomeLMDataModule", "SequenceClassificationDataModule", "set_dataset_epoch"]

ClassificationSource = Literal["ienhancer", "human_nontata_promoters", "csv", "fasta_per_class", "fasta_labels"]


def set_dataset_epoch(dataset: Dataset, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on ``dataset`` (or the dataset under a ``Subset``) when it has one."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def _evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """``min(n, limit)`` indices spread evenly over ``range(n)`` (all of them when ``limit`` is None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


class GenomeLMDataModule(L.LightningDataModule):
    """Causal-LM windows of reference genomes.

    Args:
        fasta: FASTA/FASTQ file(s) (optionally gzip) whose records are the references; None uses
            E. coli K-12 (``ecoli_k12`` in the data registry).
        root: data root for the registry dataset.
        window: L, input (and target) tokens per window; items have ``L + 1`` tokens.
        batch_size: windows per batch (per device).
        val_fraction: fraction at the end of every record held out (validation and test).
        sampling: training windows ``"random"`` (``train_windows`` per epoch, new positions every
            epoch) or ``"strided"`` (every ``stride`` bases).
        train_windows: random training windows per epoch; default ``train bases // window``.
        stride: strided start-to-start distance; default ``window`` (also used for validation).
        max_val_windows: evaluate at most this many validation windows, spread evenly over the
            held-out region (None: all of it).
        rc_prob: probability that a training window is reverse-complemented.
        seed: seed of window positions and augmentation.
        num_workers: DataLoader workers.
        pin_memory: DataLoader ``pin_memory``.
    """

    def __init__(
        self,
        fasta: str | list[str] | None = None,
        root: str | None = None,
        window: int = 1024,
        batch_size: int = 8,
        val_fraction: float = 0.1,
        sampling: Literal["random", "strided"] = "random",
        train_windows: int | None = None,
        stride: int | None = None,
        max_val_windows: int | None = None,
        rc_prob: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if window < 1 or batch_size < 1:
            raise ValueError(f"window and batch_size must be >= 1, got {window} and {batch_size}")
        if max_val_windows is not None and max_val_windows < 1:
            raise ValueError(f"max_val_windows must be >= 1 or None, got {max_val_windows}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1) (the held-out region), got {val_fraction}")
        self.save_hyperparameters()
        self.fasta = [fasta] if isinstance(fasta, str) else fasta
        self.root = root
        self.window = self.target_window = window
        self.batch_size = self.base_batch_size = batch_size
        self.val_fraction, self.sampling, self.train_windows = val_fraction, sampling, train_windows
        self.stride, self.max_val_windows, self.rc_prob, self.seed = stride, max_val_windows, rc_prob, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self._records: list[SequenceRecord] | None = None
        self.train_set: GenomeWindowDataset | None = None
        self.val_set: Dataset | None = None

    # ---------------------------------------------------------------- data

    def records(self) -> list[SequenceRecord]:
        """The reference records (read once)."""
        if self._records is None:
            if self.fasta is None:
                self._records = load_ecoli_k12(self.root, soft_mask="upper").records
            else:
                if not self.fasta:
                    raise ValueError("fasta is an empty list; give one or more FASTA files or None for E. coli")
                self._records = [r for p in self.fasta for r in read_sequences(p, soft_mask="upper").records]
        return self._records

    def _train_dataset(self) -> GenomeWindowDataset:
        stride = None if self.stride is None else min(self.stride, self.window)
        return GenomeWindowDataset(
            self.records(),
            self.window,
            split="train",
            val_fraction=self.val_fraction,
            sampling=self.sampling,
            num_windows=self.train_windows,
            stride=stride,
            rc_prob=self.rc_prob,
            seed=self.seed,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None or self.train_set.window != self.window:
            self.train_set = self._train_dataset()
        if self.val_set is None:
            full = GenomeWindowDataset(
                self.records(), self.target_window, split="val", val_fraction=self.val_fraction, stride=self.stride
            )
            self.val_set = Subset(full, _evenly_spaced(len(full), self.max_val_windows).tolist())

    def set_window(self, window: int, batch_size: int | None = None) -> None:
        """Train on windows of ``window`` tokens (and ``batch_size``, default unchanged) from the next
        train DataLoader on (the trainer must reload it: ``reload_dataloaders_every_n_epochs=1``).
        Validation keeps the configured ``window`` so its numbers stay comparable."""
        if window < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"window and batch_size must be >= 1, got {window} and {batch_size}")
        self.window = int(window)
        if batch_size is not None:
            self.batch_size = int(batch_size)
        if self.train_set is not None and self.train_set.window != self.window:
            self.train_set = self._train_dataset()

    def _loader(self, dataset: Dataset, *, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=PadCollate(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # the dataset draws windows per epoch; a reloaded loader must start right
            self.train_set.set_epoch(trainer.current_epoch)
        return self._loader(self.train_set, shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, shuffle=False, batch_size=self.base_batch_size)

    def test_dataloader(self) -> DataLoader:
        """The held-out region (the same windows as validation)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class SequenceClassificationDataModule(L.LightningDataModule):
    """Labelled sequences for fine-tuning and evaluation.

    Sources (``source``):
        ``"ienhancer"``: iEnhancer layer 1 from the data registry (train = cv files, test = ind files).
        ``"human_nontata_promoters"``: its official test split only (use ``folds`` for cross-validation;
        there is no test split).
        ``"csv"``: ``train`` (and ``test``) are ``seq,label`` tables (CSV/TSV, header row).
        ``"fasta_per_class"``: ``train`` (and ``test``) map class name -> FASTA file.
        ``"fasta_labels"``: ``train`` (and ``test``) are FASTA files, ``train_labels`` (and
        ``test_labels``) ``id,label`` tables.

    Validation is a stratified fold of the training data: fold ``fold`` of ``folds`` (k-fold
    cross-validation: run ``fold = 0 .. folds-1``); with ``folds=None`` one fold of
    ``round(1 / val_fraction)``.

    Args:
        source: see above.
        train, test, train_labels, test_labels: files of the user sources (see above).
        root: data root of the registry sources.
        val_fraction: validation share when ``folds`` is None.
        folds, fold: k-fold cross-validation.
        batch_size: sequences per batch.
        rc_prob: reverse-complement augmentation of training sequences.
        min_length: shortest accepted sequence.
        on_short: ``"error"`` or ``"skip"`` (with a warning giving the count) shorter sequences.
        max_train: use at most this many training sequences (stratified subsample; smoke tests).
        seed: seed of the folds and augmentation.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        source: ClassificationSource = "ienhancer",
        train: str | dict[str, str] | None = None,
        test: str | dict[str, str] | None = None,
        train_labels: str | None = None,
        test_labels: str | None = None,
        root: str | None = None,
        val_fraction: float = 0.1,
        folds: int | None = None,
        fold: int = 0,
        batch_size: int = 32,
        rc_prob: float = 0.0,
        min_length: int = 1,
        on_short: Literal["error", "skip"] = "error",
        max_train: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if source not in ClassificationSource.__args__:
            raise ValueError(f"source must be one of {ClassificationSource.__args__}, got {source!r}")
        if folds is None:
            if not 0.0 < val_fraction <= 0.5:
                raise ValueError(f"val_fraction must be in (0, 0.5], got {val_fraction}")
            folds = max(2, round(1.0 / val_fraction))
        if folds < 2 or not 0 <= fold < folds:
            raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
        if source in ("csv", "fasta_per_class", "fasta_labels") and train is None:
            raise ValueError(f"source={source!r} needs train=... (the user's files)")
        if source == "fasta_labels" and train_labels is None:
            raise ValueError("source='fasta_labels' needs train_labels=... (an id,label table)")
        if source == "fasta_labels" and test is not None and test_labels is None:
            raise ValueError("source='fasta_labels' with test=... needs test_labels=...")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.source, self.train_files, self.test_files = source, train, test
        self.train_labels, self.test_labels, self.root = train_labels, test_labels, root
        self.folds, self.fold, self.batch_size, self.rc_prob = folds, fold, batch_size, rc_prob
        self.min_length, self.on_short, self.max_train, self.seed = min_length, on_short, max_train, seed
        self.num_workers = num_workers
        self.full_train: SequenceClassificationDataset | None = None
        self.train_set: SequenceClassificationDataset | None = None
        self.val_set: SequenceClassificationDataset | None = None
        self.test_set: SequenceClassificationDataset | None = None

    # ---------------------------------------------------------------- reading

    def _kwargs(self) -> dict[str, Any]:
        return {"min_length": self.min_length, "on_short": self.on_short, "seed": self.seed}

    def _read(self, files: Any, labels: str | None, what: str) -> SequenceClassificationDataset:
        kw = self._kwargs()
        if self.source == "csv":
            if not isinstance(files, (str, Path)):
                raise ValueError(f"source='csv': {what} must be the path of a seq,label table, got {files!r}")
            return SequenceClassificationDataset.from_csv(files, **kw)
        if self.source == "fasta_per_class":
            if not isinstance(files, dict) or len(files) < 2:
                raise ValueError(
                    f"source='fasta_per_class': {what} must map two or more class names to FASTA files, got {files!r}"
                )
            return SequenceClassificationDataset.from_fasta_per_class(files, **kw)
        if not isinstance(files, (str, Path)):
            raise ValueError(f"source='fasta_labels': {what} must be a FASTA path, got {files!r}")
        return SequenceClassificationDataset.from_fasta_and_labels(files, labels, **kw)

    def _load(self, split: Literal["train", "test"]) -> SequenceClassificationDataset | None:
        if self.source == "ienhancer":
            return SequenceClassificationDataset.from_fasta_per_class(
                ienhancer_files(split, self.root), **self._kwargs()
            )
        if self.source == "human_nontata_promoters":
            return load_human_nontata_promoters(self.root, **self._kwargs()) if split == "train" else None
        if split == "train":
            return self._read(self.train_files, self.train_labels, "train")
        if self.test_files is None:
            return None
        return self._read(self.test_files, self.test_labels, "test")

    def setup(self, stage: str | None = None) -> None:
        if self.full_train is None:
            full = self._load("train")
            if self.max_train is not None and self.max_train < len(full):
                # a stratified subsample: the first fold of enough folds to keep about max_train items
                k = max(2, min(len(full) // max(self.max_train, 1), int(np.bincount(full.labels).min())))
                full = full.subset(kfold_splits(len(full), k, seed=self.seed, labels=full.labels)[0][1])
            self.full_train = full
            if len(full) < self.folds:
                raise ValueError(f"{len(full)} training sequences cannot make {self.folds} folds")
            train_idx, val_idx = kfold_splits(len(full), self.folds, seed=self.seed, labels=full.labels)[self.fold]
            self.train_set, self.val_set = full.subset(train_idx), full.subset(val_idx)
            self.train_set.rc_prob = self.rc_prob
            self.val_set.rc_prob = 0.0
        if stage in ("test", "predict", None) and self.test_set is None:
            self.test_set = self._load("test")
            if self.test_set is not None and self.test_set.class_names != self.full_train.class_names:
                raise ValueError(
                    f"test classes {self.test_set.class_names} differ from training classes {self.full_train.class_names}"
                )

    @property
    def num_classes(self) -> int:
        """Number of classes (after :meth:`setup`)."""
        self.setup("fit")
        return self.full_train.num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names, index = class (after :meth:`setup`)."""
        self.setup("fit")
        return list(self.full_train.class_names)

    def class_counts(self) -> np.ndarray:
        """``(num_classes,)`` training items per class (for class-weighted losses)."""
        self.setup("fit")
        return np.bincount(self.train_set.labels, minlength=self.num_classes)

    # ---------------------------------------------------------------- loaders

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=PackedCollate(labels="sequence"),
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.train_set.set_epoch(trainer.current_epoch)
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        if self.test_set is None:
            raise ValueError(
                f"source={self.source!r} has no test split"
                + (" (only one split is available: use folds for cross-validation)" if self.source != "csv" else "")
                + (f"; give test=... for source={self.source!r}" if self.source not in ("ienhancer",) else "")
            )
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        if self.test_set is None:
            warnings.warn("no test split: predicting on the validation fold", SequenceWarning, stacklevel=2)
            return self._loader(self.val_set, shuffle=False)
        return self._loader(self.test_set, shuffle=False)
