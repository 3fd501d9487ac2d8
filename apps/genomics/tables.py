"""Delimited tables of the app: ``seq,label`` CSV (the Genomic Benchmarks layout) and ``id,label``
label tables for a user's FASTA; label strings to class indices.

Tables are CSV or TSV (the delimiter is the tab when the header line has one, else the comma),
optionally gzip-compressed, with a header row naming the columns. Missing cells are errors naming
the file, line and column; nothing is skipped silently.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from longseq.apps.genomics.alphabet import IupacPolicy, SequenceError, SoftMaskPolicy, normalize_sequence
from longseq.apps.genomics.fasta import ReadReport, open_text

__all__ = ["LabelTable", "encode_labels", "read_label_table", "read_sequence_table"]

LabelTable = dict[str, str]
"""Record id -> label string, in file order."""


def _rows(path: Path, columns: Sequence[str]) -> list[tuple[int, list[str]]]:
    """``(line number, [cell per wanted column])`` for every non-blank data row of a CSV/TSV with a header."""
    with open_text(path) as handle:
        lines = handle.read().splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise SequenceError(f"{path}: empty file; expected a header row with columns {', '.join(columns)}")
    delimiter = "\t" if "\t" in numbered[0][1] else ","
    parsed = csv.reader([line for _, line in numbered], delimiter=delimiter)
    header = [cell.strip() for cell in next(parsed)]
    missing = [c for c in columns if c not in header]
    if missing:
        raise SequenceError(
            f"{path}: header has no column(s) {', '.join(map(repr, missing))}; found {header} "
            f"(expected a header row naming {', '.join(columns)}, comma- or tab-separated)"
        )
    where = [header.index(c) for c in columns]
    rows = []
    for (number, _), cells in zip(numbered[1:], parsed):
        values = [cells[i].strip() if i < len(cells) else "" for i in where]
        for column, value in zip(columns, values):
            if not value:
                raise SequenceError(f"{path}, line {number}: missing value in column {column!r}")
        rows.append((number, values))
    if not rows:
        raise SequenceError(f"{path}: has a header but no data rows")
    return rows


def read_sequence_table(
    path: str | Path,
    *,
    seq_col: str = "seq",
    label_col: str = "label",
    soft_mask: SoftMaskPolicy = "keep",
    iupac: IupacPolicy = "to_n",
) -> tuple[list[str], list[str], ReadReport]:
    """Read a table of sequences and labels (``seq,label`` by default).

    Sequences get the alphabet policy of :func:`~longseq.apps.genomics.alphabet.normalize_sequence`
    (errors name ``line N``); an empty sequence or label cell is an error.

    Returns:
        ``(sequences, labels as strings, report)``; a :class:`SequenceWarning` is emitted when
        ambiguity codes were mapped to ``N``.
    """
    path = Path(path)
    report = ReadReport(str(path), "csv")
    seqs, labels = [], []
    for number, (seq, label) in _rows(path, (seq_col, label_col)):
        seq, stats = normalize_sequence(
            seq, record_id=f"line {number}", source=str(path), soft_mask=soft_mask, iupac=iupac
        )
        report.stats.add(stats)
        report.n_records += 1
        seqs.append(seq)
        labels.append(label)
    report.warn()
    return seqs, labels, report


def read_label_table(path: str | Path, *, id_col: str = "id", label_col: str = "label") -> LabelTable:
    """Read an ``id,label`` table (CSV or TSV with a header) into ``{id: label}``.

    Raises:
        SequenceError: missing columns or cells, or an id listed twice (naming both lines).
    """
    path = Path(path)
    table: LabelTable = {}
    first_line: dict[str, int] = {}
    for number, (record_id, label) in _rows(path, (id_col, label_col)):
        if record_id in table:
            raise SequenceError(
                f"{path}, line {number}: id {record_id!r} is listed twice (first on line {first_line[record_id]})"
            )
        table[record_id] = label
        first_line[record_id] = number
    return table


def encode_labels(labels: Sequence[str], *, source: str = "labels") -> tuple[np.ndarray, list[str]]:
    """Class indices of label strings.

    If every label is a non-negative integer (``"0"``, ``"1"``, ...), the integer is the class
    index and the class names are ``"0" .. str(max)``. Otherwise the classes are the distinct labels
    sorted as strings, and the index is the position in that list.

    Returns:
        ``(indices (N,) int64, class names)``.
    """
    if len(labels) == 0:
        raise SequenceError(f"{source}: no labels")
    if all(label.isdigit() for label in labels):
        indices = np.array([int(label) for label in labels], dtype=np.int64)
        return indices, [str(i) for i in range(int(indices.max()) + 1)]
    negative = [label for label in labels if label.startswith("-") and label[1:].isdigit()]
    if negative:
        raise SequenceError(f"{source}: integer labels must be >= 0, got {negative[0]!r}")
    names = sorted(set(labels))
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[label] for label in labels], dtype=np.int64), names
