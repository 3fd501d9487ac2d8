"""The shared forecasting benchmarks (``longseq data list``) and :func:`load_series`.

=================  ===============================  ======  ==========  ==========  ========================
name               file (under the data root)       rows    step        split       note
=================  ===============================  ======  ==========  ==========  ========================
``etth1``          timeseries/ETTh1.csv             17420   1 hour      ett_hour    rows >= 14400 unused
``ettm1``          timeseries/ETTm1.csv             69680   15 minutes  ett_minute  rows >= 57600 unused
``exchange_rate``  timeseries/exchange_rate.csv     7588    1 day       custom      dates as YYYY/M/D H:MM
``weather``        timeseries/weather.csv.gz        52696   10 minutes  custom      1 duplicate row, 1 gap
=================  ===============================  ======  ==========  ==========  ========================

The files are read as they are, as the reference code reads them. ``weather.csv.gz`` (the Autoformer
file) repeats the row of 2020-05-12 06:00:00 (data rows 19043 and 19044, identical) and lacks the nine
rows between 2020-05-29 09:30 and 11:10 (before data row 21514); these two known irregularities are
accepted for this file only, recorded in ``SeriesTable.irregularities``, and any other irregularity is
an error (the file would not be the registered one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from longseq.apps.timeseries.data.errors import SeriesError
from longseq.apps.timeseries.data.fill import FillPolicy
from longseq.apps.timeseries.data.table import SeriesTable, read_series_csv
from longseq.core.data import require

__all__ = ["BENCHMARKS", "Benchmark", "benchmark_spec", "load_benchmark", "load_series", "reject_csv_options"]


@dataclass(frozen=True)
class Benchmark:
    """A registered forecasting dataset and how the reference protocol uses it.

    Attributes:
        name: registry name (``longseq.core.data``).
        path: file relative to the data root.
        split: protocol of :func:`~longseq.apps.timeseries.data.splits.protocol_borders`.
        rows: number of data rows (header excluded).
        freq: frequency alias of the step.
        target: the conventional target column.
        irregularities: ``(kind, row)`` of the accepted duplicates and gaps of the file.
    """

    name: str
    path: str
    split: str
    rows: int
    freq: str
    target: str = "OT"
    irregularities: tuple[tuple[str, int], ...] = ()


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("etth1", "timeseries/ETTh1.csv", "ett_hour", 17420, "h"),
        Benchmark("ettm1", "timeseries/ETTm1.csv", "ett_minute", 69680, "15min"),
        Benchmark("exchange_rate", "timeseries/exchange_rate.csv", "custom", 7588, "d"),
        Benchmark(
            "weather",
            "timeseries/weather.csv.gz",
            "custom",
            52696,
            "10min",
            "OT",
            (("duplicate", 19044), ("gap", 21514)),
        ),
    )
}
_ALIASES = {"exchange": "exchange_rate"}


def benchmark_spec(name: str) -> Benchmark | None:
    """The :class:`Benchmark` called ``name`` (any case; ``exchange`` for ``exchange_rate``), or None."""
    key = name.strip().lower()
    return BENCHMARKS.get(_ALIASES.get(key, key))


def load_benchmark(name: str, root: str | Path | None = None, *, target: str | None = None) -> SeriesTable:
    """Load a registered benchmark from the data root (checked with :func:`longseq.core.data.require`).

    Args:
        name: ``etth1``, ``ettm1``, ``exchange_rate`` or ``weather`` (any case).
        root: data root; default ``$LONGSEQ_DATA``, then ``~/.cache/longseq``.
        target: target column; default the benchmark's (``OT``).

    Raises:
        SeriesError: unknown name, or the file's rows or irregularities differ from the registered file.
        longseq.core.data.DataError: the file is missing or has the wrong size (the message names the fix).
    """
    spec = benchmark_spec(name)
    if spec is None:
        raise SeriesError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)} or a CSV path")
    path = require(spec.name, root) / spec.path
    table = read_series_csv(path, target=target or spec.target, allow_irregular=True, allow_duplicates=True)
    table = replace(table, source=spec.name)
    found = tuple((item.kind, item.row) for item in table.irregularities)
    if len(table) != spec.rows or found != spec.irregularities or table.freq != spec.freq:
        raise SeriesError(
            f"{path}: {len(table)} rows, step {table.freq}, irregularities {found}; the registered "
            f"{spec.name} has {spec.rows} rows, step {spec.freq}, irregularities {spec.irregularities}"
        )
    return table


_CSV_DEFAULTS = {
    "date_column": "date",
    "columns": None,
    "date_format": None,
    "fill": "error",
    "allow_irregular": False,
    "allow_duplicates": False,
}


def reject_csv_options(name: str, options: dict[str, Any]) -> None:
    """Raise :class:`SeriesError` if any CSV option differs from its default for the benchmark ``name``.

    The benchmarks are read exactly as the reference reads them, so these options would be silently ignored.
    """
    given = [key for key, value in options.items() if value != _CSV_DEFAULTS.get(key, value)]
    if given:
        raise SeriesError(f"{', '.join(given)} apply to CSV files, not to the registered benchmark {name!r}")


def load_series(
    source: str | Path,
    root: str | Path | None = None,
    *,
    target: str = "OT",
    date_column: str = "date",
    columns: list[str] | None = None,
    date_format: str | None = None,
    fill: FillPolicy = "error",
    allow_irregular: bool = False,
    allow_duplicates: bool = False,
) -> SeriesTable:
    """Load a registered benchmark by name, or a user's CSV by path.

    A ``source`` that names a benchmark (:data:`BENCHMARKS`) is read from the data ``root`` and the
    CSV options other than ``target`` do not apply (passing them is an error); anything else is a path
    read by :func:`~longseq.apps.timeseries.data.table.read_series_csv` with those options.
    """
    options = {
        "date_column": date_column,
        "columns": columns,
        "date_format": date_format,
        "fill": fill,
        "allow_irregular": allow_irregular,
        "allow_duplicates": allow_duplicates,
    }
    if isinstance(source, str) and benchmark_spec(source) is not None:
        reject_csv_options(source, options)
        return load_benchmark(source, root, target=target)
    return read_series_csv(source, target=target, **options)
