"""Missing values: an error by default, or filled by a policy the user names (:func:`fill_missing`).

Policies (``fill=``):

* ``"error"`` (default): the first missing cell is an error naming its column, row and line.
* ``"ffill"``: a missing cell takes the last value above it in its column; a column that *starts*
  with missing cells is an error (there is nothing to carry forward).
* ``"interpolate"``: linear interpolation by row position between the nearest values above and
  below (the same as time interpolation on a regular series); missing cells at the start or the end
  of a column are an error (that would be extrapolation).
* ``"zero"``: missing cells become 0.0.

Missing cells are empty ones and the tokens of :data:`MISSING_TOKENS` (any case). Every filled cell
is counted per column in ``SeriesTable.filled`` and logged, so a fill is never silent.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from longseq.apps.timeseries.data.errors import SeriesError, where

__all__ = ["FILL_POLICIES", "MISSING_TOKENS", "FillPolicy", "check_fill_policy", "fill_missing"]

FillPolicy = Literal["error", "ffill", "interpolate", "zero"]
FILL_POLICIES: tuple[str, ...] = ("error", "ffill", "interpolate", "zero")
MISSING_TOKENS = frozenset({"", "nan", "-nan", "na", "n/a", "#n/a", "null", "none"})
"""Cell texts (lower-cased, stripped) read as missing values."""


def check_fill_policy(fill: str) -> None:
    """Raise ValueError unless ``fill`` is one of :data:`FILL_POLICIES`."""
    if fill not in FILL_POLICIES:
        raise ValueError(f"fill must be one of {', '.join(map(repr, FILL_POLICIES))}, got {fill!r}")


def fill_missing(
    values: np.ndarray, fill: FillPolicy, *, column: str, source: str = "<series>", lines: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Apply ``fill`` to the NaN cells of one column.

    Args:
        values: float64 (T,) with NaN for missing cells.
        fill: the policy (see the module docstring).
        column: column name, for messages.
        source: file name, for messages.
        lines: file line of each row, for messages.

    Returns:
        ``(filled values, number of cells filled)``; ``values`` itself when nothing is missing.

    Raises:
        SeriesError: a missing cell under ``"error"``, or one the policy cannot fill.
    """
    check_fill_policy(fill)
    missing = np.isnan(values)
    n_missing = int(missing.sum())
    if not n_missing:
        return values, 0
    rows = np.flatnonzero(missing)

    def at(row: int) -> str:
        return where(source, row, None if lines is None else int(lines[row]))

    if fill == "error":
        raise SeriesError(
            f"{at(int(rows[0]))}: missing value in column {column!r} ({n_missing} missing in this column); "
            "pass fill='ffill', 'interpolate' or 'zero' to fill them explicitly, or repair the file"
        )
    valid = np.flatnonzero(~missing)
    if not len(valid):
        raise SeriesError(f"{source}: column {column!r} has no values at all ({n_missing} missing cells)")
    out = values.copy()
    if fill == "zero":
        out[missing] = 0.0
        return out, n_missing
    if rows[0] < valid[0]:
        raise SeriesError(
            f"{at(int(rows[0]))}: column {column!r} starts with {int(valid[0])} missing value(s), which "
            f"fill={fill!r} cannot fill; trim those rows or use fill='zero'"
        )
    if fill == "ffill":
        last = np.maximum.accumulate(np.where(missing, 0, np.arange(len(values))))
        return values[last], n_missing
    if rows[-1] > valid[-1]:
        raise SeriesError(
            f"{at(int(valid[-1]) + 1)}: column {column!r} ends with {len(values) - 1 - int(valid[-1])} missing "
            "value(s), which fill='interpolate' cannot fill without extrapolating; trim them or use fill='ffill'"
        )
    out[missing] = np.interp(rows, valid, values[valid])
    return out, n_missing
