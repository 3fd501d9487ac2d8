"""Parts of the time-series data layer on synthetic input: calendar features, the scaler, the windows,
frequency aliases, and the DataModule's constructor as LightningCLI sees it (no shared data needed)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
import torch

from longseq.apps.timeseries.data import (
    ForecastDataModule,
    ForecastWindowDataset,
    SplitSpec,
    StandardScaler,
    n_time_features,
    time_features,
)
from longseq.apps.timeseries.data.timefeatures import base_unit, calendar_fields


def random_datetimes(n: int, seed: int = 0) -> list[datetime]:
    """``n`` datetimes spread over 1901..2099 (leap years, year ends, ISO week 53 all occur)."""
    rng = np.random.default_rng(seed)
    base = datetime(1901, 1, 1)
    seconds = rng.integers(0, 199 * 365 * 86400, size=n)
    edges = [
        datetime(2020, 12, 31, 23, 59, 59),
        datetime(2021, 1, 3),
        datetime(2016, 2, 29, 12),
        datetime(2015, 12, 31),
    ]
    return [base + timedelta(seconds=int(s)) for s in seconds] + edges


def test_calendar_fields_match_python_datetime() -> None:
    stamps = random_datetimes(3000)
    every_day = [datetime(1901, 1, 1) + timedelta(days=i, seconds=37 * i % 86400) for i in range(200 * 365)]
    for sample in (stamps, every_day):  # every day of 1901..2100 covers each ISO-week and leap-year case
        fields = calendar_fields(np.array(sample, dtype="datetime64[s]"))
        expected = {
            "month": [d.month for d in sample],
            "day": [d.day for d in sample],
            "weekday": [d.weekday() for d in sample],
            "dayofyear": [d.timetuple().tm_yday for d in sample],
            "hour": [d.hour for d in sample],
            "minute": [d.minute for d in sample],
            "second": [d.second for d in sample],
            "isoweek": [d.isocalendar()[1] for d in sample],
        }
        for name, values in expected.items():
            np.testing.assert_array_equal(fields[name], values, err_msg=name)


# base unit -> the features in order, as (field, first value, divisor) of (x - first) / divisor - 0.5
TIMEF = {
    "s": [
        ("second", 0, 59),
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("weekday", 0, 6),
        ("day", 1, 30),
        ("dayofyear", 1, 365),
    ],
    "t": [("minute", 0, 59), ("hour", 0, 23), ("weekday", 0, 6), ("day", 1, 30), ("dayofyear", 1, 365)],
    "h": [("hour", 0, 23), ("weekday", 0, 6), ("day", 1, 30), ("dayofyear", 1, 365)],
    "d": [("weekday", 0, 6), ("day", 1, 30), ("dayofyear", 1, 365)],
    "b": [("weekday", 0, 6), ("day", 1, 30), ("dayofyear", 1, 365)],
    "w": [("day", 1, 30), ("isoweek", 1, 52)],
    "m": [("month", 1, 11)],
    "q": [("month", 1, 11)],
    "y": [],
}


@pytest.mark.parametrize(
    ("freq", "unit"),
    [
        ("1s", "s"),
        ("15min", "t"),
        ("10T", "t"),
        ("h", "h"),
        ("3H", "h"),
        ("d", "d"),
        ("B", "b"),
        ("W-SUN", "w"),
        ("M", "m"),
        ("QE", "q"),
        ("A", "y"),
    ],
)
def test_time_features_timeenc1(freq: str, unit: str) -> None:
    stamps = random_datetimes(500, seed=1)
    feats = time_features(np.array(stamps, dtype="datetime64[s]"), freq)
    assert feats.dtype == np.float32 and feats.shape == (len(stamps), len(TIMEF[unit])) == (
        len(stamps),
        n_time_features(freq),
    )
    assert feats.size == 0 or (feats.min() >= -0.5 and feats.max() <= 0.5)
    attrs = {"second": "second", "minute": "minute", "hour": "hour", "day": "day", "month": "month"}
    for j, (name, first, divisor) in enumerate(TIMEF[unit]):
        if name in attrs:
            raw = [getattr(d, attrs[name]) for d in stamps]
        elif name == "weekday":
            raw = [d.weekday() for d in stamps]
        elif name == "dayofyear":
            raw = [d.timetuple().tm_yday for d in stamps]
        else:
            raw = [d.isocalendar()[1] for d in stamps]
        np.testing.assert_allclose(
            feats[:, j], (np.array(raw) - first) / divisor - 0.5, rtol=0, atol=1e-7, err_msg=name
        )


def test_time_features_timeenc0() -> None:
    ts = np.array(["2016-07-01T00:00", "2016-07-01T00:45", "2018-12-31T23:30"], dtype="datetime64[s]")
    hourly = time_features(ts, "h", timeenc=0)
    np.testing.assert_array_equal(hourly, [[7, 1, 4, 0], [7, 1, 4, 0], [12, 31, 0, 23]])  # month, day, weekday, hour
    minutely = time_features(ts, "15min", timeenc=0)
    np.testing.assert_array_equal(minutely[:, 4], [0, 3, 2])  # minute // 15
    assert (n_time_features("h", 0), n_time_features("15min", 0), n_time_features("d", 0)) == (4, 5, 4)
    with pytest.raises(ValueError, match="timeenc must be 0"):
        time_features(ts, "h", timeenc=2)


@pytest.mark.parametrize("bad", ["ms", "", "fortnight", "0h", "h5"])
def test_unknown_freq(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown frequency"):
        base_unit(bad)


def test_scaler_matches_formula_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(257, 5)) * np.array([1, 10, 100, 0.01, 1])
    x[:, 4] = 7.0  # a constant column gets scale 1 (no division by zero), as sklearn does
    scaler = StandardScaler().fit(x)
    np.testing.assert_allclose(scaler.mean, x.sum(axis=0) / len(x), rtol=1e-14)
    std = np.sqrt(((x - x.sum(axis=0) / len(x)) ** 2).sum(axis=0) / len(x))  # ddof = 0
    np.testing.assert_allclose(scaler.scale[:4], std[:4], rtol=1e-13)
    assert scaler.scale[4] == 1.0
    z = scaler.transform(x)
    np.testing.assert_allclose(z[:, :4].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, :4].std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(z), x, rtol=1e-12)
    t = torch.from_numpy(z).float().reshape(1, 257, 5)  # tensors keep dtype and any leading dims
    back = scaler.inverse_transform(t)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32 and back.shape == (1, 257, 5)
    torch.testing.assert_close(back[0], torch.from_numpy(x).float(), rtol=1e-5, atol=1e-4)
    target = scaler.inverse_transform(z[:, 2:3], channels=slice(2, 3))
    np.testing.assert_allclose(target[:, 0], x[:, 2], rtol=1e-12)
    again = StandardScaler.from_state_dict(scaler.state_dict())
    np.testing.assert_array_equal(again.transform(x), z)


def test_scaler_errors() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        StandardScaler().transform(np.zeros((2, 3)))
    scaler = StandardScaler().fit(np.arange(6.0).reshape(3, 2))
    with pytest.raises(ValueError, match="3 channels, expected 2"):
        scaler.transform(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        StandardScaler().fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="both mean and scale"):
        StandardScaler(mean=[0.0])


@pytest.mark.parametrize(("seq_len", "label_len", "pred_len"), [(1, 0, 1), (5, 0, 3), (5, 5, 1), (7, 3, 4)])
def test_windows_slice_like_the_reference(seq_len: int, label_len: int, pred_len: int) -> None:
    n, c = 23, 3
    values = np.arange(n * c, dtype=np.float64).reshape(n, c)
    marks = -np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    ds = ForecastWindowDataset(values, marks, seq_len, label_len, pred_len)
    assert len(ds) == n - seq_len - pred_len + 1
    for i in (0, 1, len(ds) - 1):
        item = ds[i]
        r_begin = i + seq_len - label_len  # s_end - label_len
        np.testing.assert_array_equal(item["x"].numpy(), values[i : i + seq_len])
        np.testing.assert_array_equal(item["y"].numpy(), values[r_begin : r_begin + label_len + pred_len])
        np.testing.assert_array_equal(item["x_mark"].numpy(), marks[i : i + seq_len])
        np.testing.assert_array_equal(item["y_mark"].numpy(), marks[r_begin : r_begin + label_len + pred_len])
    np.testing.assert_array_equal(ds[-1]["x"].numpy(), ds[len(ds) - 1]["x"].numpy())
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert ds[len(ds) - 1]["y"][-1, 0].item() == values[-1, 0]  # the last window ends on the last row


def test_window_dataset_errors() -> None:
    values, marks = np.zeros((10, 2)), np.zeros((10, 4))
    with pytest.raises(ValueError, match="label_len <= seq_len"):
        ForecastWindowDataset(values, marks, 4, 5, 2)
    with pytest.raises(ValueError, match="no window fits"):
        ForecastWindowDataset(values, marks, 8, 4, 3)
    with pytest.raises(ValueError, match="same N"):
        ForecastWindowDataset(values, marks[:9], 4, 2, 2)


def test_split_spec_validation() -> None:
    with pytest.raises(ValueError, match="protocol must be"):
        SplitSpec("ett_day")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seq_len must be >= 1"):
        SplitSpec().borders(100, 0)


def test_datamodule_arguments_are_validated_without_reading() -> None:
    for bad in (
        {"features": "X"},
        {"seq_len": 4, "label_len": 5},
        {"timeenc": 3},
        {"freq": "fortnight"},
        {"fill": "mean"},
        {"split": "random"},
        {"batch_size": 0},
    ):
        with pytest.raises(ValueError):
            ForecastDataModule("nonexistent.csv", **bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="from_table does not take root"):
        ForecastDataModule.from_table(None, root="x")  # type: ignore[arg-type]


def test_datamodule_works_with_jsonargparse() -> None:
    """LightningCLI builds ``--data`` from the init signature: every argument typed, with a default."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ForecastDataModule, "data")
    cfg = parser.parse_args(
        [
            "--data.dataset=my.csv",
            "--data.features=MS",
            "--data.seq_len=336",
            "--data.freq=15min",
            "--data.columns=[a,b]",
            "--data.fill=ffill",
        ]
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(cfg).data
    assert isinstance(dm, ForecastDataModule)
    assert (dm.features, dm.seq_len, dm.freq, dm.hparams["columns"], dm.hparams["fill"]) == (
        "MS",
        336,
        "15min",
        ["a", "b"],
        "ffill",
    )
    with pytest.raises(Exception, match="features"):
        parser.parse_args(["--data.features=Q"])
