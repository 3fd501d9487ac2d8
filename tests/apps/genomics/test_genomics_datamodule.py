"""GenomeLMDataModule, SequenceClassificationDataModule and the sequence-length warm-up."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from longseq.apps.genomics import (
    CausalLMModule,
    GenomeLMDataModule,
    SequenceClassificationDataModule,
    SequenceError,
    SequenceLengthWarmup,
)
from longseq.core.packing import PackedBatch


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")


def _fasta(path, records: dict[str, str]):
    path.write_text("".join(f">{k}\n{v}\n" for k, v in records.items()))
    return path


def test_lm_datamodule_windows_and_held_out_region(tmp_path) -> None:
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGT"), 2000))
    dm = GenomeLMDataModule(str(_fasta(tmp_path / "g.fa", {"chr": seq})), window=50, batch_size=4, train_windows=12)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 51) and batch["attention_mask"].all()
    assert len(dm.train_set) == 12
    val = dm.val_set.dataset
    assert all(val.window_at(i).start >= 1800 for i in range(len(val)))  # last 10% only
    assert all(dm.train_set.window_at(i).end <= 1800 for i in range(len(dm.train_set)))
    dm.set_window(20, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (8, 21)
    assert next(iter(dm.val_dataloader()))["input_ids"].shape[1] == 51  # validation keeps the full window


def test_sequence_length_warmup_schedule_and_fit(tmp_path) -> None:
    warm = SequenceLengthWarmup(start_window=8, epochs_per_stage=1)
    assert [warm.schedule(e, 32, 2) for e in range(4)] == [(8, 8), (16, 4), (32, 2), (32, 2)]
    seq = "".join(np.random.default_rng(1).choice(list("ACGT"), 3000))
    dm = GenomeLMDataModule(str(_fasta(tmp_path / "g.fa", {"c": seq})), window=32, batch_size=2, train_windows=8)
    seen: list[tuple[int, int]] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                seen.append(tuple(batch["input_ids"].shape))

    module = CausalLMModule(backbone_kwargs={"dim": 16, "max_len": 64})
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        callbacks=[warm, Record()],
    )
    trainer.fit(module, dm)
    assert seen == [(8, 9), (4, 17), (2, 33)]
    assert set(trainer.callback_metrics) >= {"val/loss", "val/bpb", "val/ppl"}
    loss = trainer.callback_metrics["val/loss"]
    assert trainer.callback_metrics["val/bpb"] == pytest.approx(loss / np.log(2))
    assert trainer.callback_metrics["val/ppl"] == pytest.approx(torch.exp(loss))


def test_classification_csv_kfold_and_test(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = ["seq,label"] + [f"{''.join(rng.choice(list('ACGT'), 30))},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(rows[:11]) + "\n")
    val_ids = []
    for fold in range(4):
        dm = SequenceClassificationDataModule(
            "csv", train=str(tmp_path / "train.csv"), folds=4, fold=fold, batch_size=8
        )
        dm.setup("fit")
        assert dm.num_classes == 2 and dm.class_names == ["neg", "pos"]
        assert len(dm.train_set) + len(dm.val_set) == 40
        assert set(dm.train_set.ids).isdisjoint(dm.val_set.ids)
        val_ids += dm.val_set.ids
    assert sorted(val_ids) == sorted(f"line {i + 2}" for i in range(40))  # the folds partition the data
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, PackedBatch) and batch.labels.shape == (8,)
    with pytest.raises(ValueError, match="has no test split"):
        dm.test_dataloader()
    dm = SequenceClassificationDataModule("csv", train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))
    dm.setup("test")
    assert len(dm.test_set) == 10


def test_classification_fasta_sources_and_errors(tmp_path) -> None:
    a = _fasta(tmp_path / "a.fa", {f"a{i}": "ACGTAC" * 5 for i in range(10)})
    b = _fasta(tmp_path / "b.fa", {f"b{i}": "GGGCCC" * 5 for i in range(10)})
    dm = SequenceClassificationDataModule("fasta_per_class", train={"A": str(a), "B": str(b)}, val_fraction=0.2)
    assert dm.class_names == ["A", "B"] and np.array_equal(dm.class_counts(), [8, 8])
    (tmp_path / "labels.tsv").write_text("id\tlabel\na0\tx\nzz\ty\n")
    dm = SequenceClassificationDataModule("fasta_labels", train=str(a), train_labels=str(tmp_path / "labels.tsv"))
    with pytest.raises(SequenceError, match="does not match"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="needs train="):
        SequenceClassificationDataModule("csv")
    with pytest.raises(ValueError, match="source must be one of"):
        SequenceClassificationDataModule("nope")


def test_ienhancer_from_shared_data(shared_data_root) -> None:
    dm = SequenceClassificationDataModule("ienhancer", root=str(shared_data_root), max_train=100)
    dm.setup("test")
    assert dm.class_names == ["non_enhancer", "enhancer"]
    assert len(dm.full_train) >= 90 and len(dm.test_set) == 400
