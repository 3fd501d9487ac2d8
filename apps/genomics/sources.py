"""The registered genomics datasets (``longseq data list``) as records and datasets of this app.

Each loader checks the files with :func:`longseq.core.data.require` (present, right size) under the
data root of :func:`longseq.core.data.resolve_root` and raises its error, which names the fix, when
they are not there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from longseq.apps.genomics.datasets import SequenceClassificationDataset
from longseq.apps.genomics.fasta import ReadResult, read_fasta
from longseq.core.data import require

__all__ = [
    "ECOLI_K12",
    "IENHANCER_CLASSES",
    "PROMOTER_CLASSES",
    "ienhancer_files",
    "load_ecoli_k12",
    "load_human_nontata_promoters",
    "load_ienhancer",
]

ECOLI_K12 = "genomics/reference/GCF_000005845.2_ASM584v2_genomic.fna.gz"
"""E. coli K-12 MG1655 reference (one record, NC_000913.3), relative to the data root."""

IENHANCER_CLASSES = ("non_enhancer", "enhancer")
"""iEnhancer layer-1 class names; the label is the position (enhancer = 1)."""

PROMOTER_CLASSES = ("non_promoter", "promoter")
"""human_nontata_promoters class names for labels 0 and 1."""

_IENHANCER_FILES = {"train": ("non.cv.txt", "enhancer.cv.txt"), "test": ("non.ind.txt", "enhancer.ind.txt")}
_PROMOTERS = "genomics/genomic_benchmarks/human_nontata_promoters/test.csv"


def load_ecoli_k12(root: str | Path | None = None, **read_kwargs: Any) -> ReadResult:
    """Read the E. coli K-12 reference (4,641,652 bp); ``read_kwargs`` go to
    :func:`~longseq.apps.genomics.fasta.read_fasta` (``soft_mask``, ``iupac``)."""
    return read_fasta(require("ecoli_k12", root) / ECOLI_K12, **read_kwargs)


def ienhancer_files(split: Literal["train", "test"] = "train", root: str | Path | None = None) -> dict[str, Path]:
    """``{class name: FASTA path}`` of the iEnhancer layer-1 ``"train"`` (cv) or ``"test"`` (ind) split."""
    if split not in _IENHANCER_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = require("ienhancer", root) / "genomics/ienhancer"
    return {name: base / file for name, file in zip(IENHANCER_CLASSES, _IENHANCER_FILES[split])}


def load_ienhancer(
    split: Literal["train", "test"] = "train", root: str | Path | None = None, **kwargs: Any
) -> SequenceClassificationDataset:
    """iEnhancer layer 1 (enhancer vs non-enhancer, 200 bp): train 1,484 + 1,484, test 200 + 200;
    ``kwargs`` go to :meth:`SequenceClassificationDataset.from_fasta_per_class`."""
    return SequenceClassificationDataset.from_fasta_per_class(ienhancer_files(split, root), **kwargs)


def load_human_nontata_promoters(root: str | Path | None = None, **kwargs: Any) -> SequenceClassificationDataset:
    """Genomic Benchmarks human_nontata_promoters, its official TEST split only (9,034 x 251 bp,
    label 1 = promoter). The train split is not available here: evaluate by k-fold cross-validation
    within this split (:func:`~longseq.apps.genomics.splits.kfold_splits`), and say so when reporting.
    ``kwargs`` go to :meth:`SequenceClassificationDataset.from_csv`."""
    kwargs.setdefault("class_names", PROMOTER_CLASSES)
    return SequenceClassificationDataset.from_csv(require("human_nontata_promoters", root) / _PROMOTERS, **kwargs)
