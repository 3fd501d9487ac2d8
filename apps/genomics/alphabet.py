"""The DNA alphabet, the policy for everything else, and the reverse complement of strings.

Policy (applied by :func:`normalize_sequence`, used by every reader of this app):

* ``A C G T N`` are bases; lowercase ``a c g t n`` are the same bases soft-masked (repeats, low
  complexity). ``soft_mask="keep"`` keeps the case, ``"upper"`` upper-cases.
* The IUPAC ambiguity codes ``R Y S W K M B D H V`` (any case) are mapped to ``N`` (case kept) with
  ``iupac="to_n"`` and counted; with ``iupac="error"`` the first one is an error.
* Any other character (``U``, gaps ``-`` ``.``, digits, ``*``, whitespace inside a sequence, non-ASCII)
  is a :class:`SequenceError` naming the source, the record and the 1-based position.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "BASES",
    "IUPAC_AMBIGUITY",
    "IupacPolicy",
    "SequenceError",
    "SequenceStats",
    "SequenceWarning",
    "SoftMaskPolicy",
    "ascii_codes",
    "check_policies",
    "normalize_sequence",
    "reverse_complement",
]

BASES = "ACGTN"
"""The bases the app tokenises (``N`` = any base)."""

IUPAC_AMBIGUITY = "RYSWKMBDHV"
"""IUPAC nucleotide ambiguity codes other than ``N``; mapped to ``N`` by ``iupac="to_n"``."""

SoftMaskPolicy = Literal["keep", "upper"]
IupacPolicy = Literal["to_n", "error"]

_COMPLEMENT = str.maketrans("ACGTNRYSWKMBDHVacgtnryswkmbdhv", "TGCANYRSWMKVHDBtgcanyrswmkvhdb")
_HINTS = {"U": "RNA base; convert U to T first", "-": "alignment gap", ".": "alignment gap", "*": "stop/gap symbol"}

# Byte classes: 0 invalid, 1 base, 2 soft-masked base, 3 ambiguity code, 4 soft-masked ambiguity code.
_CLASS = np.zeros(256, dtype=np.uint8)
for _chars, _code in ((BASES, 1), (BASES.lower(), 2), (IUPAC_AMBIGUITY, 3), (IUPAC_AMBIGUITY.lower(), 4)):
    _CLASS[np.frombuffer(_chars.encode(), dtype=np.uint8)] = _code
_TO_N = np.arange(256, dtype=np.uint8)
_TO_N[np.frombuffer(IUPAC_AMBIGUITY.encode(), dtype=np.uint8)] = ord("N")
_TO_N[np.frombuffer(IUPAC_AMBIGUITY.lower().encode(), dtype=np.uint8)] = ord("n")
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a") : ord("z") + 1] -= 32


class SequenceError(ValueError):
    """A sequence file or sequence is unusable; the message names the file, record and position."""


class SequenceWarning(UserWarning):
    """Something was skipped or changed while reading (empty records, ambiguity codes mapped to N)."""


@dataclass
class SequenceStats:
    """What :func:`normalize_sequence` saw in one or more sequences.

    Attributes:
        n_bases: bases kept (after normalisation).
        n_soft_masked: lowercase bases in the input (counted whatever the soft-mask policy).
        ambiguity: IUPAC ambiguity codes mapped to ``N``, by uppercase code.
    """

    n_bases: int = 0
    n_soft_masked: int = 0
    ambiguity: Counter[str] = field(default_factory=Counter)

    @property
    def n_ambiguous(self) -> int:
        """Total ambiguity codes mapped to ``N``."""
        return sum(self.ambiguity.values())

    def add(self, other: SequenceStats) -> None:
        """Accumulate ``other`` into this object."""
        self.n_bases += other.n_bases
        self.n_soft_masked += other.n_soft_masked
        self.ambiguity.update(other.ambiguity)


def check_policies(soft_mask: str, iupac: str) -> None:
    """Raise ``ValueError`` unless ``soft_mask`` is ``"keep"``/``"upper"`` and ``iupac`` is ``"to_n"``/``"error"``."""
    if soft_mask not in ("keep", "upper"):
        raise ValueError(f"soft_mask must be 'keep' or 'upper', got {soft_mask!r}")
    if iupac not in ("to_n", "error"):
        raise ValueError(f"iupac must be 'to_n' or 'error', got {iupac!r}")


def _where(source: str, record_id: str, position: int) -> str:
    return f"{source}: record {record_id!r}, position {position} (1-based)"


def ascii_codes(text: str, where: Callable[[int], str]) -> np.ndarray:
    """``(len(text),)`` uint8 character codes of ``text``; a non-ASCII character raises a
    :class:`SequenceError` starting with ``where(0-based position)``."""
    try:
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError as exc:
        raise SequenceError(
            f"{where(exc.start)}: non-ASCII character {text[exc.start]!r}; expected A, C, G, T, N "
            f"or an IUPAC code ({IUPAC_AMBIGUITY}), any case"
        ) from None


def normalize_sequence(
    seq: str,
    *,
    record_id: str,
    source: str,
    soft_mask: SoftMaskPolicy = "keep",
    iupac: IupacPolicy = "to_n",
) -> tuple[str, SequenceStats]:
    """Apply the alphabet policy (module docstring) to one sequence; vectorised with numpy.

    Args:
        seq: the sequence, whitespace already removed by the reader.
        record_id: the record's id (or ``"row 12"``), used in error messages.
        source: the file (or other origin) the sequence came from, used in error messages.
        soft_mask: ``"keep"`` lowercase or ``"upper"``-case it.
        iupac: ``"to_n"`` maps ambiguity codes to ``N``; ``"error"`` rejects them.

    Returns:
        The normalised sequence and its :class:`SequenceStats`.

    Raises:
        SequenceError: a character outside the alphabet (or an ambiguity code with ``iupac="error"``).
    """
    check_policies(soft_mask, iupac)
    raw = ascii_codes(seq, lambda pos: _where(source, record_id, pos + 1))
    classes = _CLASS[raw]
    invalid = np.flatnonzero(classes == 0)
    if invalid.size:
        pos = int(invalid[0])
        char = seq[pos]
        hint = f" ({_HINTS[char.upper()]})" if char.upper() in _HINTS else ""
        raise SequenceError(
            f"{_where(source, record_id, pos + 1)}: invalid character {char!r}{hint}; "
            f"expected A, C, G, T, N or an IUPAC code ({IUPAC_AMBIGUITY}), any case "
            f"({invalid.size} invalid character(s) in this record)"
        )
    stats = SequenceStats(n_bases=len(seq), n_soft_masked=int(np.count_nonzero((classes == 2) | (classes == 4))))
    ambiguous = classes >= 3
    changed = False
    if ambiguous.any():
        if iupac == "error":
            pos = int(np.argmax(ambiguous))
            raise SequenceError(
                f"{_where(source, record_id, pos + 1)}: IUPAC ambiguity code {seq[pos]!r} "
                f"({int(ambiguous.sum())} in this record); iupac='error' rejects them, iupac='to_n' maps them to N"
            )
        counts = np.bincount(_UPPER[raw[ambiguous]], minlength=256)
        stats.ambiguity.update({chr(c): int(counts[c]) for c in np.flatnonzero(counts)})
        raw, changed = _TO_N[raw], True
    if soft_mask == "upper" and stats.n_soft_masked:
        raw, changed = _UPPER[raw], True
    if changed:
        seq = raw.tobytes().decode("ascii")
    return seq, stats


def reverse_complement(seq: str) -> str:
    """Reverse complement of a DNA string: case kept, ``N`` -> ``N``, IUPAC codes complemented
    (``R``<->``Y``, ``K``<->``M``, ``B``<->``V``, ``D``<->``H``; ``S``, ``W`` self-complementary).
    Other characters pass through unchanged (validate first with :func:`normalize_sequence`)."""
    return seq.translate(_COMPLEMENT)[::-1]
