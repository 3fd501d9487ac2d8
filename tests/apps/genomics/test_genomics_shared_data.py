"""The shared genomics data loads with the sizes and counts of shared/data/MANIFEST.md."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from longseq.apps.genomics import DNATokenizer, GenomeWindowDataset, kfold_splits
from longseq.apps.genomics.sources import (
    IENHANCER_CLASSES,
    ienhancer_files,
    load_ecoli_k12,
    load_human_nontata_promoters,
    load_ienhancer,
)
from longseq.core.data import MissingDataError

ECOLI_BP = 4_641_652
ECOLI_VAL_START = ECOLI_BP - 464_165  # the last 10% (rounded) is validation


@pytest.fixture(scope="module")
def ecoli(shared_data_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no empty records, no ambiguity codes
        return load_ecoli_k12(shared_data_root)


def test_ecoli_reference_length_and_base_counts(ecoli):
    records, report = ecoli
    assert [r.id for r in records] == ["NC_000913.3"]
    assert records[0].description.startswith("NC_000913.3 Escherichia coli str. K-12 substr. MG1655")
    assert len(records[0].seq) == ECOLI_BP
    assert (report.n_records, report.n_bases, report.n_empty, report.n_ambiguous) == (1, ECOLI_BP, 0, 0)
    assert report.stats.n_soft_masked == 0
    tok = DNATokenizer()
    counts = np.bincount(tok.encode(records[0].seq, dtype=torch.uint8).numpy(), minlength=tok.vocab_size)
    assert {b: int(counts[tok.vocab[b]]) for b in "ACGTN"} == {
        "A": 1_142_742,
        "C": 1_180_091,
        "G": 1_177_437,
        "T": 1_141_382,
        "N": 0,
    }


def test_ecoli_windows_train_and_val_regions(ecoli):
    records, _ = ecoli
    train = GenomeWindowDataset(records, 1024, num_windows=500, rc_prob=0.5, seed=0)
    val = GenomeWindowDataset(records, 1024, split="val")
    assert train.regions.tolist() == [[0, 0, ECOLI_VAL_START]]
    assert val.regions.tolist() == [[0, ECOLI_VAL_START, ECOLI_BP]]
    assert abs((ECOLI_BP - ECOLI_VAL_START) / ECOLI_BP - 0.1) < 1e-6
    starts = np.array([train.window_at(i).start for i in range(len(train))])
    assert starts.min() >= 0 and starts.max() + 1025 <= ECOLI_VAL_START
    windows = [val.window_at(i) for i in range(len(val))]
    assert windows[0].start == ECOLI_VAL_START and windows[-1].end == ECOLI_BP  # the whole val region
    assert all(b.start == a.end - 1 for a, b in zip(windows, windows[1:]))  # contiguous, one shared base
    assert val.uncovered_bases == 0
    seq = records[0].seq
    tok = DNATokenizer()
    assert tok.decode(val[len(val) - 1]["input_ids"]) == seq[windows[-1].start :]
    item = train[0]
    assert item["input_ids"].shape == (1025,)


def test_ienhancer_train_and_test(shared_data_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = load_ienhancer("train", shared_data_root)
        test = load_ienhancer("test", shared_data_root)
    assert train.class_names == list(IENHANCER_CLASSES)
    assert train.class_counts() == {"non_enhancer": 1484, "enhancer": 1484}
    assert test.class_counts() == {"non_enhancer": 200, "enhancer": 200}
    for ds in (train, test):
        assert (ds.lengths == 200).all()
        assert all("\r" not in i and " " not in i for i in ds.ids)  # CRLF headers parse cleanly
        assert set(ds.sequence(0)) <= set("ACGT")
    assert train.ids[0] == "CHRX_10705600_10705800"  # first record of non.cv.txt, no trailing \r
    assert train.ids[1484] == "CHR13_99137199_99137399"  # first of enhancer.cv.txt
    files = ienhancer_files("test", shared_data_root)
    assert [p.name for p in files.values()] == ["non.ind.txt", "enhancer.ind.txt"]
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        ienhancer_files("val", shared_data_root)


def test_human_nontata_promoters_and_5_fold_cv(shared_data_root):
    ds = load_human_nontata_promoters(shared_data_root)
    assert len(ds) == 9034
    assert ds.class_counts() == {"non_promoter": 4119, "promoter": 4915}
    assert (ds.lengths == 251).all()
    folds = kfold_splits(len(ds), 5, seed=0, labels=ds.labels)
    assert sorted(len(val) for _, val in folds) == [1806, 1807, 1807, 1807, 1807]
    for train_idx, val_idx in folds:
        fold = ds.subset(val_idx)
        assert abs(fold.labels.mean() - 4915 / 9034) < 1e-3
        assert len(ds.subset(train_idx)) + len(fold) == 9034


def test_missing_data_names_the_fix(tmp_path):
    with pytest.raises(MissingDataError, match="longseq data download ecoli_k12"):
        load_ecoli_k12(tmp_path)
