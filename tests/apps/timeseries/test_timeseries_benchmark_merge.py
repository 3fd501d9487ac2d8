"""``python -m benchmarks.forecasting merge``: shards' CSVs -> the outputs of one run of their union."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import forecasting as fc


def _row(model: str, dataset: str, lookback: int, horizon: int, mse: float) -> dict:
    return {
        "model": model, "dataset": dataset, "lookback": lookback, "horizon": horizon, "seed": 2021,
        "epochs_run": 3, "max_epochs": 10, "mse": mse, "mae": round(mse * 0.9, 4),
        "published_mse": 0.386 if model == "dlinear" else None, "published_mae": 0.4 if model == "dlinear" else None,
        "published_source": "iTransformer-T" if model == "dlinear" else None,
        "published_checked": True if model == "dlinear" else None, "seconds": 1.5, "device": "cpu (test)",
    }  # fmt: skip


SHARD_A = [_row("dlinear", "etth1", 96, 192, 0.4321), _row("dlinear", "etth1", 96, 96, 0.3958)]
SHARD_B = [_row("patchtst", "weather", 96, 96, 0.1777), _row("dlinear", "weather", 96, 96, 0.1961)]


def _shards(tmp_path: Path) -> list[Path]:
    paths = []
    for tag, rows in (("a", SHARD_A), ("b", SHARD_B)):
        fc.write_outputs(rows, tmp_path / "shards", tag, {"note": tag})
        paths.append(tmp_path / "shards" / f"forecasting-{tag}.csv")
    return paths


def test_merge_writes_what_one_run_of_the_union_writes(tmp_path: Path) -> None:
    inputs = _shards(tmp_path)
    assert fc.main(["merge", "--inputs", *map(str, inputs), "--tag", "all", "--out", str(tmp_path / "m")]) == 0
    union = sorted(SHARD_A + SHARD_B, key=lambda r: fc.select(None, None, None, None).index(
        (r["model"], r["dataset"], r["lookback"], r["horizon"])))  # fmt: skip
    assert fc.read_rows(tmp_path / "m" / "forecasting-all.csv") == union  # typed round trip, table order
    fc.write_outputs(union, tmp_path / "single", "all", {})
    merged_csv = (tmp_path / "m" / "forecasting-all.csv").read_text()
    assert merged_csv == (tmp_path / "single" / "forecasting-all.csv").read_text()
    md = (tmp_path / "m" / "forecasting-all.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| dlinear") or line.startswith("| patchtst")]
    assert len(table) == 4 and "| 0.4321 |" in md and "| 0.1777 |" in md
    assert "merged_from: forecasting-a.csv, forecasting-b.csv" in md
    assert sorted(p.name for p in (tmp_path / "m").glob("*.png")) == [
        "forecasting-all-etth1.png", "forecasting-all-weather.png"]  # fmt: skip


def test_merge_refuses_a_run_in_two_inputs_and_foreign_csvs(tmp_path: Path, capsys) -> None:
    a, _ = _shards(tmp_path)
    dup = tmp_path / "dup.csv"
    dup.write_text(a.read_text())
    with pytest.raises(SystemExit):
        fc.main(["merge", "--inputs", str(a), str(dup), "--tag", "x", "--out", str(tmp_path)])
    assert "('dlinear', 'etth1', 96, 192) is in both" in capsys.readouterr().err.replace("\n", " ")
    other = tmp_path / "other.csv"
    other.write_text("model,mse\ndlinear,0.4\n")
    with pytest.raises(SystemExit):
        fc.main(["merge", "--inputs", str(other), "--tag", "x", "--out", str(tmp_path)])
    assert "not those of a forecasting CSV" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fc.main(["merge", "--inputs", str(tmp_path / "missing.csv"), "--tag", "x", "--out", str(tmp_path)])
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # would overwrite its own input
        fc.main(["merge", "--inputs", str(a), "--tag", "a", "--out", str(a.parent)])
    assert "would overwrite" in capsys.readouterr().err


def test_filters_select_the_matching_table_entries(capsys) -> None:
    assert fc.select(["dlinear"], ["etth1"], [96], [192]) == [("dlinear", "etth1", 96, 192)]
    chosen = fc.select(["patchtst", "s_mamba"], ["weather"], None, [96, 720])
    assert chosen == [("patchtst", "weather", 336, 96), ("patchtst", "weather", 336, 720),
                      ("patchtst", "weather", 96, 96), ("patchtst", "weather", 96, 720),
                      ("s_mamba", "weather", 96, 96), ("s_mamba", "weather", 96, 720)]  # fmt: skip
    assert len(fc.select(None, None, None, None)) == 96
    with pytest.raises(SystemExit):  # informer has no look-back-336 entry
        fc.main(["--models", "informer", "--lookback", "336"])
    assert "no table entry matches" in capsys.readouterr().err
