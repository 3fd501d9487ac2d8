"""Timestamp order and spacing: :func:`check_timestamps` returns the inferred step or raises.

Checked in this order, each failure naming the row, its file line and the timestamps involved:

1. order: every timestamp is >= the one above it (a step backwards is always an error);
2. duplicates: a timestamp equal to the one above it (error unless ``allow_duplicates=True``);
3. spacing: the step is the most common gap between rows (or a whole number of calendar months for
   monthly, quarterly and yearly data, whose gaps vary in days); any other gap is an error unless
   ``allow_irregular=True``.

Accepted duplicates and gaps are kept as rows are (nothing is dropped or inserted) and returned as
:class:`Irregularity` records, so the caller can store and report them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from longseq.apps.timeseries.data.errors import SeriesError, where

__all__ = ["Irregularity", "Spacing", "check_timestamps", "describe_seconds", "show"]

_UNITS = (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
_ALIASES = {"week": "w", "day": "d", "hour": "h", "minute": "min", "second": "s"}


def describe_seconds(seconds: int) -> str:
    """``6000`` -> ``"100 minutes"``, ``3600`` -> ``"1 hour"``: the largest unit that divides exactly."""
    for name, size in _UNITS:
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {name}{'s' if count != 1 else ''}"
    raise AssertionError("unreachable: every integer is a whole number of seconds")


def show(stamp: np.datetime64) -> str:
    """``2020-05-12 06:00:00``: a timestamp as the CSV files write it."""
    return str(np.datetime_as_string(stamp, unit="s")).replace("T", " ")


def _alias(count: int, unit: str) -> str:
    return unit if count == 1 else f"{count}{unit}"


@dataclass(frozen=True)
class Irregularity:
    """A row accepted despite breaking the regular step.

    Attributes:
        kind: ``"duplicate"`` (same timestamp as the row above) or ``"gap"`` (a gap other than the step).
        row: the data row (0-based) of the later timestamp.
        previous: the timestamp on ``row - 1``.
        current: the timestamp on ``row``.
    """

    kind: Literal["duplicate", "gap"]
    row: int
    previous: np.datetime64
    current: np.datetime64

    def __str__(self) -> str:
        if self.kind == "duplicate":
            return f"row {self.row}: duplicated timestamp {show(self.current)}"
        gap = int((self.current - self.previous).astype("timedelta64[s]").astype(np.int64))
        return f"row {self.row}: gap of {describe_seconds(gap)} from {show(self.previous)} to {show(self.current)}"


@dataclass(frozen=True)
class Spacing:
    """The step of a series.

    Attributes:
        freq: frequency alias of the step for time features (``"h"``, ``"15min"``, ``"d"``, ``"m"``, ...).
        step_seconds: the step in seconds for fixed steps, else None.
        step_months: the step in calendar months for monthly/quarterly/yearly data, else None.
        irregularities: accepted duplicates and gaps, in row order.
    """

    freq: str
    step_seconds: int | None
    step_months: int | None
    irregularities: tuple[Irregularity, ...] = ()

    def describe(self) -> str:
        """The step in words: ``"10 minutes"``, ``"1 month"``."""
        if self.step_months is not None:
            return f"{self.step_months} month{'s' if self.step_months != 1 else ''}"
        return describe_seconds(int(self.step_seconds or 0))


def _month_gaps(ts: np.ndarray) -> np.ndarray | None:
    """Gaps in calendar months when every timestamp is on the same day of the month (or always the month
    end) at the same time of day, else None."""
    months = ts.astype("datetime64[M]")
    next_start = (months + 1).astype(ts.dtype)
    offset = ts - months.astype(ts.dtype)
    if np.all(offset == offset[0]) or np.all(next_start - ts == next_start[0] - ts[0]):
        return np.diff(months.astype(np.int64))
    return None


def _fixed_alias(seconds: int) -> str:
    for name, size in _UNITS:
        if seconds % size == 0:
            return _alias(seconds // size, _ALIASES[name])
    raise AssertionError("unreachable")


def _month_alias(months: int) -> str:
    if months % 12 == 0:
        return _alias(months // 12, "y")
    if months % 3 == 0:
        return _alias(months // 3, "q")
    return _alias(months, "m")


def check_timestamps(
    ts: np.ndarray,
    *,
    source: str = "<series>",
    lines: np.ndarray | None = None,
    allow_duplicates: bool = False,
    allow_irregular: bool = False,
) -> Spacing:
    """Check order, duplicates and spacing of ``ts`` (``datetime64[s]``, (T,)) and infer the step.

    Raises:
        SeriesError: fewer than two rows, a step backwards, a duplicate (unless allowed) or an irregular
            gap (unless allowed), naming the row, the file line and both timestamps.
    """
    if len(ts) < 2:
        raise SeriesError(f"{source}: {len(ts)} row(s); a series needs at least 2 to have a step")

    def at(row: int) -> str:
        return where(source, row, None if lines is None else int(lines[row]))

    gaps = np.diff(ts).astype("timedelta64[s]").astype(np.int64)  # (T-1,) seconds
    back = np.flatnonzero(gaps < 0)
    if len(back):
        row = int(back[0]) + 1
        raise SeriesError(
            f"{at(row)}: timestamp {show(ts[row])} is earlier than {show(ts[row - 1])} on the row above; timestamps must "
            "increase (sort the file by time)"
        )
    dups = np.flatnonzero(gaps == 0)
    if len(dups) and not allow_duplicates:
        row = int(dups[0]) + 1
        raise SeriesError(
            f"{at(row)}: duplicated timestamp {show(ts[row])} (also on row {row - 1}); {len(dups)} duplicate(s) in all; "
            "each timestamp must appear once (remove them, or pass allow_duplicates=True to keep every row)"
        )
    positive = gaps[gaps > 0]
    if not len(positive):
        raise SeriesError(f"{source}: every timestamp equals {show(ts[0])}; a series needs distinct timestamps")
    month_gaps = _month_gaps(ts) if positive.min() >= 28 * 86400 else None
    steps = gaps if month_gaps is None else month_gaps  # seconds, or calendar months
    values, counts = np.unique(steps[steps > 0], return_counts=True)
    step = int(values[np.argmax(counts)])  # the most common gap; ties go to the smallest
    spacing = Spacing(_fixed_alias(step), step, None) if month_gaps is None else Spacing(_month_alias(step), None, step)
    irregular = np.flatnonzero((steps != step) & (gaps != 0))
    if len(irregular) and not allow_irregular:
        row = int(irregular[0]) + 1
        found_gap = describe_seconds(int(gaps[row - 1])) if month_gaps is None else f"{int(steps[row - 1])} month(s)"
        raise SeriesError(
            f"{at(row)}: irregular spacing: {show(ts[row])} follows {show(ts[row - 1])} after {found_gap}, but the inferred "
            f"step is {spacing.describe()} ({int(counts.max())} of {len(gaps)} gaps); {len(irregular)} irregular "
            "gap(s) in all; insert the missing rows, or pass allow_irregular=True to keep the rows as they are "
            "(windows then span unequal times)"
        )
    found = [Irregularity("duplicate", int(i) + 1, ts[i], ts[i + 1]) for i in dups]
    found += [Irregularity("gap", int(i) + 1, ts[i], ts[i + 1]) for i in irregular]
    return replace(spacing, irregularities=tuple(sorted(found, key=lambda item: item.row)))
