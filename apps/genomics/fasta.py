"""Reading FASTA and FASTQ with ``Bio.SeqIO``'s parsers: gzip transparently, the alphabet policy applied.

Every reader returns a :class:`ReadResult` ``(records, report)``: the non-empty records as
:class:`SequenceRecord` and a :class:`ReadReport` counting what was skipped or changed. Empty records
are skipped and counted (with a :class:`SequenceWarning`); characters outside the alphabet raise a
:class:`SequenceError` naming the file, record id and 1-based position (policy in
:mod:`longseq.apps.genomics.alphabet`). A file with no records is an error.

Gzip is detected by its magic bytes, whatever the name; a name ending in ``.gz`` that is not gzip is
an error. Line endings (LF or CRLF) and whitespace inside sequence lines do not matter.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, TextIO

import numpy as np
from Bio.SeqIO.FastaIO import SimpleFastaParser
from Bio.SeqIO.QualityIO import FastqGeneralIterator

from longseq.apps.genomics.alphabet import (
    IupacPolicy,
    SequenceError,
    SequenceStats,
    SequenceWarning,
    SoftMaskPolicy,
    check_policies,
    normalize_sequence,
)

__all__ = [
    "FileFormat",
    "ReadReport",
    "ReadResult",
    "SequenceRecord",
    "open_text",
    "read_fasta",
    "read_fastq",
    "read_sequences",
]

FileFormat = Literal["fasta", "fastq"]
_GZIP_MAGIC = b"\x1f\x8b"
_FIRST_CHAR = {">": "fasta", "@": "fastq"}
_MAX_IDS = 5  # ids listed in messages and reports


@dataclass(frozen=True)
class SequenceRecord:
    """One sequence.

    Attributes:
        id: the first word of the header line.
        seq: the sequence after the alphabet policy (``ACGTN``, lowercase if soft-masked and kept).
        description: the whole header line without ``>``/``@``.
        quality: FASTQ Phred scores ``(len(seq),)`` uint8, or None for FASTA.
    """

    id: str
    seq: str
    description: str = ""
    quality: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.seq)


@dataclass
class ReadReport:
    """What a reader kept, skipped and changed in one source.

    Attributes:
        source: the file (or other origin) read.
        file_format: ``"fasta"``, ``"fastq"`` or ``"csv"``.
        n_records: records kept.
        n_empty: empty records skipped.
        empty_ids: ids of the first skipped empty records.
        stats: bases kept, soft-masked bases seen, ambiguity codes mapped to ``N``.
    """

    source: str
    file_format: str
    n_records: int = 0
    n_empty: int = 0
    empty_ids: list[str] = field(default_factory=list)
    stats: SequenceStats = field(default_factory=SequenceStats)

    @property
    def n_bases(self) -> int:
        """Bases in the kept records."""
        return self.stats.n_bases

    @property
    def n_ambiguous(self) -> int:
        """IUPAC ambiguity codes mapped to ``N``."""
        return self.stats.n_ambiguous

    def skip_empty(self, record_id: str) -> None:
        """Count one skipped empty record."""
        self.n_empty += 1
        if len(self.empty_ids) < _MAX_IDS:
            self.empty_ids.append(record_id)

    def summary(self) -> str:
        """One line: records, bases, soft-masked bases, ambiguity codes mapped and empty records skipped."""
        amb = ", ".join(f"{code}:{n}" for code, n in sorted(self.stats.ambiguity.items()))
        return (
            f"{self.source}: {self.n_records} records, {self.n_bases} bases, {self.stats.n_soft_masked} soft-masked, "
            f"{self.n_ambiguous} ambiguity codes mapped to N{f' ({amb})' if amb else ''}, "
            f"{self.n_empty} empty records skipped"
        )

    def warn(self) -> None:
        """Emit a :class:`SequenceWarning` for skipped empty records and for ambiguity codes mapped to ``N``."""
        if self.n_empty:
            more = ", ..." if self.n_empty > len(self.empty_ids) else ""
            warnings.warn(
                f"{self.source}: skipped {self.n_empty} empty record(s) (ids: {', '.join(self.empty_ids)}{more})",
                SequenceWarning,
                stacklevel=3,
            )
        if self.n_ambiguous:
            amb = ", ".join(f"{code}:{n}" for code, n in sorted(self.stats.ambiguity.items()))
            warnings.warn(
                f"{self.source}: mapped {self.n_ambiguous} IUPAC ambiguity code(s) to N ({amb})",
                SequenceWarning,
                stacklevel=3,
            )


class ReadResult(NamedTuple):
    """``(records, report)`` as returned by the readers."""

    records: list[SequenceRecord]
    report: ReadReport


@contextmanager
def open_text(path: str | Path) -> Iterator[TextIO]:
    """Open ``path`` for reading as UTF-8 text, decompressing gzip (detected by magic bytes).

    Raises:
        SequenceError: the name ends in ``.gz`` but the content is not gzip.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
    if not is_gzip and path.suffix.lower() == ".gz":
        raise SequenceError(f"{path}: the name ends in .gz but the file is not gzip-compressed (no gzip magic bytes)")
    opener = gzip.open if is_gzip else open
    with opener(path, "rt", encoding="utf-8", newline=None) as handle:
        yield handle


def _first_char(handle: TextIO, source: Path) -> str:
    """Skip blank lines; return the first non-blank character and leave ``handle`` at the start of its line."""
    while True:
        pos = handle.tell()
        line = handle.readline()
        if not line:
            raise SequenceError(f"{source}: empty file (no records); expected FASTA ('>id' lines) or FASTQ ('@id')")
        if line.strip():
            handle.seek(pos)
            return line[0]  # whitespace before '>' or '@' is reported as the character found


def read_sequences(
    path: str | Path,
    *,
    file_format: FileFormat | None = None,
    soft_mask: SoftMaskPolicy = "keep",
    iupac: IupacPolicy = "to_n",
) -> ReadResult:
    """Read every record of a FASTA or FASTQ file (optionally gzip-compressed).

    Args:
        path: the file.
        file_format: ``"fasta"`` or ``"fastq"``; None tells them apart by the first non-blank character
            (``>`` or ``@``).
        soft_mask: ``"keep"`` lowercase (soft-masked) bases or ``"upper"``-case them.
        iupac: ``"to_n"`` maps IUPAC ambiguity codes to ``N`` (counted); ``"error"`` rejects them.

    Returns:
        ``ReadResult(records, report)``; a :class:`SequenceWarning` is emitted when empty records were
        skipped or ambiguity codes mapped.

    Raises:
        SequenceError: empty file, no non-empty record, unparseable file, wrong format, invalid character.
    """
    check_policies(soft_mask, iupac)
    if file_format not in (None, "fasta", "fastq"):
        raise ValueError(f"file_format must be 'fasta', 'fastq' or None, got {file_format!r}")
    path = Path(path)
    with open_text(path) as handle:
        try:
            first = _first_char(handle, path)
            found = _FIRST_CHAR.get(first)
            if found is None or (file_format is not None and found != file_format):
                want = (
                    f"{file_format.upper()} ({'>' if file_format == 'fasta' else '@'})" if file_format else "'>' or '@'"
                )
                seen = f" (looks like {found.upper()})" if found else ""
                raise SequenceError(f"{path}: expected {want} at the start of the first record, found {first!r}{seen}")
            result = _parse(handle, found, path, soft_mask, iupac)
        except UnicodeDecodeError as exc:
            raise SequenceError(f"{path}: not UTF-8/ASCII text ({exc.reason} at byte {exc.start})") from None
        except (EOFError, gzip.BadGzipFile) as exc:
            raise SequenceError(f"{path}: truncated or corrupt gzip data ({exc})") from None
    result.report.warn()
    return result


def _entries(handle: TextIO, file_format: str) -> Iterator[tuple[str, str, str | None]]:
    """``(title, sequence, quality string or None)`` per record, from ``Bio.SeqIO``'s string-level parsers
    (they keep any character, so the alphabet check below can name the record and position)."""
    if file_format == "fasta":
        for title, seq in SimpleFastaParser(handle):
            yield title, seq, None
    else:
        yield from FastqGeneralIterator(handle)


def _quality(qual: str, record_id: str, path: Path) -> np.ndarray:
    """Phred scores ``(L,)`` uint8 of a Sanger / Illumina 1.8+ (offset 33) FASTQ quality string."""
    if qual.isascii():
        raw = np.frombuffer(qual.encode("ascii"), dtype=np.uint8)
        bad = np.flatnonzero((raw < 33) | (raw > 126))
        if not bad.size:
            return raw - 33
        pos = int(bad[0])
    else:
        pos = next(i for i, char in enumerate(qual) if not char.isascii())
    raise SequenceError(
        f"{path}: record {record_id!r}, quality position {pos + 1} (1-based): {qual[pos]!r} is not a "
        "Sanger / Illumina 1.8+ quality character ('!' to '~')"
    )


def _parse(handle: TextIO, file_format: str, path: Path, soft_mask: SoftMaskPolicy, iupac: IupacPolicy) -> ReadResult:
    """Parse with ``Bio.SeqIO`` and apply the alphabet policy to each record."""
    report = ReadReport(str(path), file_format)
    records: list[SequenceRecord] = []
    parsed = _entries(handle, file_format)
    while True:
        try:
            title, seq, qual = next(parsed)
        except StopIteration:
            break
        except ValueError as exc:  # a Bio.SeqIO format error; its first line says what is wrong
            if isinstance(exc, UnicodeDecodeError):
                raise
            reason = str(exc).strip().splitlines()[0]
            raise SequenceError(
                f"{path}: not valid {file_format.upper()} after {report.n_records + report.n_empty} record(s): {reason}"
            ) from None
        record_id = title.split(None, 1)[0] if title.strip() else ""
        if not seq:
            report.skip_empty(record_id)
            continue
        seq, stats = normalize_sequence(seq, record_id=record_id, source=str(path), soft_mask=soft_mask, iupac=iupac)
        quality = None if qual is None else _quality(qual, record_id, path)
        records.append(SequenceRecord(record_id, seq, title, quality))
        report.n_records += 1
        report.stats.add(stats)
    if not records:
        what = f"all {report.n_empty} record(s) are empty" if report.n_empty else "no records"
        raise SequenceError(f"{path}: {what}; expected at least one non-empty {file_format.upper()} record")
    return ReadResult(records, report)


def read_fasta(path: str | Path, *, soft_mask: SoftMaskPolicy = "keep", iupac: IupacPolicy = "to_n") -> ReadResult:
    """Read a FASTA file (optionally gzip-compressed); see :func:`read_sequences`."""
    return read_sequences(path, file_format="fasta", soft_mask=soft_mask, iupac=iupac)


def read_fastq(path: str | Path, *, soft_mask: SoftMaskPolicy = "keep", iupac: IupacPolicy = "to_n") -> ReadResult:
    """Read a FASTQ file (optionally gzip-compressed), Phred scores in ``record.quality``; see
    :func:`read_sequences`."""
    return read_sequences(path, file_format="fastq", soft_mask=soft_mask, iupac=iupac)
