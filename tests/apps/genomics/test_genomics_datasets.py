"""GenomeWindowDataset, SequenceClassificationDataset, kfold_splits and the collate functions."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from longseq.apps.genomics import (
    DNATokenizer,
    GenomeWindowDataset,
    PadCollate,
    SequenceClassificationDataset,
    SequenceError,
    SequenceRecord,
    SequenceWarning,
    Window,
    kfold_splits,
    reverse_complement,
)
from longseq.core.packing import PackedBatch, PackedCollate

TOK = DNATokenizer()


def random_records(lengths: list[int], seed: int = 0) -> list[SequenceRecord]:
    rng = np.random.default_rng(seed)
    return [SequenceRecord(f"chr{i}", "".join(rng.choice(list("ACGTN"), n))) for i, n in enumerate(lengths)]


def val_start(n: int, fraction: float = 0.1) -> int:
    return n - int(round(n * fraction))


def check_windows(ds: GenomeWindowDataset, records: list[SequenceRecord], split: str) -> list:
    """Every item equals its record slice (or its reverse complement) and stays in the split's region."""
    seqs = {r.id: r.seq for r in records}
    windows = []
    for i in range(len(ds)):
        w = ds.window_at(i)
        n = len(seqs[w.record])
        lo, hi = (0, val_start(n)) if split == "train" else (val_start(n), n)
        assert lo <= w.start < w.end <= hi, (w, lo, hi)
        expected = seqs[w.record][w.start : w.end].upper()
        if w.reverse_complement:
            expected = reverse_complement(expected)
        ids = ds[i]["input_ids"]
        assert ids.dtype == torch.long and ids.shape == (w.end - w.start,)
        assert TOK.decode(ids) == expected
        windows.append(w)
    return windows


# ---------------------------------------------------------------- GenomeWindowDataset


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("window", [1, 7, 16])
def test_random_windows_stay_in_their_region(split, window):
    records = random_records([301, 197, 180])  # val regions 30, 20, 18
    ds = GenomeWindowDataset(records, window, split=split, sampling="random", num_windows=200, rc_prob=0.3, seed=3)
    assert len(ds) == 200
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        windows = check_windows(ds, records, split)
        assert all(w.end - w.start == window + 1 for w in windows)
        assert {w.record for w in windows} == {"chr0", "chr1", "chr2"}
        assert any(w.reverse_complement for w in windows) and not all(w.reverse_complement for w in windows)


def test_random_windows_are_uniform_over_positions_and_reproducible():
    records = random_records([1000, 200])
    ds = GenomeWindowDataset(records, 50, num_windows=20000, seed=1)
    windows = [ds.window_at(i) for i in range(len(ds))]
    share = sum(w.record == "chr0" for w in windows) / len(windows)
    positions = (900 - 50, 180 - 50)  # valid starts per train region
    assert share == pytest.approx(positions[0] / sum(positions), abs=0.015)
    starts = [w.start for w in windows if w.record == "chr0"]
    assert min(starts) == 0 and max(starts) == 900 - 51  # both ends of the region are reachable
    again = GenomeWindowDataset(records, 50, num_windows=20000, seed=1)
    assert [again.window_at(i) for i in range(50)] == windows[:50]
    again.set_epoch(1)
    assert [again.window_at(i) for i in range(50)] != windows[:50]


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize(("window", "lengths"), [(8, [200, 91, 129]), (1, [23]), (13, [1000])])
def test_strided_windows_score_every_target_once(split, window, lengths):
    records = random_records(lengths)
    ds = GenomeWindowDataset(records, window, split=split, sampling="strided")
    windows = check_windows(ds, records, split)
    assert ds.uncovered_bases == 0
    for rec in records:
        n = len(rec.seq)
        lo, hi = (0, val_start(n)) if split == "train" else (val_start(n), n)
        targets = np.zeros(n, dtype=int)
        for w in (w for w in windows if w.record == rec.id):
            targets[w.start + 1 : w.end] += 1  # the tokens after the first are predicted
        assert (targets[lo + 1 : hi] == 1).all() and targets[: lo + 1].sum() == 0 and targets[hi:].sum() == 0
    assert all(2 <= w.end - w.start <= window + 1 for w in windows)


def test_strided_without_tail_counts_uncovered_bases_and_custom_stride():
    records = random_records([100])  # train region 90 bases
    ds = GenomeWindowDataset(records, 10, split="train", sampling="strided", keep_tail=False)
    ends = [ds.window_at(i).end for i in range(len(ds))]
    assert all(ds.window_at(i).end - ds.window_at(i).start == 11 for i in range(len(ds)))
    assert ds.uncovered_bases == 90 - max(ends) > 0
    ds = GenomeWindowDataset(records, 10, sampling="strided", stride=4, keep_tail=False)
    assert [ds.window_at(i).start for i in range(3)] == [0, 4, 8]
    assert ds.window_at(len(ds) - 1).end <= 90


def test_sampling_defaults_and_epoch_length():
    records = random_records([1000])
    train = GenomeWindowDataset(records, 30)
    assert train.sampling == "random" and len(train) == 900 // 30 and train.num_bases == 900
    val = GenomeWindowDataset(records, 30, split="val")
    assert val.sampling == "strided" and val.num_bases == 100


def test_val_fraction_zero_uses_whole_records_for_train():
    records = random_records([50])
    ds = GenomeWindowDataset(records, 49, val_fraction=0.0, sampling="strided")
    assert len(ds) == 1 and ds.window_at(0) == Window("chr0", 0, 50, False)


def test_rc_probability_one_reverse_complements_every_window():
    records = random_records([120])
    ds = GenomeWindowDataset(records, 9, rc_prob=1.0, num_windows=30)
    assert all(w.reverse_complement for w in check_windows(ds, records, "train"))


def test_short_regions_error_or_skip_with_warning():
    records = random_records([500, 40, 30])  # train regions 450, 36, 27; val 50, 4, 3
    with pytest.raises(SequenceError, match=r"2 of 3 records shorter than window \+ 1 = 41: 'chr1 \(train region 36"):
        GenomeWindowDataset(records, 40)
    with pytest.warns(SequenceWarning, match=r"skipped 2 of 3 records shorter than window \+ 1 = 41"):
        ds = GenomeWindowDataset(records, 40, on_short="skip")
    assert {ds.window_at(i).record for i in range(len(ds))} == {"chr0"}
    with pytest.raises(SequenceError, match="3 of 3 records shorter"):  # nothing left: an error even with skip
        GenomeWindowDataset(records, 60, split="val", on_short="skip")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window must be >= 1"),
        ({"split": "test"}, "split must be 'train' or 'val'"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"split": "val", "val_fraction": 0.0}, "needs val_fraction > 0"),
        ({"sampling": "all"}, "sampling must be"),
        ({"stride": 0, "sampling": "strided"}, "stride must be >= 1"),
        ({"num_windows": 0}, "num_windows must be >= 1"),
        ({"rc_prob": 1.5}, r"rc_prob must be in \[0, 1\]"),
        ({"on_short": "drop", "window": 60}, "on_short must be 'error' or 'skip'"),
    ],
)
def test_window_dataset_argument_errors(kwargs, message):
    kwargs = {"window": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        GenomeWindowDataset(random_records([64]), **kwargs)


def test_window_dataset_index_and_empty_errors():
    ds = GenomeWindowDataset(random_records([64]), 8, num_windows=3)
    with pytest.raises(IndexError, match="index 3 out of range for 3 windows"):
        ds[3]
    with pytest.raises(ValueError, match="records is empty"):
        GenomeWindowDataset([], 8)
    with pytest.raises(SequenceError, match=r"cannot encode 'R' at sequence 'r2', position 4"):
        GenomeWindowDataset([SequenceRecord("r1", "ACGT"), SequenceRecord("r2", "ACGRT" * 4)], 3)
    with pytest.raises(SequenceError, match=r"cannot encode 'X' at sequence 'b', position 2"):
        SequenceClassificationDataset(["AC", "AX"], [0, 1], ids=["a", "b"])


def test_window_dataset_from_files_with_dataloader(tmp_path):
    a = tmp_path / "a.fa.gz"
    a.write_bytes(gzip.compress(b">a\n" + b"acgt" * 30 + b"\n>b\n" + b"GGCA" * 20 + b"\n"))
    (tmp_path / "b.fa").write_text(">c\n" + "TTAG" * 25 + "\n")
    ds = GenomeWindowDataset.from_files([a, tmp_path / "b.fa"], 15, split="val", val_fraction=0.25)
    assert ds.record_ids == ["a", "b", "c"]
    loader = DataLoader(ds, batch_size=4, collate_fn=PadCollate())
    batches = list(loader)
    assert sum(b["input_ids"].shape[0] for b in batches) == len(ds)
    assert all(b["input_ids"].shape[1] <= 16 for b in batches)


def test_dataloader_workers_see_the_same_epoch_draws():
    records = random_records([400])
    ds = GenomeWindowDataset(records, 12, num_windows=16, rc_prob=0.5, seed=7)
    ds.set_epoch(3)
    expected = torch.stack([ds[i]["input_ids"] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=PackedCollate())
    got = torch.cat([batch.x for batch in loader]).view(16, 13)
    assert torch.equal(got, expected)


# ---------------------------------------------------------------- SequenceClassificationDataset


def write_fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{k}\n{v}\n" for k, v in records.items()))
    return path


def test_from_fasta_per_class(tmp_path):
    neg = write_fasta(tmp_path / "neg.fa", {"n1": "ACGT", "n2": "GG"})
    pos1 = write_fasta(tmp_path / "pos1.fa", {"p1": "acgtA"})
    pos2 = write_fasta(tmp_path / "pos2.fa", {"p2": "TTT"})
    ds = SequenceClassificationDataset.from_fasta_per_class({"neg": neg, "pos": [pos1, pos2]})
    assert ds.class_names == ["neg", "pos"] and ds.num_classes == 2
    assert ds.ids == ["n1", "n2", "p1", "p2"]
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.class_counts() == {"neg": 2, "pos": 2}
    assert ds.lengths.tolist() == [4, 2, 5, 3]
    assert ds.sequence(2) == "ACGTA"
    item = ds[2]
    assert TOK.decode(item["input_ids"]) == "ACGTA" and item["labels"].item() == 1
    assert item["labels"].dtype == torch.long and item["labels"].dim() == 0


def test_from_csv_with_integer_and_string_labels(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("seq,label\nACGT,1\nGGN,0\nTTTT,1\n")
    ds = SequenceClassificationDataset.from_csv(path)
    assert ds.labels.tolist() == [1, 0, 1] and ds.class_names == ["0", "1"]
    assert ds.ids == ["line 2", "line 3", "line 4"]
    named = SequenceClassificationDataset.from_csv(path, class_names=["no", "yes"])
    assert named.class_counts() == {"no": 1, "yes": 2}
    path.write_text("seq,label\nACGT,pos\nGG,neg\n")
    ds = SequenceClassificationDataset.from_csv(path)
    assert ds.labels.tolist() == [1, 0] and ds.class_names == ["neg", "pos"]


def test_from_fasta_and_label_table(tmp_path):
    fasta = write_fasta(tmp_path / "u.fa", {"a": "ACGT", "b": "GGGG", "c": "TTAA"})
    table = tmp_path / "labels.tsv"
    table.write_text("id\tlabel\nc\tyes\na\tno\nb\tyes\n")
    ds = SequenceClassificationDataset.from_fasta_and_labels(fasta, table)
    assert ds.ids == ["a", "b", "c"]  # FASTA order
    assert ds.labels.tolist() == [0, 1, 1] and ds.class_names == ["no", "yes"]


def test_label_table_mismatch_errors_list_ids_both_ways(tmp_path):
    fasta = write_fasta(tmp_path / "u.fa", {f"s{i}": "ACGT" for i in range(8)})
    table = tmp_path / "labels.csv"
    table.write_text("id,label\n" + "".join(f"s{i},1\n" for i in range(2, 8)) + "x1,0\nx2,1\n")
    with pytest.raises(
        SequenceError,
        match=r"labels.csv does not match .*u.fa: 2 labelled id\(s\) not in the FASTA \('x1', 'x2'\), "
        r"2 FASTA record\(s\) without a label \('s0', 's1'\); pass strict=False",
    ):
        SequenceClassificationDataset.from_fasta_and_labels(fasta, table)
    with pytest.warns(SequenceWarning, match="using the 6 ids found in both"):
        ds = SequenceClassificationDataset.from_fasta_and_labels(fasta, table, strict=False)
    assert ds.ids == [f"s{i}" for i in range(2, 8)]


def test_label_table_mismatch_lists_only_the_first_ids(tmp_path):
    fasta = write_fasta(tmp_path / "u.fa", {f"s{i}": "ACGT" for i in range(20)})
    table = tmp_path / "labels.csv"
    table.write_text("id,label\ns0,1\n")
    with pytest.raises(
        SequenceError, match=r"19 FASTA record\(s\) without a label \('s1', .*'s5', \.\.\. \(19 in all\)"
    ):
        SequenceClassificationDataset.from_fasta_and_labels(fasta, table)


def test_label_table_other_errors(tmp_path):
    fasta = write_fasta(tmp_path / "u.fa", {"a": "ACGT", "b": "GG"})
    dup = tmp_path / "dup.fa"
    dup.write_text(">a\nAC\n>a\nGG\n")
    table = tmp_path / "l.csv"
    table.write_text("id,label\na,1\nb,0\n")
    with pytest.raises(SequenceError, match="record id 'a' appears more than once"):
        SequenceClassificationDataset.from_fasta_and_labels(dup, table)
    missing = tmp_path / "m.csv"
    missing.write_text("id,label\na,1\nb,\n")
    with pytest.raises(SequenceError, match=r"m.csv, line 3: missing value in column 'label'"):
        SequenceClassificationDataset.from_fasta_and_labels(fasta, missing)
    other = tmp_path / "o.csv"
    other.write_text("id,label\nz,1\n")
    with pytest.raises(SequenceError, match="share no ids"), pytest.warns(SequenceWarning, match="using the 0 ids"):
        SequenceClassificationDataset.from_fasta_and_labels(fasta, other, strict=False)
    cols = tmp_path / "c.csv"
    cols.write_text("name,class\na,1\n")
    with pytest.raises(SequenceError, match=r"header has no column\(s\) 'id', 'label'"):
        SequenceClassificationDataset.from_fasta_and_labels(fasta, cols)
    with pytest.warns(SequenceWarning, match="using the 1 ids found in both"):
        renamed = SequenceClassificationDataset.from_fasta_and_labels(
            fasta, cols, id_col="name", label_col="class", strict=False
        )
    assert renamed.ids == ["a"]


def test_min_length_error_or_skip():
    seqs, labels = ["ACGTACGT", "AC", "ACGTA", "A"], [0, 1, 0, 1]
    with pytest.raises(
        SequenceError, match=r"2 of 4 sequences shorter than min_length = 5: '1 \(2 bp\)', '3 \(1 bp\)'"
    ):
        SequenceClassificationDataset(seqs, labels, min_length=5)
    with pytest.warns(SequenceWarning, match=r"skipped 2 of 4 sequences"):
        ds = SequenceClassificationDataset(seqs, labels, min_length=5, on_short="skip")
    assert ds.ids == ["0", "2"] and ds.labels.tolist() == [0, 0]


def test_special_tokens_and_reverse_complement_augmentation():
    ds = SequenceClassificationDataset(["AACG", "TTGCA"], [0, 1], add_cls=True, add_eos=True, rc_prob=1.0)
    item = ds[0]["input_ids"]
    assert item[0].item() == TOK.cls_id and item[-1].item() == TOK.eos_id
    assert TOK.decode(item) == "CGTT"
    assert ds.lengths.tolist() == [6, 7]
    half = SequenceClassificationDataset(["AACGT" * 3] * 64, [0] * 64, rc_prob=0.5, seed=5)
    first = [TOK.decode(half[i]["input_ids"]) for i in range(64)]
    assert set(first) == {"AACGT" * 3, reverse_complement("AACGT" * 3)}
    assert first == [TOK.decode(half[i]["input_ids"]) for i in range(64)]  # same epoch, same draws
    half.set_epoch(1)
    assert first != [TOK.decode(half[i]["input_ids"]) for i in range(64)]


def test_subset_shares_storage():
    ds = SequenceClassificationDataset(["A", "CC", "GGG", "TTTT"], [0, 1, 0, 1], ids=list("abcd"))
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and sub.ids == ["d", "b"] and sub.labels.tolist() == [1, 1]
    assert TOK.decode(sub[0]["input_ids"]) == "TTTT"
    assert sub.tokens is ds.tokens
    assert sub.subset([1]).ids == ["b"]
    with pytest.raises(IndexError, match=r"subset indices must be in \[0, 2\)"):
        sub.subset([2])
    with pytest.raises(IndexError, match="index 2 out of range for 2 sequences"):
        sub[2]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((["AC"], [0, 1]), {}, "must have the same length"),
        (([], []), {}, "no sequences"),
        ((["AC"], [-1]), {}, "non-negative class indices"),
        ((["AC", "GG"], [0, 2]), {"class_names": ["a", "b"]}, "label 2 has no class name"),
        ((["AC"], [0]), {"rc_prob": -0.1}, "rc_prob"),
        ((["AC"], [0]), {"min_length": 0}, "min_length must be >= 1"),
    ],
)
def test_classification_argument_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceClassificationDataset(*args, **kwargs)


# ---------------------------------------------------------------- k-fold


@pytest.mark.parametrize(("n", "k"), [(10, 2), (23, 5), (101, 7), (5, 5)])
@pytest.mark.parametrize("stratified", [False, True])
def test_kfold_partitions_and_balances(n, k, stratified):
    labels = None
    if stratified:  # up to 3 classes, each with at least k members
        labels = np.random.default_rng(n).permutation(np.arange(n) % max(1, min(3, n // k)))
    folds = kfold_splits(n, k, seed=1, labels=labels)
    assert len(folds) == k
    vals = np.concatenate([val for _, val in folds])
    assert np.array_equal(np.sort(vals), np.arange(n))  # the val parts partition the indices
    sizes = [len(val) for _, val in folds]
    assert max(sizes) - min(sizes) <= 1
    for train, val in folds:
        assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
        assert np.intersect1d(train, val).size == 0
        assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    if labels is not None:
        for c in np.unique(labels):
            per_fold = [int((labels[val] == c).sum()) for _, val in folds]
            assert max(per_fold) - min(per_fold) <= 1
    again = kfold_splits(n, k, seed=1, labels=labels)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = kfold_splits(n, k, seed=2, labels=labels)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_stratification_matters():
    labels = np.array([0] * 50 + [1] * 10)
    for _, val in kfold_splits(60, 5, seed=0, labels=labels):
        assert (labels[val] == 1).sum() == 2


def test_kfold_errors():
    with pytest.raises(ValueError, match="k must be >= 2"):
        kfold_splits(10, 1)
    with pytest.raises(ValueError, match="at least k=5 items"):
        kfold_splits(4, 5)
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\)"):
        kfold_splits(6, 2, labels=[0, 1])
    with pytest.raises(ValueError, match=r"too few: \[\(1, 2\)\]"):
        kfold_splits(12, 3, labels=[0] * 10 + [1] * 2)


# ---------------------------------------------------------------- collate


def items(with_labels: bool = True) -> list[dict[str, torch.Tensor]]:
    seqs = ["ACGTA", "GG", "TTTAC"]
    out = [{"input_ids": TOK.encode(s)} for s in seqs]
    if with_labels:
        for i, item in enumerate(out):
            item["labels"] = torch.tensor(i % 2)
    return out


@pytest.mark.parametrize("multiple", [None, 4])
def test_pad_collate(multiple):
    batch = PadCollate(pad_to_multiple_of=multiple)(items())
    width = 5 if multiple is None else 8
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, width)
    assert batch["lengths"].tolist() == [5, 2, 5]
    assert batch["labels"].tolist() == [0, 1, 0]
    assert TOK.decode_batch(batch["input_ids"], batch["attention_mask"]) == ["ACGTA", "GG", "TTTAC"]
    assert (batch["input_ids"][~batch["attention_mask"]] == TOK.pad_id).all()
    assert "labels" not in PadCollate()(items(with_labels=False))


def test_pack_collate_matches_padding():
    packed = PackedCollate()(items())
    assert isinstance(packed, PackedBatch)
    assert packed.cu_seqlens.tolist() == [0, 5, 7, 12] and packed.cu_seqlens.dtype == torch.int32
    assert packed.max_seqlen == 5
    assert packed.position_ids.tolist() == [0, 1, 2, 3, 4, 0, 1, 0, 1, 2, 3, 4]
    assert packed.labels.tolist() == [0, 1, 0]
    padded = PadCollate()(items())
    assert torch.equal(packed.x, padded["input_ids"][padded["attention_mask"]])
    assert PackedCollate()(items(with_labels=False)).labels is None


def test_collate_errors():
    mixed = items()
    del mixed[1]["labels"]
    for collate in (PadCollate(),):
        with pytest.raises(ValueError, match="2 of 3 items have 'labels'"):
            collate(mixed)
        with pytest.raises(ValueError, match="empty list"):
            collate([])
        with pytest.raises(KeyError, match="item 0 has no 'input_ids'"):
            collate([{"ids": torch.zeros(3)}])
        with pytest.raises(ValueError, match=r"item 0: input_ids must be 1-D and non-empty, got shape \(2, 2\)"):
            collate([{"input_ids": torch.zeros(2, 2, dtype=torch.long)}])
    with pytest.raises(ValueError, match="pad_to_multiple_of must be >= 1"):
        PadCollate(pad_to_multiple_of=0)
    with pytest.raises(KeyError, match="no input key 'input_ids'"):
        PackedCollate()([{"ids": torch.zeros(3)}])
