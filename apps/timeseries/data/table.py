"""A loaded series: :class:`SeriesTable`, and the generic CSV loader :func:`read_series_csv`.

The CSV layout is the one of the Informer/Autoformer datasets and of TSLib's ``--data custom``: a header
row, a date column (``date`` by default), numeric value columns, one of which is the target. Columns
are stored in the reference's order, ``[other columns..., target]``, so the target is always the last
column (``features="MS"`` predicts it).

Bad input is an error naming the file, row, line, column and value: a missing file or column, a row
with the wrong number of cells, a missing or unparseable timestamp, a timestamp out of order, a
duplicated timestamp, an irregular gap, a non-numeric or infinite cell, a missing value. Duplicates,
gaps and missing values can be accepted explicitly (``allow_duplicates``, ``allow_irregular``, ``fill``);
what was accepted is recorded on the table (``irregularities``, ``filled``) and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from longseq.apps.timeseries.data.csvio import read_columns
from longseq.apps.timeseries.data.dates import parse_timestamps
from longseq.apps.timeseries.data.errors import SeriesError, where
from longseq.apps.timeseries.data.fill import MISSING_TOKENS, FillPolicy, check_fill_policy, fill_missing
from longseq.apps.timeseries.data.spacing import Irregularity, check_timestamps

__all__ = ["SeriesTable", "parse_numbers", "read_series_csv"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesTable:
    """A multivariate series with timestamps, target last.

    Attributes:
        timestamps: ``datetime64[s]`` (T,), non-decreasing.
        values: float64 (T, C); column ``C - 1`` is the target. Kept in float64 so that scaling is done
            in double precision, as the reference does, before the windows are cast to float32.
        columns: the C column names, target last.
        source: the file (or registered dataset name) it came from.
        freq: frequency alias of the inferred step (``"h"``, ``"15min"``, ``"d"``, ...), the default for
            time features.
        irregularities: duplicated timestamps and irregular gaps that were accepted.
        filled: column -> number of missing cells filled by the chosen policy (only columns with fills).
    """

    timestamps: np.ndarray
    values: np.ndarray
    columns: tuple[str, ...]
    source: str
    freq: str
    irregularities: tuple[Irregularity, ...] = ()
    filled: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, c = self.values.shape if self.values.ndim == 2 else (None, None)
        if t != len(self.timestamps) or c != len(self.columns):
            raise ValueError(
                f"values must be (T, C) = ({len(self.timestamps)}, {len(self.columns)}), got {self.values.shape}"
            )

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def target(self) -> str:
        """Name of the target column (the last one)."""
        return self.columns[-1]

    @property
    def target_index(self) -> int:
        """Index of the target column: always ``C - 1``."""
        return len(self.columns) - 1


def parse_numbers(cells: Sequence[str], *, column: str, source: str, lines: np.ndarray) -> np.ndarray:
    """Parse one column's cells into float64 (T,), NaN for missing cells (:data:`MISSING_TOKENS`).

    Raises:
        SeriesError: a non-numeric cell or an infinite value, naming the column, row, line and value.
    """
    try:
        values = np.array(cells, dtype=np.float64)  # fast path: every cell is a number (or nan)
    except ValueError:
        values = np.empty(len(cells), dtype=np.float64)
        for i, text in enumerate(cells):
            token = text.strip()
            if token.lower() in MISSING_TOKENS:
                values[i] = np.nan
                continue
            try:
                values[i] = float(token)
            except ValueError:
                raise SeriesError(
                    f"{where(source, i, int(lines[i]))}: non-numeric value {text!r} in column {column!r}; "
                    "value columns must hold numbers (leave such columns out with columns=[...])"
                ) from None
    infinite = np.flatnonzero(np.isinf(values))
    if len(infinite):
        i = int(infinite[0])
        raise SeriesError(
            f"{where(source, i, int(lines[i]))}: infinite value {cells[i]!r} in column {column!r}; "
            "values must be finite (fill policies apply only to missing cells)"
        )
    return values


def _value_columns(header: Sequence[str], date_column: str, target: str, columns: Sequence[str] | None) -> list[str]:
    """``[other columns..., target]``: the chosen columns (or all but the date) with the target moved last."""
    chosen = [name for name in header if name != date_column] if columns is None else list(columns)
    if date_column in chosen:
        raise SeriesError(f"columns must not include the date column {date_column!r}, got {list(chosen)}")
    if len(set(chosen)) != len(chosen):
        raise SeriesError(f"columns has duplicates: {list(chosen)}")
    return [name for name in chosen if name != target] + [target]


def read_series_csv(
    path: str | Path,
    *,
    target: str = "OT",
    date_column: str = "date",
    columns: Sequence[str] | None = None,
    date_format: str | None = None,
    fill: FillPolicy = "error",
    allow_irregular: bool = False,
    allow_duplicates: bool = False,
    delimiter: str = ",",
    encoding: str = "utf-8-sig",
) -> SeriesTable:
    """Read a user's CSV (optionally gzip) into a :class:`SeriesTable`.

    Args:
        path: the file.
        target: the column to forecast (``features="S"``/``"MS"``); stored last.
        date_column: the timestamp column.
        columns: value columns to use (the target is added if absent); None uses every column but the
            date. Columns not listed are not parsed, so they may hold text.
        date_format: :func:`~datetime.datetime.strptime` format of the timestamps; None recognises
            ``YYYY-MM-DD[ HH:MM[:SS]]`` and ``YYYY/M/D[ H:MM[:SS]]``.
        fill: missing-value policy: ``"error"`` (default), ``"ffill"``, ``"interpolate"`` or ``"zero"``
            (see :mod:`longseq.apps.timeseries.data.fill`).
        allow_irregular: keep rows whose gap differs from the inferred step instead of raising.
        allow_duplicates: keep rows whose timestamp repeats the one above instead of raising.
        delimiter: cell separator.
        encoding: text encoding (a UTF-8 byte-order mark is skipped by the default).

    Raises:
        SeriesError: bad input (see the module docstring); the message names row, line, column and value.
    """
    check_fill_policy(fill)
    source = str(path)
    raw = read_columns(path, [date_column, target, *(columns or ())], delimiter=delimiter, encoding=encoding)
    names = _value_columns(raw.header, date_column, target, columns)
    ts = parse_timestamps(raw.cells[date_column], date_format=date_format, source=source, lines=raw.lines)
    spacing = check_timestamps(
        ts, source=source, lines=raw.lines, allow_duplicates=allow_duplicates, allow_irregular=allow_irregular
    )
    values = np.empty((len(raw), len(names)), dtype=np.float64)  # (T, C)
    filled: dict[str, int] = {}
    for j, name in enumerate(names):
        column = parse_numbers(raw.cells[name], column=name, source=source, lines=raw.lines)
        values[:, j], count = fill_missing(column, fill, column=name, source=source, lines=raw.lines)
        if count:
            filled[name] = count
    if filled:
        log.info("%s: filled missing values with fill=%r: %s", source, fill, filled)
    if spacing.irregularities:
        log.info("%s: kept %d irregular row(s): %s", source, len(spacing.irregularities), spacing.irregularities[0])
    return SeriesTable(ts, values, tuple(names), source, spacing.freq, spacing.irregularities, filled)
