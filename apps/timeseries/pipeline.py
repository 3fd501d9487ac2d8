"""Forecasting a user's CSV with a trained model: :class:`ForecastPipeline` (``longseq-timeseries forecast``).

The CSV is read with the training columns (target last), scaled with the training z-score, and the
last ``seq_len`` rows are the model's look-back; the forecast is de-normalised and stamped with
timestamps that continue the series' step (calendar months for monthly/quarterly/yearly data).
``holdout=True`` hides the last ``horizon`` rows, forecasts them from the rows before, and returns
them as the truth (the error is then reported in original units).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from longseq.apps.timeseries.checkpoint import DataInfo, from_pretrained
from longseq.apps.timeseries.data import SeriesError, SeriesTable, StandardScaler, read_series_csv, time_features
from longseq.apps.timeseries.data.spacing import check_timestamps, show
from longseq.apps.timeseries.models import Forecaster

__all__ = ["Forecast", "ForecastPipeline", "future_timestamps"]


def future_timestamps(timestamps: np.ndarray, n: int, source: str = "series") -> np.ndarray:
    """The ``n`` timestamps after ``timestamps`` at the series' step.

    Monthly, quarterly and yearly series step in calendar months, keeping either the day of the month
    or, for month-end series (Jan 31, Feb 28, ...), the month end.
    """
    spacing = check_timestamps(
        timestamps, source=source, lines=np.arange(len(timestamps)) + 2, allow_duplicates=True, allow_irregular=True
    )
    last = timestamps[-1]
    steps = np.arange(1, n + 1)
    if spacing.step_months is not None:
        months = timestamps.astype("datetime64[M]")
        since_start = timestamps - months.astype(timestamps.dtype)  # time since the start of the month
        before_end = (months + 1).astype(timestamps.dtype) - timestamps  # time before the next month
        future = months[-1] + steps * spacing.step_months  # (n,) months
        if np.all(since_start == since_start[0]):  # same day of the month (e.g. the 1st)
            return future.astype(last.dtype) + since_start[-1]
        return (future + 1).astype(last.dtype) - before_end[-1]  # anchored to the month end
    return last + steps * np.timedelta64(int(spacing.step_seconds), "s")


@dataclass(frozen=True)
class Forecast:
    """A forecast in original units.

    Attributes:
        timestamps: (horizon,) future timestamps.
        values: (horizon, K) forecast of the ``columns``.
        columns: forecast channel names (all channels for ``M``, the target for ``S``/``MS``).
        history_timestamps, history: the look-back rows (L,) and their values (L, K).
        truth: (horizon, K) the held-out rows with ``holdout``, else None.
    """

    timestamps: np.ndarray
    values: np.ndarray
    columns: tuple[str, ...]
    history_timestamps: np.ndarray
    history: np.ndarray
    truth: np.ndarray | None = None

    def metrics(self) -> dict[str, float]:
        """MSE and MAE against the truth in original units (empty without truth)."""
        if self.truth is None:
            return {}
        err = self.values - self.truth
        return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}

    def write_csv(self, path: str | Path) -> Path:
        """``date,<col>...`` (and ``<col>_true`` with truth), one row per forecast step."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = ["date", *self.columns]
        if self.truth is not None:
            header += [f"{c}_true" for c in self.columns]
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for i, stamp in enumerate(self.timestamps):
                row = [show(stamp), *(f"{v:.6g}" for v in self.values[i])]
                if self.truth is not None:
                    row += [f"{v:.6g}" for v in self.truth[i]]
                writer.writerow(row)
        return path

    def plot(self, path: str | Path, max_panels: int = 8) -> Path:
        """PNG of the history, the forecast and the truth (one panel per channel, the target first)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        order = list(range(len(self.columns)))[::-1][:max_panels]  # target (last) first
        fig, axes = plt.subplots(len(order), 1, figsize=(10, 2.4 * len(order)), squeeze=False, sharex=True)
        for ax, k in zip(axes[:, 0], order):
            ax.plot(self.history_timestamps, self.history[:, k], color="0.4", lw=1, label="history")
            ax.plot(self.timestamps, self.values[:, k], color="C0", lw=1.5, label="forecast")
            if self.truth is not None:
                ax.plot(self.timestamps, self.truth[:, k], color="C1", lw=1, label="truth")
            ax.set_ylabel(self.columns[k])
        axes[0, 0].legend(loc="upper left", fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


class ForecastPipeline:
    """A trained forecaster plus its :class:`DataInfo`; call it on a CSV.

    Args:
        model: the forecaster.
        data: how the training data was prepared (columns, scaling, calendar features).
    """

    def __init__(self, model: Forecaster, data: DataInfo) -> None:
        self.model, self.data = model.eval(), data
        if len(data.columns) != model.enc_in:
            raise ValueError(f"data info has {len(data.columns)} columns but the model takes {model.enc_in}")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ForecastPipeline:
        """Load a checkpoint (:func:`~longseq.apps.timeseries.checkpoint.from_pretrained`)."""
        model, data = from_pretrained(path)
        if data is None:
            raise ValueError(f"{path} has no data info (columns, scaling); it cannot forecast a CSV")
        return cls(model, data)

    def read(self, csv_path: str | Path, date_column: str = "date", date_format: str | None = None) -> SeriesTable:
        """Read the training columns of ``csv_path`` (an absent column is a :class:`SeriesError`)."""
        data = self.data
        return read_series_csv(
            csv_path, target=data.target, columns=list(data.columns), date_column=date_column, date_format=date_format
        )

    @torch.no_grad()
    def __call__(
        self,
        csv_path: str | Path,
        horizon: int | None = None,
        *,
        holdout: bool = False,
        date_column: str = "date",
        date_format: str | None = None,
    ) -> Forecast:
        """Forecast the ``horizon`` steps after the series (or after all but its last ``horizon`` rows).

        Raises:
            SeriesError: bad CSV, a missing column, or fewer rows than the look-back (plus the horizon
                with ``holdout``).
            ValueError: ``horizon`` outside ``[1, pred_len]``.
        """
        model, data = self.model, self.data
        horizon = model.pred_len if horizon is None else horizon
        if not 1 <= horizon <= model.pred_len:
            raise ValueError(f"horizon must be in [1, {model.pred_len}] (the model's pred_len), got {horizon}")
        table = self.read(csv_path, date_column, date_format)
        L = model.seq_len
        need = L + (horizon if holdout else 0)
        if len(table) < need:
            what = f"look-back {L} + holdout {horizon}" if holdout else f"look-back {L}"
            raise SeriesError(f"{csv_path}: {len(table)} rows, fewer than the model's {what} = {need} rows")
        end = len(table) - horizon if holdout else len(table)
        ts, raw = table.timestamps[:end], table.values[:end]  # (T, C) original units
        values = raw[:, -1:] if data.features == "S" else raw
        scaler = StandardScaler(data.mean, data.scale) if data.scaled else None
        scaled = values if scaler is None else scaler.transform(values)
        future = future_timestamps(ts, model.pred_len, str(csv_path))
        marks = time_features(np.concatenate([ts[-L:], future]), data.freq, data.timeenc)  # (L + H, F)
        label = model.label_len
        x = torch.as_tensor(scaled[-L:], dtype=torch.float32)[None]  # (1, L, C)
        x_mark = torch.as_tensor(marks[:L])[None]
        y_mark = torch.as_tensor(marks[L - label :])[None]  # (1, label_len + H, F)
        pred = model(x, x_mark, y_mark)[0, :horizon].double().numpy()  # (horizon, K)
        if data.features == "M":
            columns, hist = tuple(data.columns), values[-L:]
        else:
            columns, hist = (data.target,), values[-L:, -1:]
            pred = pred[:, -1:]
        if scaler is not None:
            channels = None if pred.shape[-1] == scaler.n_channels else slice(-1, None)
            pred = scaler.inverse_transform(pred, channels=channels)
        truth = None
        if holdout:
            held = table.values[end : end + horizon]
            truth = held if data.features == "M" else held[:, -1:]
        return Forecast(future[:horizon], pred, columns, ts[-L:], hist, truth)
