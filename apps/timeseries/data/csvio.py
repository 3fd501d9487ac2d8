"""Reading delimited text into raw string columns: :func:`read_columns`.

No pandas: the :mod:`csv` module reads the rows, gzip is recognised by its magic bytes (so
``weather.csv.gz`` and a gzip file without the suffix both work), blank lines are skipped (they hold
no cells) and every other row must have as many cells as the header. Each data row keeps its file
line number for error messages.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from longseq.apps.timeseries.data.errors import SeriesError

__all__ = ["RawColumns", "open_text", "read_columns"]

_GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: str | Path, encoding: str = "utf-8-sig") -> TextIO:
    """Read ``path`` into memory as text for :mod:`csv`, decompressing gzip transparently (detected by content).

    Reading the whole file at once is several times faster than streaming through :mod:`gzip`.

    Raises:
        SeriesError: the path is missing or not a file.
        UnicodeDecodeError: the bytes are not valid ``encoding`` text.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise SeriesError(f"{path} {state}; expected a CSV file (optionally gzip-compressed)")
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    return io.StringIO(data.decode(encoding), newline="")


@dataclass(frozen=True)
class RawColumns:
    """The cells of a CSV file as strings, column by column, in file order.

    Attributes:
        source: the file, for messages.
        header: every column name of the header row, stripped of surrounding spaces.
        cells: column name -> its cells, one per data row.
        lines: file line number (1-based, header = line 1 when it is the first line) of each data row.
    """

    source: str
    header: tuple[str, ...]
    cells: dict[str, tuple[str, ...]]
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.lines)


def _check_header(source: str, header: list[str]) -> None:
    if not header or all(not name for name in header):
        raise SeriesError(f"{source}: empty header; expected a first row naming the columns, e.g. date,x1,x2,OT")
    empty = [i for i, name in enumerate(header) if not name]
    if empty:
        raise SeriesError(f"{source}: header column {empty[0]} has no name; header is {header}")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise SeriesError(f"{source}: column name {name!r} appears twice in the header {header}")
        seen.add(name)


def read_columns(
    path: str | Path, required: Sequence[str] = (), *, delimiter: str = ",", encoding: str = "utf-8-sig"
) -> RawColumns:
    """Read ``path`` and return the cells of every column.

    Args:
        path: the file (gzip is recognised by content).
        required: column names that must be in the header.
        delimiter: cell separator.
        encoding: text encoding; the default skips a UTF-8 byte-order mark.

    Raises:
        SeriesError: missing file, undecodable bytes, empty or duplicated header names, a required column
            absent from the header, a row whose cell count differs from the header's, no data rows.
    """
    source = str(path)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open_text(path, encoding) as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = [name.strip() for name in next(reader, [])]
            _check_header(source, header)
            for cells in reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # a blank line holds no cells
                if len(cells) != len(header):
                    raise SeriesError(
                        f"{source}, line {reader.line_num}: {len(cells)} cells, expected {len(header)} as in the "
                        f"header {header} (delimiter {delimiter!r})"
                    )
                rows.append(cells)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise SeriesError(
            f"{source}: not valid {encoding} text ({exc}); pass encoding='latin-1' or re-save it"
        ) from exc
    except csv.Error as exc:
        raise SeriesError(f"{source}: malformed CSV ({exc})") from exc
    absent = [name for name in required if name not in header]
    if absent:
        raise SeriesError(f"{source}: no column(s) {', '.join(map(repr, absent))} in the header {header}")
    if not rows:
        raise SeriesError(f"{source}: header but no data rows")
    cells = dict(zip(header, zip(*rows)))
    return RawColumns(source, tuple(header), cells, np.asarray(lines, dtype=np.int64))
