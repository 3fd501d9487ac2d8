"""The ``forecast`` command and pipeline: output CSV, timestamps, PNG, holdout, bad input; save/load."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from longseq.apps.timeseries.checkpoint import DataInfo, from_pretrained, save_pretrained
from longseq.apps.timeseries.cli import main
from longseq.apps.timeseries.data import ForecastDataModule
from longseq.apps.timeseries.models import DLinear, DLinearConfig, Informer, InformerConfig
from longseq.apps.timeseries.module import ForecastModule
from longseq.apps.timeseries.pipeline import ForecastPipeline, future_timestamps

L, H = 24, 8


pytestmark = pytest.mark.usefixtures("cpu_quiet")


def write_csv(
    path: Path, rows: int = 240, columns=("x0", "x1", "OT"), step: str = "1h", start="2021-03-01 00:00"
) -> Path:
    t = np.arange(rows)
    unit = {"1h": np.timedelta64(1, "h"), "15min": np.timedelta64(15, "m")}[step]
    stamps = np.datetime64(start.replace(" ", "T")) + t * unit
    with path.open("w") as f:
        f.write("date," + ",".join(columns) + "\n")
        for i in range(rows):
            vals = [np.sin(2 * np.pi * i / 24 + k) * (k + 1) + 5 * k for k in range(len(columns))]
            f.write(str(stamps[i]).replace("T", " ") + "," + ",".join(f"{v:.5f}" for v in vals) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A DLinear checkpoint trained briefly on an hourly 3-column series, and that series."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fc")
    series = write_csv(root / "train.csv")
    dm = ForecastDataModule(str(series), seq_len=L, label_len=0, pred_len=H, batch_size=16)
    module = ForecastModule(DLinear(DLinearConfig(seq_len=L, pred_len=H, enc_in=3, moving_avg=5)), learning_rate=1e-2)
    trainer = Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    ckpt = root / "dlinear.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt, series


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("horizon", [1, 5, H])
def test_forecast_writes_csv_with_continuing_timestamps_and_png(trained, tmp_path: Path, horizon: int) -> None:
    ckpt, series = trained
    out = tmp_path / "forecast.csv"
    assert (
        main(["forecast", "--ckpt", str(ckpt), "--csv", str(series), "--horizon", str(horizon), "--out", str(out)]) == 0
    )
    rows = read_rows(out)
    assert len(rows) == horizon
    assert list(rows[0]) == ["date", "x0", "x1", "OT"]
    last = np.datetime64("2021-03-01T00:00:00") + 239 * np.timedelta64(1, "h")  # the CSV's last row
    expected = [str(last + (k + 1) * np.timedelta64(1, "h")).replace("T", " ") for k in range(horizon)]
    assert [r["date"] for r in rows] == expected
    png = out.with_suffix(".png")
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_holdout_compares_with_truth_in_original_units(trained, tmp_path: Path, capsys) -> None:
    ckpt, series = trained
    out = tmp_path / "held.csv"
    assert main(["forecast", "--ckpt", str(ckpt), "--csv", str(series), "--out", str(out), "--holdout"]) == 0
    rows = read_rows(out)
    assert len(rows) == H and "OT_true" in rows[0]
    # the truth is the CSV's last H rows; the forecast starts right after row 240 - H - 1
    original = read_rows(series)
    assert [r["date"] for r in rows] == [r["date"] + ":00" for r in original[-H:]]  # input has no seconds
    assert [float(r["OT_true"]) for r in rows] == pytest.approx([float(r["OT"]) for r in original[-H:]], abs=1e-4)
    # de-normalised: OT oscillates around 10 with amplitude 3; a trained model lands near it
    forecast = np.array([float(r["OT"]) for r in rows])
    truth = np.array([float(r["OT_true"]) for r in rows])
    assert np.abs(forecast - truth).mean() < 1.0
    assert "mse (original units)" in capsys.readouterr().out


def test_pipeline_matches_the_model_on_the_scaled_window(trained) -> None:
    """The pipeline's forecast equals the model run by hand on the z-scored last window, de-normalised."""
    ckpt, series = trained
    pipe = ForecastPipeline.from_pretrained(ckpt)
    result = pipe(series)
    table = pipe.read(series)
    mean, scale = np.array(pipe.data.mean), np.array(pipe.data.scale)
    x = torch.tensor((table.values[-L:] - mean) / scale, dtype=torch.float32)[None]
    with torch.no_grad():
        expected = pipe.model(x)[0].double().numpy() * scale + mean
    np.testing.assert_allclose(result.values, expected, rtol=1e-5, atol=1e-5)


def test_forecast_errors_name_the_problem(trained, tmp_path: Path, capsys) -> None:
    ckpt, _ = trained
    out = str(tmp_path / "f.csv")
    short = write_csv(tmp_path / "short.csv", rows=L - 1)
    with pytest.raises(SystemExit) as exc:
        main(["forecast", "--ckpt", str(ckpt), "--csv", str(short), "--out", out])
    assert exc.value.code == 2
    assert f"23 rows, fewer than the model's look-back {L}" in capsys.readouterr().err
    wrong = write_csv(tmp_path / "wrong.csv", columns=("x0", "temperature", "OT"))
    with pytest.raises(SystemExit):
        main(["forecast", "--ckpt", str(ckpt), "--csv", str(wrong), "--out", out])
    assert "no column(s) 'x1'" in capsys.readouterr().err
    full = write_csv(tmp_path / "ok.csv")
    with pytest.raises(SystemExit):
        main(["forecast", "--ckpt", str(ckpt), "--csv", str(full), "--out", out, "--horizon", str(H + 1)])
    assert f"horizon must be in [1, {H}]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["forecast", "--ckpt", str(tmp_path / "missing.ckpt"), "--csv", str(full), "--out", out])
    assert "does not exist" in capsys.readouterr().err
    holdout_short = write_csv(tmp_path / "hs.csv", rows=L + H - 1)
    with pytest.raises(SystemExit):
        main(["forecast", "--ckpt", str(ckpt), "--csv", str(holdout_short), "--out", out, "--holdout"])
    assert "look-back 24 + holdout 8" in capsys.readouterr().err
    assert not Path(out).exists()


def test_future_timestamps_follow_the_step() -> None:
    minutes = np.datetime64("2020-01-01T23:30") + np.arange(5) * np.timedelta64(15, "m")
    # last row 00:30 the next day; then 00:45 and 01:00
    assert [str(t)[11:16] for t in future_timestamps(minutes, 2)] == ["00:45", "01:00"]
    months = np.array(["2020-10-31", "2020-11-30", "2020-12-31"], dtype="datetime64[s]")  # month ends
    assert [str(t)[:10] for t in future_timestamps(months, 2)] == ["2021-01-31", "2021-02-28"]
    firsts = np.array(["2020-11-01", "2020-12-01"], dtype="datetime64[s]")
    assert [str(t)[:10] for t in future_timestamps(firsts, 2)] == ["2021-01-01", "2021-02-01"]


def test_save_pretrained_round_trip_with_calendar_model(tmp_path: Path) -> None:
    """An Informer (reads calendar marks) saved with its data info forecasts a CSV after reloading."""
    cfg = InformerConfig(seq_len=L, pred_len=H, enc_in=3, dec_in=3, c_out=1, label_len=8, d_model=16, n_heads=2,
                         d_ff=16, e_layers=2, n_time_features=4)  # fmt: skip
    model = Informer(cfg).eval()
    info = DataInfo(columns=["x0", "x1", "OT"], target="OT", features="MS", mean=[0.0, 5.0, 10.0],
                    scale=[1.0, 2.0, 3.0], freq="h", timeenc=1, dataset="synthetic")  # fmt: skip
    path = save_pretrained(model, tmp_path / "informer.pt", info)
    blob = torch.load(path, weights_only=True)
    assert blob["model"] == "informer" and blob["config"]["c_out"] == 1
    loaded, loaded_info = from_pretrained(path)
    assert loaded_info == info
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)
    series = write_csv(tmp_path / "s.csv", rows=60)
    result = ForecastPipeline(loaded, loaded_info)(series, 4)
    assert result.columns == ("OT",) and result.values.shape == (4, 1)
    assert np.isfinite(result.values).all()


def test_from_pretrained_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a longseq forecaster"):
        from_pretrained(path)
