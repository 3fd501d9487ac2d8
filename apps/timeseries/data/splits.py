"""Chronological train/val/test splits of the reference protocol: :func:`protocol_borders`.

The borders are those of Time-Series-Library's loaders (``Dataset_ETT_hour``, ``Dataset_ETT_minute``,
``Dataset_Custom``), with ``L = seq_len``:

* ``"ett_hour"``: 12/4/4 months of 30 days of hours: train rows ``[0, 8640)``, val
  ``[8640 - L, 11520)``, test ``[11520 - L, 14400)``. Rows from 14400 on are not used (ETTh1 has
  17420): that is the protocol, kept as published.
* ``"ett_minute"``: the same months in 15-minute steps (x4): ``[0, 34560)``, ``[34560 - L, 46080)``,
  ``[46080 - L, 57600)``.
* ``"custom"``: ``n_train = int(n * train_ratio)``, ``n_test = int(n * test_ratio)``,
  ``n_val = n - n_train - n_test`` (70/10/20 by default, computed with the same float arithmetic);
  train ``[0, n_train)``, val ``[n_train - L, n_train + n_val)``, test ``[n - n_test - L, n)``.

Val and test start ``L`` rows early so that their first window's input is the history just before
the split; their *targets* never overlap the previous split. The scaler is fitted on the train rows
only. A split has ``end - start - L - H + 1`` windows (H = ``pred_len``); a split too short for one
window is an error. That covers ``seq_len`` longer than the training split, where the reference code
would silently wrap the negative val start around to the end of the series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from longseq.apps.timeseries.data.errors import SeriesError

__all__ = ["ETT_HOUR_BORDERS", "SPLITS", "SplitBorders", "SplitName", "SplitProtocol", "SplitSpec", "protocol_borders"]

SplitProtocol = Literal["ett_hour", "ett_minute", "custom"]
SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")

ETT_HOUR_BORDERS = (12 * 30 * 24, (12 + 4) * 30 * 24, (12 + 8) * 30 * 24)
"""End rows of train, val and test in the ``ett_hour`` protocol: 8640, 11520, 14400."""
_ETT_SCALE = {"ett_hour": 1, "ett_minute": 4}


@dataclass(frozen=True)
class SplitBorders:
    """Row ranges ``[start, end)`` of the three splits (val/test include their ``seq_len`` history).

    Attributes:
        train, val, test: ``(start, end)`` rows of each split.
        n_rows: rows of the series.
        seq_len: the look-back the val/test starts were moved back by.
    """

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]
    n_rows: int
    seq_len: int

    def __getitem__(self, split: str) -> tuple[int, int]:
        if split not in SPLITS:
            raise KeyError(f"split must be one of {SPLITS}, got {split!r}")
        return getattr(self, split)

    @property
    def fit_rows(self) -> tuple[int, int]:
        """Rows the scaler is fitted on: the training split."""
        return self.train

    @property
    def unused_rows(self) -> tuple[int, int]:
        """Rows after the test split that the protocol leaves out (empty for ``custom``)."""
        return self.test[1], self.n_rows

    def n_windows(self, split: str, pred_len: int) -> int:
        """Windows of ``split``: ``end - start - seq_len - pred_len + 1`` (may be <= 0; see :meth:`check`)."""
        start, end = self[split]
        return end - start - self.seq_len - pred_len + 1

    def check(self, pred_len: int) -> None:
        """Raise :class:`SeriesError` unless every split holds at least one window of ``seq_len + pred_len``."""
        need = self.seq_len + pred_len
        for split in SPLITS:  # train first: when seq_len > n_train (val would start before row 0) train fails
            start, end = self[split]
            if end - start < need:
                raise SeriesError(
                    f"the {split} split (rows [{start}, {end}) of {self.n_rows}) has {end - start} rows, but one window needs "
                    f"seq_len + pred_len = {self.seq_len} + {pred_len} = {need} rows; use a shorter seq_len or "
                    "pred_len, or a longer series"
                )


@dataclass(frozen=True)
class SplitSpec:
    """Which protocol and ratios; :meth:`borders` applies it to a series length.

    Attributes:
        protocol: ``"ett_hour"``, ``"ett_minute"`` or ``"custom"``.
        train_ratio: training share for ``custom``.
        test_ratio: test share for ``custom``; validation gets the rest.
    """

    protocol: SplitProtocol = "custom"
    train_ratio: float = 0.7
    test_ratio: float = 0.2

    def __post_init__(self) -> None:
        if self.protocol not in ("ett_hour", "ett_minute", "custom"):
            raise ValueError(f"protocol must be 'ett_hour', 'ett_minute' or 'custom', got {self.protocol!r}")
        if not (0 < self.train_ratio < 1 and 0 < self.test_ratio < 1 and self.train_ratio + self.test_ratio < 1):
            raise ValueError(
                "train_ratio and test_ratio must be in (0, 1) with a sum below 1 (validation gets the rest), "
                f"got {self.train_ratio} and {self.test_ratio}"
            )

    def borders(self, n_rows: int, seq_len: int) -> SplitBorders:
        """The three ``(start, end)`` ranges for a series of ``n_rows`` rows and look-back ``seq_len``."""
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if self.protocol == "custom":
            n_train = int(n_rows * self.train_ratio)
            n_test = int(n_rows * self.test_ratio)
            n_val = n_rows - n_train - n_test
            ends = (n_train, n_train + n_val, n_rows)
        else:
            ends = tuple(end * _ETT_SCALE[self.protocol] for end in ETT_HOUR_BORDERS)
            if n_rows < ends[2]:
                raise SeriesError(
                    f"the {self.protocol} protocol needs at least {ends[2]} rows (20 months of 30 days), got {n_rows}"
                )
        return SplitBorders(
            train=(0, ends[0]),
            val=(ends[0] - seq_len, ends[1]),
            test=(ends[1] - seq_len, ends[2]),
            n_rows=n_rows,
            seq_len=seq_len,
        )


def protocol_borders(
    protocol: SplitProtocol, n_rows: int, seq_len: int, *, train_ratio: float = 0.7, test_ratio: float = 0.2
) -> SplitBorders:
    """Shorthand for ``SplitSpec(protocol, train_ratio, test_ratio).borders(n_rows, seq_len)``."""
    return SplitSpec(protocol, train_ratio, test_ratio).borders(n_rows, seq_len)
