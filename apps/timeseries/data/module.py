"""The forecasting DataModule: :class:`ForecastDataModule` (usable from LightningCLI as ``--data``).

It loads a registered benchmark or a user's CSV, splits it chronologically by the reference
protocol, fits the z-score on the training rows only, and serves windows of
:class:`~longseq.apps.timeseries.data.windows.ForecastWindowDataset` as batches of dicts
``x (B, L, C)``, ``y (B, label_len + H, C)``, ``x_mark (B, L, F)``, ``y_mark (B, label_len + H, F)``.

Data loaders follow current Time-Series-Library: training batches are shuffled, no split drops its
last partial batch (``drop_last=False``: every test window is scored; older Informer/PatchTST code
dropped the last test batch).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from longseq.apps.timeseries.data.fill import FillPolicy, check_fill_policy
from longseq.apps.timeseries.data.scaling import ArrayLike, StandardScaler
from longseq.apps.timeseries.data.sources import benchmark_spec, load_series, reject_csv_options
from longseq.apps.timeseries.data.splits import SPLITS, SplitBorders, SplitName, SplitSpec
from longseq.apps.timeseries.data.table import SeriesTable
from longseq.apps.timeseries.data.timefeatures import base_unit, n_time_features, time_features
from longseq.apps.timeseries.data.windows import ForecastWindowDataset

__all__ = ["Features", "ForecastDataModule"]

Features = Literal["M", "S", "MS"]
_CSV_OPTIONS = ("date_column", "columns", "date_format", "fill", "allow_irregular", "allow_duplicates")


class ForecastDataModule(LightningDataModule):
    """Long-horizon forecasting data on the Informer/Autoformer/PatchTST protocol.

    Args:
        dataset: a registered benchmark (``etth1``, ``ettm1``, ``exchange_rate``, ``weather``; any case)
            or the path of a CSV file (optionally gzip) with a date column and numeric columns.
        root: data root for benchmarks; default ``$LONGSEQ_DATA``, then ``~/.cache/longseq``.
        features: ``"M"`` all channels in and out; ``"S"`` the target only; ``"MS"`` all channels in,
            the target (the last channel) out.
        target: the target column (moved to the last channel).
        seq_len: look-back L.
        label_len: decoder start tokens (the last ``label_len`` input steps repeated at the head of ``y``).
        pred_len: horizon H.
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
        scale: z-score with statistics of the training rows (the reference default); metrics are then
            on the normalised scale, as the papers report them.
        timeenc: 1 for scaled calendar features (TSLib's ``embed='timeF'``), 0 for integer fields.
        freq: frequency alias for the calendar features (``"h"``, ``"15min"``, ``"d"``, ...); None uses
            the step inferred from the timestamps. TSLib's scripts use ``"h"`` for every dataset.
        split: ``"auto"`` (the benchmark's protocol; ``"custom"`` for CSV files), ``"ett_hour"``,
            ``"ett_minute"`` or ``"custom"``.
        train_ratio: training share of the ``custom`` split.
        test_ratio: test share of the ``custom`` split (validation gets the rest).
        date_column: CSV only: the timestamp column.
        columns: CSV only: the value columns to use (target added); None uses all but the date.
        date_format: CSV only: strptime format of the timestamps; None recognises ISO and ``YYYY/M/D``.
        fill: CSV only: missing values are an ``"error"`` unless ``"ffill"``, ``"interpolate"`` or ``"zero"``.
        allow_irregular: CSV only: keep gaps that differ from the inferred step.
        allow_duplicates: CSV only: keep repeated timestamps.
        pin_memory: DataLoader ``pin_memory``.
    """

    def __init__(
        self,
        dataset: str = "etth1",
        root: str | None = None,
        features: Features = "M",
        target: str = "OT",
        seq_len: int = 96,
        label_len: int = 48,
        pred_len: int = 96,
        batch_size: int = 32,
        num_workers: int = 0,
        scale: bool = True,
        timeenc: Literal[0, 1] = 1,
        freq: str | None = None,
        split: Literal["auto", "ett_hour", "ett_minute", "custom"] = "auto",
        train_ratio: float = 0.7,
        test_ratio: float = 0.2,
        date_column: str = "date",
        columns: list[str] | None = None,
        date_format: str | None = None,
        fill: FillPolicy = "error",
        allow_irregular: bool = False,
        allow_duplicates: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if features not in ("M", "S", "MS"):
            raise ValueError(f"features must be 'M', 'S' or 'MS', got {features!r}")
        if seq_len < 1 or pred_len < 1 or not 0 <= label_len <= seq_len:
            raise ValueError(
                f"need seq_len >= 1, pred_len >= 1 and 0 <= label_len <= seq_len, got seq_len={seq_len}, "
                f"label_len={label_len}, pred_len={pred_len}"
            )
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size} and {num_workers}")
        if timeenc not in (0, 1):
            raise ValueError(f"timeenc must be 0 or 1, got {timeenc!r}")
        if freq is not None:
            base_unit(freq)
        check_fill_policy(fill)
        if split not in ("auto", "ett_hour", "ett_minute", "custom"):
            raise ValueError(f"split must be 'auto', 'ett_hour', 'ett_minute' or 'custom', got {split!r}")
        csv_options: dict[str, Any] = dict(
            zip(_CSV_OPTIONS, (date_column, columns, date_format, fill, allow_irregular, allow_duplicates))
        )
        spec = benchmark_spec(dataset)
        if spec is not None:
            reject_csv_options(dataset, csv_options)
        protocol = (spec.split if spec else "custom") if split == "auto" else split
        self.split_spec = SplitSpec(protocol, train_ratio, test_ratio)  # type: ignore[arg-type]
        self.save_hyperparameters()
        self.dataset, self.root, self.features, self.target = dataset, root, features, target
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.scale, self.timeenc, self.freq = scale, timeenc, freq
        self._csv_options = csv_options
        self.scaler: StandardScaler | None = None
        self.datasets: dict[str, ForecastWindowDataset] = {}

    @classmethod
    def from_table(cls, table: SeriesTable, **kwargs: Any) -> ForecastDataModule:
        """A DataModule over an already loaded :class:`SeriesTable` (``dataset`` becomes ``table.source``).

        ``kwargs`` are the other init arguments except ``dataset``, ``root`` and the CSV options; ``target``,
        if given, must be the table's target (its last column).
        """
        given = sorted({"dataset", "root", *_CSV_OPTIONS}.intersection(kwargs))
        if given:
            raise TypeError(f"from_table does not take {', '.join(given)}: the table is already loaded")
        target = kwargs.pop("target", table.target)
        if target != table.target:
            raise ValueError(f"target {target!r} is not the table's target {table.target!r} (its last column)")
        module = cls(dataset=table.source, target=target, **kwargs)
        module.__dict__["table"] = table  # fills the cached_property below
        return module

    # ------------------------------------------------------------------ the data, loaded once
    @cached_property
    def table(self) -> SeriesTable:
        """The loaded series (all columns, target last), read on first access."""
        return load_series(self.dataset, self.root, target=self.target, **self._csv_options)

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the input channels: all columns for ``M``/``MS``, the target for ``S``."""
        return (self.table.target,) if self.features == "S" else self.table.columns

    @property
    def n_channels(self) -> int:
        """C, the channels of ``x`` and ``y`` (``enc_in`` of the reference models)."""
        return len(self.columns)

    @property
    def n_targets(self) -> int:
        """Channels a model predicts (``c_out``): C for ``M``, 1 for ``S`` and ``MS``."""
        return self.n_channels if self.features == "M" else 1

    @property
    def target_channels(self) -> slice:
        """Channels of ``y`` that the loss and metrics use: all, or the last one for ``MS``."""
        return slice(-1, None) if self.features == "MS" else slice(None)

    @property
    def time_freq(self) -> str:
        """Frequency alias used for the calendar features: ``freq`` or the inferred step."""
        return self.freq or self.table.freq

    @property
    def n_time_features(self) -> int:
        """F, the columns of ``x_mark`` and ``y_mark``."""
        return n_time_features(self.time_freq, self.timeenc)

    @cached_property
    def borders(self) -> SplitBorders:
        """Row ranges of train/val/test (checked: each split holds at least one window)."""
        borders = self.split_spec.borders(len(self.table), self.seq_len)
        borders.check(self.pred_len)
        return borders

    @property
    def window_counts(self) -> dict[str, int]:
        """Number of windows of each split."""
        return {split: self.borders.n_windows(split, self.pred_len) for split in SPLITS}

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Fit the scaler on the training rows and build the three window datasets (once)."""
        if self.datasets:
            return
        values = self.table.values[:, -1:] if self.features == "S" else self.table.values  # (T, C)
        borders = self.borders
        if self.scale:
            start, end = borders.fit_rows
            self.scaler = StandardScaler().fit(values[start:end])
            values = self.scaler.transform(values)
        marks = time_features(self.table.timestamps, self.time_freq, self.timeenc)  # (T, F)
        for split in SPLITS:
            start, end = borders[split]
            self.datasets[split] = ForecastWindowDataset(
                values[start:end], marks[start:end], self.seq_len, self.label_len, self.pred_len
            )

    def _loader(self, split: SplitName, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training windows."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation windows in order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test windows in order (every window; no partial batch dropped)."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test windows, in order."""
        return self._loader("test", shuffle=False)

    # ------------------------------------------------------------------ de-normalising
    def inverse_transform(self, x: ArrayLike) -> ArrayLike:
        """Undo the scaling of ``x`` (..., C) (all channels) or (..., 1) (the target, for ``S``/``MS``).

        Returns ``x`` unchanged when ``scale=False``.
        """
        if not self.scale:
            return x
        if self.scaler is None:
            self.setup()
        assert self.scaler is not None
        n_channels = self.scaler.n_channels
        if x.shape[-1] == n_channels:
            return self.scaler.inverse_transform(x)
        if x.shape[-1] == 1 and self.features == "MS":
            return self.scaler.inverse_transform(x, channels=slice(-1, None))
        raise ValueError(
            f"last axis of x has {x.shape[-1]} channels; expected {n_channels} (all channels)"
            + (" or 1 (the target)" if self.features == "MS" else "")
        )

    def state_dict(self) -> dict[str, Any]:
        """Scaler statistics and channel names, saved in checkpoints so predictions can be de-normalised."""
        if self.scaler is None:
            return {}
        return {"columns": list(self.columns), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the scaler of a checkpoint (:meth:`setup` refits it from the same rows when data is loaded)."""
        if "scaler" in state_dict:
            self.scaler = StandardScaler.from_state_dict(state_dict["scaler"])

    def __repr__(self) -> str:
        return (
            f"ForecastDataModule(dataset={self.dataset!r}, features={self.features!r}, seq_len={self.seq_len}, "
            f"label_len={self.label_len}, pred_len={self.pred_len}, split={self.split_spec.protocol!r})"
        )
