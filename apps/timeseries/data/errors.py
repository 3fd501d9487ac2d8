"""The error of the time-series data layer: :class:`SeriesError`."""

from __future__ import annotations

__all__ = ["SeriesError", "where"]


class SeriesError(ValueError):
    """Bad input: the message names the file, the row (and file line), the column and the value, and
    says what was expected and, where there is one, the option that accepts the input explicitly."""


def where(source: str, row: int, line: int | None = None) -> str:
    """``"data.csv, row 5 (line 7)"``: data rows count from 0 after the header, file lines from 1."""
    at = f"{source}, row {row}"
    return f"{at} (line {line})" if line is not None else at
