"""The forecasting benchmarks on the reference protocol (Time-Series-Library ``data_loader.py``).

Expected numbers are worked out here from the reference formulas, by hand, not by calling the code
under test twice:

* ETT hour borders: ``border1s = [0, 8640 - L, 11520 - L]``, ``border2s = [8640, 11520, 14400]``;
  ETT minute: the same x4; custom: ``n_train = int(n * 0.7)``, ``n_test = int(n * 0.2)``, the rest val;
* windows per split: ``border2 - border1 - L - H + 1``;
* z-score: sklearn ``StandardScaler`` on the training rows. The constants below were produced once
  by the reference code itself (pandas ``read_csv`` + sklearn 1.9 ``StandardScaler.fit`` on ETTh1
  rows [0, 8640)), and an independent ``np.loadtxt`` parse checks the scaled windows.

Needs the shared data (``shared_data_root`` fixture); skipped without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from longseq.apps.timeseries.data import (
    BENCHMARKS,
    ForecastDataModule,
    SeriesError,
    SeriesTable,
    load_series,
    protocol_borders,
    time_features,
)

# ETTh1: 17,420 data rows; 12/4/4 months of 30 days of hours.
ETTH1_ROWS = 17420
MONTH_H = 30 * 24  # 720 hours

# (seq_len, pred_len) -> (train, val, test) windows, from border2 - border1 - L - H + 1:
#   train: 8640 - L - H + 1;  val: (11520 - (8640 - L)) - L - H + 1 = 2881 - H;  test: the same as val.
ETTH1_WINDOWS = {
    (96, 96): (8640 - 96 - 96 + 1, 2881 - 96, 2881 - 96),  # (8449, 2785, 2785)
    (96, 192): (8640 - 96 - 192 + 1, 2881 - 192, 2881 - 192),  # (8353, 2689, 2689)
    (96, 336): (8640 - 96 - 336 + 1, 2881 - 336, 2881 - 336),  # (8209, 2545, 2545)
    (96, 720): (8640 - 96 - 720 + 1, 2881 - 720, 2881 - 720),  # (7825, 2161, 2161)
    (336, 96): (8640 - 336 - 96 + 1, 2881 - 96, 2881 - 96),  # (8209, 2785, 2785)
    (336, 192): (8640 - 336 - 192 + 1, 2881 - 192, 2881 - 192),  # (8113, 2689, 2689)
    (336, 336): (8640 - 336 - 336 + 1, 2881 - 336, 2881 - 336),  # (7969, 2545, 2545)
    (336, 720): (8640 - 336 - 720 + 1, 2881 - 720, 2881 - 720),  # (7585, 2161, 2161)
}

# sklearn StandardScaler fitted by the reference code on ETTh1 rows [0, 8640), columns HUFL..OT.
ETTH1_TRAIN_MEAN = [
    7.937742245659508,
    2.0210386567335163,
    5.079770601157927,
    0.7461858799957015,
    2.781762386375555,
    0.7884531235540096,
    17.1282616982271,
]
ETTH1_TRAIN_SCALE = [
    5.812749409143771,
    2.0901046504076,
    5.518793579036245,
    1.926379274132982,
    1.0235226594952191,
    0.6302366362251923,
    9.176491024944333,
]


@pytest.fixture(scope="module")
def root(shared_data_root: Path) -> Path:
    if not (shared_data_root / "timeseries/ETTh1.csv").is_file():
        pytest.skip(f"timeseries data not under {shared_data_root}")
    return shared_data_root


class Tables(dict):
    """Benchmarks read on first use and kept for the module (ETTm1 and weather take a second or two each)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> SeriesTable:
        self[name] = table = load_series(name, self.root)
        return table


@pytest.fixture(scope="module")
def tables(root: Path) -> Tables:
    return Tables(root)


@pytest.fixture(scope="module")
def etth1(tables: Tables) -> ForecastDataModule:
    dm = ForecastDataModule.from_table(tables["etth1"], features="M", seq_len=96, label_len=48, pred_len=96)
    dm.setup()
    return dm


def test_loading_by_name_checks_the_root(root: Path, tmp_path: Path) -> None:
    from longseq.core.data import MissingDataError

    assert len(load_series("ExChange", root)) == 7588  # any case; "exchange" for "exchange_rate"
    with pytest.raises(MissingDataError, match="etth1"):
        load_series("etth1", tmp_path)


def test_benchmark_tables(tables: Tables) -> None:
    """Row counts, columns (target last), inferred step of the four files; weather's two known quirks."""
    expected = {
        "etth1": (17420, "h", 7, "HUFL"),
        "ettm1": (69680, "15min", 7, "HUFL"),
        "exchange_rate": (7588, "d", 8, "0"),  # 7,589 CSV lines = header + 7,588 days (1990-01-01..2010-10-10)
        "weather": (52696, "10min", 21, "p (mbar)"),
    }
    for name, (rows, freq, n_cols, first) in expected.items():
        table = tables[name]
        assert table.source == name
        assert (len(table), table.freq, len(table.columns), table.columns[0]) == (rows, freq, n_cols, first)
        assert table.target == "OT" and table.target_index == n_cols - 1
        assert table.values.dtype == np.float64 and np.isfinite(table.values).all()
        assert table.filled == {}
    # 1990-01-01 .. 2010-10-10 is 7,587 days apart, so 7,588 daily rows
    assert (np.datetime64("2010-10-10") - np.datetime64("1990-01-01")).astype(int) + 1 == 7588
    weather = tables["weather"]
    assert [(i.kind, i.row) for i in weather.irregularities] == [("duplicate", 19044), ("gap", 21514)]
    assert str(weather.irregularities[0]) == "row 19044: duplicated timestamp 2020-05-12 06:00:00"
    np.testing.assert_array_equal(weather.values[19043], weather.values[19044])  # the repeated row is identical
    assert str(weather.irregularities[1]).endswith("gap of 100 minutes from 2020-05-29 09:30:00 to 2020-05-29 11:10:00")
    # the DataModule on the two large files (read once, here): weather 36887 - 191, 5270 + 96 - 191, 10539 + 96 - 191
    dm = ForecastDataModule.from_table(weather, seq_len=96, pred_len=96)
    assert dm.split_spec.protocol == "custom"
    assert dm.window_counts == {"train": 36696, "val": 5175, "test": 10444}
    dm = ForecastDataModule.from_table(tables["ettm1"], seq_len=96, pred_len=96)
    assert dm.split_spec.protocol == "ett_minute"
    assert dm.window_counts == {"train": 34369, "val": 11425, "test": 11425}  # see test_ettm1_borders_x4
    dm.setup()
    assert dm.n_time_features == 5 and dm.datasets["test"].marks.shape == (11520 + 96, 5)  # 15-minute features


@pytest.mark.parametrize(("seq_len", "pred_len"), sorted(ETTH1_WINDOWS))
def test_etth1_borders_and_window_counts(seq_len: int, pred_len: int) -> None:
    b = protocol_borders("ett_hour", ETTH1_ROWS, seq_len)
    assert b.train == (0, 12 * MONTH_H) == (0, 8640)
    assert b.val == (12 * MONTH_H - seq_len, 16 * MONTH_H) == (8640 - seq_len, 11520)
    assert b.test == (16 * MONTH_H - seq_len, 20 * MONTH_H) == (11520 - seq_len, 14400)
    assert b.fit_rows == (0, 8640)
    assert b.unused_rows == (14400, 17420)
    counts = tuple(b.n_windows(split, pred_len) for split in ("train", "val", "test"))
    assert counts == ETTH1_WINDOWS[(seq_len, pred_len)]


def test_etth1_datamodule_window_counts(etth1: ForecastDataModule) -> None:
    assert etth1.window_counts == {"train": 8449, "val": 2785, "test": 2785}
    assert [len(etth1.datasets[s]) for s in ("train", "val", "test")] == [8449, 2785, 2785]


def test_ettm1_borders_x4() -> None:
    b = protocol_borders("ett_minute", 69680, 96)
    assert b.train == (0, 4 * 8640) == (0, 34560)
    assert b.val == (34560 - 96, 46080)
    assert b.test == (46080 - 96, 57600)
    # 34560 - 96 - 96 + 1; (46080 - 34464) - 191; (57600 - 45984) - 191
    assert [b.n_windows(s, 96) for s in ("train", "val", "test")] == [34369, 11425, 11425]
    with pytest.raises(SeriesError, match="needs at least 57600 rows"):
        protocol_borders("ett_minute", 57599, 96)


@pytest.mark.parametrize(
    ("rows", "n_train", "n_val", "n_test"),
    [
        # exchange_rate: int(7588 * 0.7) = int(5311.6) = 5311; int(7588 * 0.2) = int(1517.6) = 1517; 7588 - 5311 - 1517 = 760
        (7588, 5311, 760, 1517),
        # weather: int(52696 * 0.7) = int(36887.2) = 36887; int(52696 * 0.2) = int(10539.2) = 10539; rest 5270
        (52696, 36887, 5270, 10539),
    ],
)
def test_custom_70_10_20(rows: int, n_train: int, n_val: int, n_test: int) -> None:
    seq_len, pred_len = 96, 96
    b = protocol_borders("custom", rows, seq_len)
    assert b.train == (0, n_train)
    assert b.val == (n_train - seq_len, n_train + n_val)
    assert b.test == (rows - n_test - seq_len, rows)
    assert b.unused_rows == (rows, rows)
    assert b.n_windows("train", pred_len) == n_train - 191
    assert b.n_windows("val", pred_len) == n_val + 96 - 191
    assert b.n_windows("test", pred_len) == n_test + 96 - 191


def test_benchmarks_pick_their_protocol(tables: Tables) -> None:
    protocols = {name: ForecastDataModule(name).split_spec.protocol for name in BENCHMARKS}  # nothing is read
    assert protocols == {"etth1": "ett_hour", "ettm1": "ett_minute", "exchange_rate": "custom", "weather": "custom"}
    assert ForecastDataModule("some/file.csv").split_spec.protocol == "custom"
    # exchange: 5311 - 191 = 5120, 760 + 96 - 191 = 665, 1517 + 96 - 191 = 1422
    exchange = ForecastDataModule.from_table(tables["exchange_rate"], seq_len=96, pred_len=96)
    assert exchange.window_counts == {"train": 5120, "val": 665, "test": 1422}


def test_etth1_scaler_equals_reference(etth1: ForecastDataModule) -> None:
    assert etth1.scaler is not None
    np.testing.assert_allclose(etth1.scaler.mean, ETTH1_TRAIN_MEAN, rtol=1e-13, atol=0)
    np.testing.assert_allclose(etth1.scaler.scale, ETTH1_TRAIN_SCALE, rtol=1e-13, atol=0)


def test_etth1_windows_match_independent_parse(etth1: ForecastDataModule, root: Path) -> None:
    """Windows = (raw - train mean) / train std (ddof=0), raw parsed by np.loadtxt, not by our reader."""
    raw = np.loadtxt(root / "timeseries/ETTh1.csv", delimiter=",", skiprows=1, usecols=range(1, 8))  # (17420, 7)
    mean, std = raw[:8640].mean(axis=0), raw[:8640].std(axis=0)
    scaled = ((raw - mean) / std).astype(np.float32)
    L, label, H = 96, 48, 96
    for split, start in (("train", 0), ("val", 8640 - L), ("test", 11520 - L)):
        ds = etth1.datasets[split]
        for i in (0, 1, len(ds) // 2, len(ds) - 1):
            item = ds[i]
            s = start + i
            np.testing.assert_allclose(item["x"].numpy(), scaled[s : s + L], rtol=0, atol=1e-6)
            np.testing.assert_allclose(item["y"].numpy(), scaled[s + L - label : s + L + H], rtol=0, atol=1e-6)
    # the first val target starts right after the training rows; the last test target ends at row 14400
    first_val = etth1.datasets["val"][0]["y"][label:]
    np.testing.assert_allclose(first_val.numpy(), scaled[8640 : 8640 + H], rtol=0, atol=1e-6)
    last_test = etth1.datasets["test"][len(etth1.datasets["test"]) - 1]["y"][label:]
    np.testing.assert_allclose(last_test.numpy(), scaled[14400 - H : 14400], rtol=0, atol=1e-6)


def _rewrite_etth1(src: Path, dst: Path, rows: range, factor: float) -> None:
    """Copy ETTh1 with every value of data ``rows`` multiplied by ``factor``."""
    lines = src.read_text().splitlines()
    for r in rows:
        date, *values = lines[r + 1].split(",")
        lines[r + 1] = ",".join([date, *(repr(float(v) * factor) for v in values)])
    dst.write_text("\n".join(lines) + "\n")


def test_no_leakage_into_scaling(root: Path, tmp_path: Path) -> None:
    """Drastic changes to val/test rows leave the scaler untouched; a change to one train row does not."""
    src = root / "timeseries/ETTh1.csv"
    kwargs = {"split": "ett_hour", "seq_len": 96, "pred_len": 96}
    base = ForecastDataModule(str(src), **kwargs)
    base.setup()
    leaky = tmp_path / "leaky.csv"
    _rewrite_etth1(src, leaky, range(8640, 14400), 1000.0)  # all of val and test (and the history rows)
    changed = ForecastDataModule(str(leaky), **kwargs)
    changed.setup()
    assert base.scaler is not None and changed.scaler is not None
    np.testing.assert_array_equal(changed.scaler.mean, base.scaler.mean)
    np.testing.assert_array_equal(changed.scaler.scale, base.scaler.scale)
    assert not torch.equal(changed.datasets["test"].values, base.datasets["test"].values)
    torch.testing.assert_close(changed.datasets["train"].values, base.datasets["train"].values, rtol=0, atol=0)
    # control: the same edit to one training row does move the statistics
    touched = tmp_path / "train_edit.csv"
    _rewrite_etth1(src, touched, range(8639, 8640), 1000.0)
    control = ForecastDataModule(str(touched), **kwargs)
    control.setup()
    assert control.scaler is not None
    assert not np.array_equal(control.scaler.mean, base.scaler.mean)


@pytest.mark.parametrize(("features", "c_in", "c_out"), [("M", 7, 7), ("S", 1, 1), ("MS", 7, 1)])
def test_feature_modes_batches(tables: Tables, features: str, c_in: int, c_out: int) -> None:
    dm = ForecastDataModule.from_table(
        tables["etth1"], features=features, seq_len=96, label_len=48, pred_len=96, batch_size=32
    )
    dm.setup("fit")
    assert (dm.n_channels, dm.n_targets, dm.n_time_features) == (c_in, c_out, 4)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert batch["x"].shape == (32, 96, c_in) and batch["y"].shape == (32, 48 + 96, c_in)
        assert batch["x_mark"].shape == (32, 96, 4) and batch["y_mark"].shape == (32, 144, 4)
        assert batch["y"][..., dm.target_channels].shape == (32, 144, c_out)
        assert all(t.dtype == torch.float32 for t in batch.values())
    test = dm.test_dataloader()
    assert len(test) == -(-2785 // 32)  # every window: the last partial batch is kept
    assert list(test)[-1]["x"].shape[0] == 2785 - 32 * (2785 // 32)
    first = next(iter(test))  # test batches are in order: window 1 is window 0 shifted by one row
    torch.testing.assert_close(first["x"][1, :-1], first["x"][0, 1:], rtol=0, atol=0)
    if features == "S":  # S scales the target alone: its statistics are those of OT in M
        assert dm.scaler is not None
        np.testing.assert_allclose(dm.scaler.mean, ETTH1_TRAIN_MEAN[-1:], rtol=1e-13)
        np.testing.assert_allclose(dm.scaler.scale, ETTH1_TRAIN_SCALE[-1:], rtol=1e-13)


def test_ms_target_is_last_channel(root: Path) -> None:  # reads ETTh1 again: the target is chosen at load time
    """A non-default target moves to the last channel, as ``Dataset_Custom`` reorders columns."""
    dm = ForecastDataModule("etth1", root=str(root), features="MS", target="HUFL", seq_len=24, label_len=0, pred_len=8)
    assert dm.columns == ("HULL", "MUFL", "MULL", "LUFL", "LULL", "OT", "HUFL")
    dm.setup()
    raw_hufl = dm.table.values[0:24, -1]
    assert dm.scaler is not None
    np.testing.assert_allclose(
        dm.datasets["train"][0]["x"][:, -1].numpy(),
        (raw_hufl - ETTH1_TRAIN_MEAN[0]) / ETTH1_TRAIN_SCALE[0],
        rtol=0,
        atol=1e-6,
    )


def test_marks_are_calendar_features_of_the_rows(etth1: ForecastDataModule) -> None:
    """x_mark of the first training window: 2016-07-01 00:00 is a Friday, day 183 of the leap year 2016."""
    mark = etth1.datasets["train"][0]["x_mark"]  # (L, 4): hour, weekday, day, dayofyear
    expected_row0 = [0 / 23 - 0.5, 4 / 6 - 0.5, 0 / 30 - 0.5, 182 / 365 - 0.5]
    np.testing.assert_allclose(mark[0].numpy(), expected_row0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(mark[5, 0].item(), 5 / 23 - 0.5, atol=1e-7)
    full = time_features(etth1.table.timestamps, "h")
    np.testing.assert_array_equal(etth1.datasets["test"].marks.numpy(), full[11520 - 96 : 14400])


def test_inverse_transform_round_trip(etth1: ForecastDataModule) -> None:
    batch = next(iter(etth1.test_dataloader()))
    raw = etth1.inverse_transform(batch["y"])  # (B, label + H, 7) in the file's units
    start = (11520 - 96) + 96 - 48  # first y row of the test split: border1 + L - label_len
    expected = torch.from_numpy(etth1.table.values[start : start + 144]).float()
    torch.testing.assert_close(raw[0], expected, rtol=1e-5, atol=1e-4)
    ms = ForecastDataModule.from_table(etth1.table, features="MS", seq_len=96, label_len=48, pred_len=96)
    # a target-only prediction (..., 1) of MS uses the target's statistics, the same as OT's in M
    torch.testing.assert_close(ms.inverse_transform(batch["y"][..., -1:]), raw[..., -1:], rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="expected 7"):
        etth1.inverse_transform(batch["y"][..., :3])


def test_state_dict_restores_scaler(etth1: ForecastDataModule) -> None:
    state = etth1.state_dict()
    assert state["columns"] == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    fresh = ForecastDataModule("etth1", root="/nonexistent-never-read")  # inverse_transform needs no data
    fresh.load_state_dict(state)
    y = torch.randn(2, 5, 7)
    torch.testing.assert_close(fresh.inverse_transform(y), etth1.inverse_transform(y))


def test_benchmark_rejects_csv_options(root: Path) -> None:
    with pytest.raises(SeriesError, match="fill apply to CSV files"):
        load_series("etth1", root, fill="zero")
    with pytest.raises(SeriesError, match="date_format, allow_irregular apply to CSV files"):  # at init, no reading
        ForecastDataModule("ETTm1", date_format="%Y", allow_irregular=True)
    assert set(BENCHMARKS) == {"etth1", "ettm1", "exchange_rate", "weather"}


def test_split_too_short_for_window_is_an_error(tables: Tables) -> None:
    # exchange's val split has 760 + L = 856 rows: H = 760 leaves exactly one window, H = 761 none
    exchange = tables["exchange_rate"]
    assert ForecastDataModule.from_table(exchange, seq_len=96, pred_len=760).window_counts["val"] == 1
    dm = ForecastDataModule.from_table(exchange, seq_len=96, label_len=48, pred_len=761)
    with pytest.raises(
        SeriesError, match=r"the val split \(rows \[5215, 6071\) of 7588\) has 856 rows.*96 \+ 761 = 857"
    ):
        dm.setup()
