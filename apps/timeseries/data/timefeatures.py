"""Calendar features of timestamps (``x_mark``/``y_mark``), as in the Informer/Autoformer/TSLib code.

``timeenc=1`` (TSLib's ``embed='timeF'``, its default) gives the GluonTS-style features chosen by the
base unit of ``freq``, each scaled to [-0.5, 0.5]:

=========  ====================================================================================
unit       features (in this order)
=========  ====================================================================================
``s``      SecondOfMinute, MinuteOfHour, HourOfDay, DayOfWeek, DayOfMonth, DayOfYear
``t``      MinuteOfHour, HourOfDay, DayOfWeek, DayOfMonth, DayOfYear
``h``      HourOfDay, DayOfWeek, DayOfMonth, DayOfYear
``d``/``b`` DayOfWeek, DayOfMonth, DayOfYear
``w``      DayOfMonth, WeekOfYear
``m``/``q`` MonthOfYear
``y``      (none)
=========  ====================================================================================

with ``x / 59 - 0.5`` for seconds and minutes, ``hour / 23``, ``weekday / 6`` (Monday = 0),
``(day - 1) / 30``, ``(dayofyear - 1) / 365``, ``(month - 1) / 11``, ``(isoweek - 1) / 52``.

``timeenc=0`` (``embed='fixed'``/``'learned'``) gives integer fields for embedding tables:
month (1-12), day (1-31), weekday (0-6), hour (0-23), plus ``minute // 15`` (0-3) when the unit is
minutes or seconds (the reference adds it only in its ETT-minute loader, whose embedding reads it only
for ``freq='t'``).

``freq`` is a pandas-style alias with an optional multiple: ``"h"``, ``"15min"``, ``"10t"``, ``"d"``,
``"b"``, ``"w"``, ``"m"``, ``"q"``, ``"y"``. Note that TSLib's ``run.py`` passes ``--freq h`` for every
dataset unless a script overrides it (its ETTm1 and weather scripts do not), so its marks for ETTm1 are
the four hourly features; pass ``freq="h"`` to reproduce that exactly.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["base_unit", "calendar_fields", "n_time_features", "time_features"]

_UNITS = {
    "s": ("s", "sec", "secs", "second", "seconds"),
    "t": ("t", "min", "mins", "minute", "minutes"),
    "h": ("h", "hr", "hour", "hours"),
    "d": ("d", "day", "days"),
    "b": ("b", "bday", "bdays"),
    "w": ("w", "week", "weeks"),
    "m": ("m", "me", "month", "months"),
    "q": ("q", "qe", "quarter", "quarters"),
    "y": ("y", "a", "ye", "year", "years"),
}
_ALIAS = {alias: unit for unit, aliases in _UNITS.items() for alias in aliases}
_FREQ = re.compile(r"\s*(\d*)\s*([A-Za-z]+)(?:-[A-Za-z]+)?\s*")


def base_unit(freq: str) -> str:
    """The base unit (``s t h d b w m q y``) of a frequency alias such as ``"15min"`` or ``"H"``.

    Raises:
        ValueError: an unknown alias (``"ms"`` is refused: pandas reads it as milliseconds).
    """
    match = _FREQ.fullmatch(freq)
    unit = _ALIAS.get(match.group(2).lower()) if match else None
    if unit is None or (match and match.group(1) and int(match.group(1)) == 0):
        known = ", ".join(a for aliases in _UNITS.values() for a in aliases)
        raise ValueError(f"unknown frequency {freq!r}; expected [multiple]unit with unit one of: {known}")
    return unit


def calendar_fields(timestamps: np.ndarray) -> dict[str, np.ndarray]:
    """Integer calendar fields of ``datetime64`` timestamps, vectorised (no Python loop).

    Returns:
        ``month`` 1-12, ``day`` 1-31, ``weekday`` 0-6 (Monday = 0), ``dayofyear`` 1-366, ``hour``,
        ``minute``, ``second``, ``isoweek`` 1-53, each an int64 array like ``timestamps``.
    """
    ts = np.asarray(timestamps).astype("datetime64[s]")
    days = ts.astype("datetime64[D]")
    months = ts.astype("datetime64[M]")
    years = ts.astype("datetime64[Y]")
    seconds = (ts - days).astype(np.int64)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    dayofyear = (days - years.astype("datetime64[D]")).astype(np.int64) + 1
    return {
        "month": months.astype(np.int64) % 12 + 1,
        "day": (days - months.astype("datetime64[D]")).astype(np.int64) + 1,
        "weekday": weekday,
        "dayofyear": dayofyear,
        "hour": seconds // 3600,
        "minute": seconds // 60 % 60,
        "second": seconds % 60,
        "isoweek": _iso_week(years.astype(np.int64) + 1970, dayofyear, weekday),
    }


def _weeks_in_year(year: np.ndarray) -> np.ndarray:
    """52 or 53: a year has 53 ISO weeks when it starts on a Thursday, or on a Wednesday in a leap year."""
    jan1 = ((year - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64) + 3) % 7
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return np.where((jan1 == 3) | (leap & (jan1 == 2)), 53, 52)


def _iso_week(year: np.ndarray, dayofyear: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    week = (dayofyear - (weekday + 1) + 10) // 7  # may be 0 (last week of the year before) or 53 (week 1 next)
    last_year = np.where(week < 1, _weeks_in_year(year - 1), week)
    return np.where(week > _weeks_in_year(year), 1, last_year)


# field -> (first value, divisor): the feature is (field - first) / divisor - 0.5, in [-0.5, 0.5]
_SCALE = {
    "second": (0, 59.0),
    "minute": (0, 59.0),
    "hour": (0, 23.0),
    "weekday": (0, 6.0),
    "day": (1, 30.0),
    "dayofyear": (1, 365.0),
    "month": (1, 11.0),
    "isoweek": (1, 52.0),
}
_DAILY = ("weekday", "day", "dayofyear")
_TIMEF: dict[str, tuple[str, ...]] = {
    "s": ("second", "minute", "hour", *_DAILY),
    "t": ("minute", "hour", *_DAILY),
    "h": ("hour", *_DAILY),
    "d": _DAILY,
    "b": _DAILY,
    "w": ("day", "isoweek"),
    "m": ("month",),
    "q": ("month",),
    "y": (),
}


def _check_timeenc(timeenc: int) -> None:
    if timeenc not in (0, 1):
        raise ValueError(f"timeenc must be 0 (integer fields) or 1 (scaled features), got {timeenc!r}")


def n_time_features(freq: str, timeenc: int = 1) -> int:
    """Number of columns :func:`time_features` returns for ``freq`` and ``timeenc``."""
    _check_timeenc(timeenc)
    unit = base_unit(freq)
    if timeenc == 0:
        return 5 if unit in ("s", "t") else 4
    return len(_TIMEF[unit])


def time_features(timestamps: np.ndarray, freq: str, timeenc: int = 1) -> np.ndarray:
    """Calendar features of ``timestamps`` (T,): float32 (T, F) with F = :func:`n_time_features`.

    See the module docstring for the features of each ``freq`` and ``timeenc``.
    """
    _check_timeenc(timeenc)
    unit = base_unit(freq)
    fields = calendar_fields(timestamps)
    if timeenc == 0:
        names = ["month", "day", "weekday", "hour"]
        columns = [fields[name] for name in names]
        if unit in ("s", "t"):
            columns.append(fields["minute"] // 15)
    else:
        columns = [(fields[name] - _SCALE[name][0]) / _SCALE[name][1] - 0.5 for name in _TIMEF[unit]]
    if not columns:
        return np.zeros((len(fields["month"]), 0), dtype=np.float32)
    return np.stack(columns, axis=1).astype(np.float32)  # (T, F)
