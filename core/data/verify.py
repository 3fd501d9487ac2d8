"""Check files under the data root against the registry: :func:`verify`, :func:`require`.

Nothing is cached: every call stats (and, with ``check_hash``, hashes) the files again. Files are
checked in a thread pool, so the 30,000 small CIFAR files take a few seconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from longseq.core.data.errors import CorruptDataError, MissingDataError
from longseq.core.data.registry import Collection, DataFile, Dataset, get_dataset, read_index
from longseq.core.data.root import resolve_root

__all__ = ["VerifyReport", "require", "sha256_file", "verify"]

CHUNK = 1 << 20
"""Read size when hashing (1 MiB)."""

_WORKERS = min(32, 4 * (os.cpu_count() or 1))


def sha256_file(path: Path) -> str:
    """Return the lowercase hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class VerifyReport:
    """Result of :func:`verify` for one dataset under one root; paths are absolute.

    Attributes:
        dataset: the dataset name.
        root: the data root that was checked.
        checked_hash: whether sha256 was compared (else only existence and size).
        ok: files that match (collection indexes included).
        missing: files that do not exist.
        corrupt: ``(path, reason)`` for files whose size or sha256 differs; the reason says which and
            gives the found and expected values.
        unchecked: ``(folder, reason)`` for collections whose files could not be checked because
            their ``FILES.tsv`` index is missing or corrupt (the index itself is in ``missing`` or
            ``corrupt``).
    """

    dataset: str
    root: Path
    checked_hash: bool
    ok: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    corrupt: list[tuple[Path, str]] = field(default_factory=list)
    unchecked: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every file was checked and matched."""
        return not (self.missing or self.corrupt or self.unchecked)

    def problems(self) -> list[str]:
        """One line per problem: ``missing: PATH``, ``corrupt: PATH (why)``, ``unchecked: PATH (why)``."""
        return (
            [f"missing: {path}" for path in self.missing]
            + [f"corrupt: {path} ({reason})" for path, reason in self.corrupt]
            + [f"unchecked: {path} ({reason})" for path, reason in self.unchecked]
        )


def _check(file: DataFile, root: Path, check_hash: bool) -> tuple[Path, str | None]:
    """Check one file; return its absolute path and None, ``"missing"`` or a corruption reason."""
    path = root / file.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return path, "missing"
    if not path.is_file():
        return path, "not a regular file"
    if size != file.bytes:
        return path, f"size mismatch: {size} bytes, expected {file.bytes}"
    if check_hash:
        digest = sha256_file(path)
        if digest != file.sha256:
            return path, f"sha256 mismatch: {digest}, expected {file.sha256}"
    return path, None


def _record(report: VerifyReport, result: tuple[Path, str | None]) -> bool:
    """Add one check result to ``report``; return True when the file matched."""
    path, problem = result
    if problem is None:
        report.ok.append(path)
    elif problem == "missing":
        report.missing.append(path)
    else:
        report.corrupt.append((path, problem))
    return problem is None


def _collection_files(collection: Collection, root: Path, report: VerifyReport) -> list[DataFile]:
    """Check a collection's index (always by sha256) and return its listed files, or [] if unusable."""
    result = _check(collection.index, root, check_hash=True)
    if not _record(report, result):
        state = "missing" if result[1] == "missing" else "corrupt"
        report.unchecked.append(
            (root / collection.path, f"index {state}: its {collection.n_files} listed files were not checked")
        )
        return []
    try:
        return list(read_index(collection, root / collection.index.path))
    except CorruptDataError as exc:
        report.unchecked.append((root / collection.path, f"index unreadable: {exc}"))
        return []


def verify(dataset: str | Dataset, root: str | Path | None = None, *, check_hash: bool = True) -> VerifyReport:
    """Check every file of ``dataset`` under the data root against the registry.

    Args:
        dataset: a registered name or a :class:`Dataset` object (which need not be registered).
        root: the data root; see :func:`resolve_root` for the default.
        check_hash: compare sha256 (the default); with False only existence and size are checked.
            Collection indexes are always hashed because their listing is trusted afterwards.

    Returns:
        A :class:`VerifyReport`; nothing is raised for missing or corrupt files.

    Raises:
        DataError: unknown dataset name or bad explicit root.
    """
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    base = resolve_root(root)
    report = VerifyReport(ds.name, base, check_hash)
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        batches = chain([list(ds.files)], (_collection_files(c, base, report) for c in ds.collections))
        for files in batches:  # plain files first, then each collection: its index, then its members
            for result in pool.map(lambda f: _check(f, base, check_hash), files):
                _record(report, result)
    return report


def _first(paths: Iterable[object], limit: int = 2) -> str:
    """Join the first ``limit`` items for a one-line message."""
    items = [str(p) for p in paths]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def require(name: str | Dataset, root: str | Path | None = None, *, check_hash: bool = False) -> Path:
    """Make sure a dataset is present before loading it and return the data root.

    By default only existence and size are checked (fast enough to call on every start); pass
    ``check_hash=True`` for a full sha256 check (``longseq data verify`` does that).

    Raises:
        MissingDataError: some files are missing (the message names the first ones and the fix).
        CorruptDataError: files are present but differ from the registry.
        DataError: unknown dataset name or bad explicit root.
    """
    report = verify(name, root, check_hash=check_hash)
    if report.passed:
        return report.root
    ds = report.dataset
    fix = f"run `longseq data download {ds} --root {report.root}` or place the files by hand; see `longseq data list`"
    if report.missing:
        raise MissingDataError(
            f"dataset '{ds}' is incomplete under {report.root}: {len(report.missing)} file(s) missing "
            f"({_first(report.missing)}); {fix}"
        )
    bad = [f"{path} ({reason})" for path, reason in report.corrupt] + [str(p) for p, _ in report.unchecked]
    raise CorruptDataError(
        f"dataset '{ds}' has {len(bad)} corrupt file(s) under {report.root}: {_first(bad, 1)}; {fix}"
    )
