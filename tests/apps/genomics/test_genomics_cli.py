"""``longseq-genomics``: every packaged YAML under fast_dev_run, and the embed/score/classify pipelines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from longseq.apps.genomics import GenomicsPipeline, dna_classifier, load_pretrained, plan_windows, save_pretrained
from longseq.apps.genomics.cli import CONFIG_DIR, config_path, main
from longseq.core.registry import create_model

CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
SMALL_LM = ["--data.init_args.window=32", "--data.init_args.batch_size=2", "--data.init_args.train_windows=4",
            "--data.init_args.max_val_windows=2", "--data.init_args.num_workers=0"]  # fmt: skip


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["longseq-genomics"])  # LightningCLI gets its arguments from main(args)
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")


def test_all_expected_configs_are_packaged() -> None:
    expected = {"demo.yaml", "pretrain_ecoli_hyena_1k.yaml", "pretrain_ecoli_hyena_32k.yaml"}
    assert expected | {"finetune_ienhancer.yaml", "finetune_csv.yaml"} <= set(CONFIGS)
    with pytest.raises(FileNotFoundError, match="available: demo.yaml"):
        config_path("nope")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_fast_dev_run(name: str, tmp_path, shared_data_root) -> None:
    root = f"--data.init_args.root={shared_data_root}"
    args = ["fit", "--config", name, "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu",
            "--trainer.precision=32-true", f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    if name == "finetune_csv.yaml":
        rng = np.random.default_rng(0)
        rows = [f"{''.join(rng.choice(list('ACGT'), 40))},{i % 2}" for i in range(20)]
        (tmp_path / "t.csv").write_text("seq,label\n" + "\n".join(rows) + "\n")
        args += [f"--data.init_args.train={tmp_path / 't.csv'}", "--data.init_args.batch_size=4"]
    elif name.startswith("finetune"):
        args += [root, "--data.init_args.max_train=40", "--data.init_args.batch_size=4"]
    else:
        args += [root, *SMALL_LM]
    main(args)
    model, info = load_pretrained(tmp_path / "pretrained")  # ExportPretrained wrote it
    assert info.kind == ("classifier" if name.startswith("finetune") else "lm")


@pytest.fixture
def checkpoints(tmp_path):
    lm = create_model("hyena_dna_tiny", dim=16, max_len=32).eval()
    clf = dna_classifier(create_model("hyena_dna_tiny", dim=16, max_len=32), 2).eval()
    return (
        save_pretrained(lm, tmp_path / "lm", name="hyena_dna_tiny"),
        save_pretrained(clf, tmp_path / "clf", class_names=["neg", "pos"]),
    )


def _write_fasta(path, records):
    path.write_text("".join(f">{k} some description\n{v}\n" for k, v in records.items()))
    return path


def test_plan_windows_cover_every_position_once() -> None:
    for length in (1, 5, 32, 33, 100, 257):
        for window, overlap in ((32, 8), (32, 0), (7, 6)):
            plan = plan_windows(length, window, overlap)
            kept = np.concatenate([np.arange(keep, end) for _, end, keep in plan])
            assert np.array_equal(kept, np.arange(length))
            assert all(end - start <= window for start, end, _ in plan)
            assert all(keep - start >= overlap for start, _, keep in plan[1:])  # left context kept
    with pytest.raises(ValueError, match="overlap must be in"):
        plan_windows(10, 4, 4)


def test_pipelines_write_files(tmp_path, checkpoints) -> None:
    lm_dir, clf_dir = checkpoints
    rng = np.random.default_rng(0)
    seqs = {"short": "ACGTTGCA", "long": "".join(rng.choice(list("ACGT"), 100)), "mid": "acgtn" * 6}
    fasta = _write_fasta(tmp_path / "in.fa", seqs)
    main(["score", "--checkpoint", str(lm_dir), "--fasta", str(fasta), "--out", str(tmp_path / "s"), "--no-progress"])
    per_base = (tmp_path / "s.per_base.tsv").read_text().splitlines()
    assert per_base[0] == "seq_id\tposition\tbase\tlog_likelihood"
    by_id = {k: [r for r in per_base[1:] if r.startswith(k + "\t")] for k in seqs}
    assert {k: len(v) for k, v in by_id.items()} == {k: len(v) for k, v in seqs.items()}  # long one windowed
    assert by_id["long"][0].endswith("\tNA") and "NA" not in by_id["long"][1]
    assert "".join(r.split("\t")[2] for r in by_id["mid"]) == seqs["mid"].upper()
    bedgraph = (tmp_path / "s.bedGraph").read_text().splitlines()
    assert bedgraph[0].startswith("track type=bedGraph") and len(bedgraph) == 1 + sum(len(s) - 1 for s in seqs.values())
    summary = (tmp_path / "s.summary.tsv").read_text().splitlines()
    assert len(summary) == 4 and summary[2].split("\t")[:3] == ["long", "100", "99"]
    main(
        ["embed", "--checkpoint", str(lm_dir), "--fasta", str(fasta), "--out", str(tmp_path / "e.npz"), "--no-progress"]
    )
    npz = np.load(tmp_path / "e.npz")
    assert list(npz["ids"]) == list(seqs) and npz["embeddings"].shape == (3, 16)
    main(
        [
            "classify",
            "--checkpoint",
            str(clf_dir),
            "--fasta",
            str(fasta),
            "--out",
            str(tmp_path / "c.tsv"),
            "--no-progress",
        ]
    )
    rows = [r.split("\t") for r in (tmp_path / "c.tsv").read_text().splitlines()]
    assert rows[0] == ["seq_id", "predicted", "prob_neg", "prob_pos"] and len(rows) == 4
    assert all(abs(float(r[2]) + float(r[3]) - 1) < 1e-5 and r[1] in ("neg", "pos") for r in rows[1:])


def test_classify_rc_average_is_the_mean_of_both_strands(checkpoints) -> None:
    _, clf_dir = checkpoints
    from longseq.apps.genomics import SequenceRecord

    rng = np.random.default_rng(2)
    seqs = ["".join(rng.choice(list("ACGT"), n)) for n in (20, 45)]  # the second one is windowed
    rc = [s[::-1].translate(str.maketrans("ACGT", "TGCA")) for s in seqs]
    pipe = GenomicsPipeline(clf_dir, window=32, overlap=8, progress=False)
    one = pipe.classify([SequenceRecord(f"s{i}", s) for i, s in enumerate(seqs)])[1]
    both = pipe.classify([SequenceRecord(f"s{i}", s) for i, s in enumerate(seqs)], rc_average=True)[1]
    assert not np.allclose(one, both, atol=1e-5)
    # a short sequence is one window: both strands = the mean of classifying it and its reverse complement
    other = pipe.classify([SequenceRecord("r0", rc[0])])[1]
    np.testing.assert_allclose(both[0], 0.5 * (one[0] + other[0]), rtol=1e-5, atol=1e-6)


def test_windowed_score_matches_full_context_where_context_fits(checkpoints) -> None:
    lm_dir, _ = checkpoints
    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list("ACGT"), 30))
    from longseq.apps.genomics import SequenceRecord

    full = GenomicsPipeline(lm_dir, window=32, progress=False).score([SequenceRecord("x", seq)])[0]
    windowed = GenomicsPipeline(lm_dir, window=12, overlap=4, progress=False).score([SequenceRecord("x", seq)])[0]
    assert np.isnan(full.log_likelihood[0]) and np.isnan(windowed.log_likelihood[0])
    np.testing.assert_allclose(windowed.log_likelihood[1:12], full.log_likelihood[1:12], rtol=1e-5, atol=1e-5)
    assert np.isfinite(windowed.log_likelihood[1:]).all() and full.perplexity > 1


def test_pipeline_bad_inputs(tmp_path, checkpoints, capsys) -> None:
    lm_dir, clf_dir = checkpoints
    cases = {
        "bad.fa": (">a\nACGTXACGT\n", "invalid character 'X'"),
        "empty.fa": ("", "empty file"),
        "one.fa": (">a\nA\n", "shorter than 2 bases"),
    }
    for file, (text, message) in cases.items():
        (tmp_path / file).write_text(text)
        with pytest.raises(SystemExit) as exc:
            main(["score", "--checkpoint", str(lm_dir), "--fasta", str(tmp_path / file), "--out", str(tmp_path / "o")])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    _write_fasta(tmp_path / "mixed.fa", {"a": "A", "b": "ACGTACGT"})
    with pytest.warns(UserWarning, match="skipped 1 of 2 sequence"):
        main(["score", "--checkpoint", str(lm_dir), "--fasta", str(tmp_path / "mixed.fa"), "--out",
              str(tmp_path / "m"), "--on-short", "skip", "--no-progress"])  # fmt: skip
    assert len((tmp_path / "m.per_base.tsv").read_text().splitlines()) == 1 + 8
    with pytest.raises(SystemExit):
        main(
            [
                "classify",
                "--checkpoint",
                str(lm_dir),
                "--fasta",
                str(tmp_path / "mixed.fa"),
                "--out",
                str(tmp_path / "c"),
            ]
        )
    assert "classify needs a classifier checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", "--checkpoint", str(tmp_path / "nothing"), "--fasta", str(tmp_path / "mixed.fa"), "--out", "x"])
    assert "no checkpoint" in capsys.readouterr().err


def test_lightning_ckpt_loads_weights_only_and_fine_tunes(tmp_path, shared_data_root) -> None:
    main(["fit", "--config", "demo.yaml", "--trainer.max_steps=2", "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
          f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path}",
          f"--data.init_args.root={shared_data_root}", *SMALL_LM])  # fmt: skip
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    assert json.loads(json.dumps(state["longseq"]))["kind"] == "lm"
    lm, _ = load_pretrained(ckpts[0])
    pretrained, _ = load_pretrained(tmp_path / "pretrained")
    for (k, a), (_, b) in zip(lm.state_dict().items(), pretrained.state_dict().items()):
        assert torch.equal(a, b), k
    from longseq.apps.genomics import ClassificationModule

    module = ClassificationModule(pretrained=str(ckpts[0]), num_classes=2)
    assert torch.equal(module.model.embed.weight, lm.backbone.embed.weight)
