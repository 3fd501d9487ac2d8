"""Timestamps from strings: :func:`parse_timestamps` (numpy ``datetime64[s]``, no pandas).

Recognised without a format: ISO ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM`` and ``YYYY-MM-DD HH:MM:SS`` (a
``T`` separator works too) and the slash form of the LSTNet files, ``YYYY/M/D H:MM[:SS]``
(exchange_rate.csv). Anything else, day-first dates included (they are ambiguous), needs an explicit
``date_format`` in :func:`datetime.datetime.strptime` syntax. Time zones and sub-second parts are
rejected rather than converted or truncated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from longseq.apps.timeseries.data.errors import SeriesError, where

__all__ = ["parse_timestamps"]

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?")
_SLASH = re.compile(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_EXPECTED = "YYYY-MM-DD[ HH:MM[:SS]] or YYYY/M/D[ H:MM[:SS]]"


def _slash_to_iso(match: re.Match[str]) -> str:
    y, mo, d, h, mi, s = match.groups()
    return f"{y}-{int(mo):02d}-{int(d):02d}T{int(h or 0):02d}:{mi or '00'}:{s or '00'}"


def _to_numpy(strings: Sequence[str], source: str, lines: np.ndarray) -> np.ndarray:
    try:
        return np.array(strings, dtype="datetime64[s]")
    except ValueError:  # a well-formed but impossible date such as 2021-02-30: find it
        for i, text in enumerate(strings):
            try:
                np.datetime64(text, "s")
            except ValueError as exc:
                raise SeriesError(f"{where(source, i, int(lines[i]))}: invalid date {text!r} ({exc})") from exc
        raise


def _with_format(strings: Sequence[str], date_format: str, source: str, lines: np.ndarray) -> np.ndarray:
    out = np.empty(len(strings), dtype="datetime64[s]")
    for i, text in enumerate(strings):
        try:
            stamp = datetime.strptime(text, date_format)
        except ValueError as exc:
            raise SeriesError(
                f"{where(source, i, int(lines[i]))}: timestamp {text!r} does not match date_format {date_format!r}"
            ) from exc
        if stamp.tzinfo is not None or stamp.microsecond:
            what = "a time zone" if stamp.tzinfo is not None else "a sub-second part"
            raise SeriesError(
                f"{where(source, i, int(lines[i]))}: timestamp {text!r} has {what}; "
                "expected naive timestamps with whole seconds"
            )
        out[i] = np.datetime64(stamp, "s")
    return out


def parse_timestamps(
    strings: Sequence[str], *, date_format: str | None = None, source: str = "<series>", lines: np.ndarray | None = None
) -> np.ndarray:
    """Parse ``strings`` into a ``datetime64[s]`` array of the same length.

    Args:
        strings: one timestamp string per row (surrounding spaces are ignored).
        date_format: a :func:`~datetime.datetime.strptime` format; None recognises the ISO and slash forms.
        source: file name for messages.
        lines: file line of each row, for messages.

    Raises:
        SeriesError: a missing or unparseable timestamp, naming its row, line and value.
    """
    lines = np.arange(2, len(strings) + 2) if lines is None else lines
    strings = [text.strip() for text in strings]
    for i, text in enumerate(strings):
        if not text:
            raise SeriesError(f"{where(source, i, int(lines[i]))}: missing timestamp; every row needs one")
    if date_format is not None:
        return _with_format(strings, date_format, source, lines)
    if all(map(_ISO.fullmatch, strings)):
        return _to_numpy(strings, source, lines)
    iso = []
    for i, text in enumerate(strings):
        match = _SLASH.fullmatch(text)
        if match is None:
            raise SeriesError(
                f"{where(source, i, int(lines[i]))}: cannot parse timestamp {text!r}; expected {_EXPECTED}, "
                "or pass date_format (strptime syntax, e.g. '%d.%m.%Y %H:%M')"
            )
        iso.append(_slash_to_iso(match))
    return _to_numpy(iso, source, lines)
