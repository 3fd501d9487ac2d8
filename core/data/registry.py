"""Typed description of the datasets: :class:`DataFile`, :class:`Collection`, :class:`Dataset`, registry.

Every path is relative to the data root (see :func:`longseq.core.data.resolve_root`) and uses ``/``.
A :class:`Collection` is a folder with many files whose list lives in a ``FILES.tsv`` index inside it
(columns ``path bytes sha256 source_repo source_commit source_path``); the registry pins the sha256 of
the index, and the index pins every file in it.
"""

from __future__ import annotations

import csv
import io
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from longseq.core.data.convert import CONVERSIONS
from longseq.core.data.errors import CorruptDataError, DataError

__all__ = [
    "INDEX_COLUMNS",
    "INDEX_NAME",
    "INDEX_URL_BASE",
    "Collection",
    "DataFile",
    "Dataset",
    "get_dataset",
    "github_raw_url",
    "list_datasets",
    "read_index",
    "register_dataset",
]

INDEX_NAME = "FILES.tsv"
"""File name of a collection's index, inside the collection folder."""

INDEX_COLUMNS = ("path", "bytes", "sha256", "source_repo", "source_commit", "source_path")
"""Header of a ``FILES.tsv`` index, in order."""

INDEX_URL_BASE = "https://github.com/longseq/longseq-data/releases/download/v1/"
"""Where the ``FILES.tsv`` indexes are published for download.

The indexes are this project's own staging artefacts (no upstream has them), so they are release
assets of the project repository ``longseq/longseq-data``: ``<INDEX_URL_BASE><asset>`` with ``<asset>``
the collection folder with ``/`` replaced by ``__`` plus ``.FILES.tsv``, e.g.
``vision__cifar10_jpeg.FILES.tsv``. Change this constant to point at another mirror.
"""

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def github_raw_url(repo: str, commit: str, path: str) -> str:
    """Return the raw.githubusercontent.com URL of ``path`` in GitHub repository ``repo`` at ``commit``."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{urllib.parse.quote(path, safe='/')}"


def _check_relative(path: str, what: str) -> None:
    """Raise :class:`DataError` unless ``path`` is a clean relative POSIX path (no ``..``, no ``/`` start)."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or str(pure) != path:
        raise DataError(f"{what} must be a relative path like 'timeseries/ETTh1.csv', got {path!r}")


def _check_pin(sha256: str, nbytes: int, url: str, what: str) -> None:
    """Raise :class:`DataError` unless the sha256 is 64 lowercase hex, bytes >= 0 and url is https."""
    if not _SHA256.fullmatch(sha256):
        raise DataError(f"{what}: sha256 must be 64 lowercase hex digits, got {sha256!r}")
    if nbytes < 0:
        raise DataError(f"{what}: bytes must be >= 0, got {nbytes}")
    if not url.startswith("https://"):
        raise DataError(f"{what}: url must start with https://, got {url!r}")


def _check_convert(convert: str | None, what: str) -> None:
    """Raise :class:`DataError` unless ``convert`` is None or a known conversion name."""
    if convert is not None and convert not in CONVERSIONS:
        raise DataError(f"{what}: unknown convert {convert!r}; known: {', '.join(sorted(CONVERSIONS))}")


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset, pinned by size and sha256, with where to download it from.

    Attributes:
        path: location relative to the data root, e.g. ``"timeseries/ETTh1.csv"``.
        sha256: lowercase hex sha256 of the file as staged.
        bytes: size of the file as staged.
        url: canonical public download URL of the source: for GitHub sources
            ``https://raw.githubusercontent.com/<repo>/<commit>/<path>``. For a converted file, the URL
            of the source file it is converted from.
        convert: name of the conversion from the source to the staged file (see
            :mod:`longseq.core.data.convert`), or None when the file is the source blob unchanged.
        member: when the URL is a zip archive, the member extracted from it unchanged; else None.
    """

    path: str
    sha256: str
    bytes: int
    url: str
    convert: str | None = None
    member: str | None = None

    def __post_init__(self) -> None:
        _check_relative(self.path, "DataFile.path")
        _check_pin(self.sha256, self.bytes, self.url, f"DataFile {self.path}")
        _check_convert(self.convert, f"DataFile {self.path}")


@dataclass(frozen=True)
class Collection:
    """A folder of many files listed in its own ``FILES.tsv`` index.

    Attributes:
        path: the folder relative to the data root, e.g. ``"vision/cifar10_jpeg"``.
        index_sha256: sha256 of ``<path>/FILES.tsv``.
        index_bytes: size of ``<path>/FILES.tsv``.
        n_files: number of files listed in the index.
        bytes: total size of the listed files (index excluded).
        source: human-readable origin, ``"<repo> @ <commit> : <pattern>"``; the per-file source is in
            the index and each file downloads from ``github_raw_url(source_repo, source_commit,
            source_path)``.
        convert: conversion applied to every listed file (see :mod:`longseq.core.data.convert`), or None.
        index_url: where the index itself is downloaded from; defaults to the release asset under
            :data:`INDEX_URL_BASE`.
    """

    path: str
    index_sha256: str
    index_bytes: int
    n_files: int
    bytes: int
    source: str
    convert: str | None = None
    index_url: str = field(default="")

    def __post_init__(self) -> None:
        _check_relative(self.path, "Collection.path")
        if not self.index_url:
            asset = self.path.replace("/", "__") + "." + INDEX_NAME
            object.__setattr__(self, "index_url", INDEX_URL_BASE + asset)
        _check_pin(self.index_sha256, self.index_bytes, self.index_url, f"Collection {self.path}")
        _check_convert(self.convert, f"Collection {self.path}")
        if self.n_files <= 0 or self.bytes < 0:
            raise DataError(f"Collection {self.path}: n_files must be > 0 and bytes >= 0")

    @property
    def index(self) -> DataFile:
        """The ``FILES.tsv`` index as a :class:`DataFile` (verified and downloaded like any other file)."""
        return DataFile(f"{self.path}/{INDEX_NAME}", self.index_sha256, self.index_bytes, self.index_url)


@dataclass(frozen=True)
class Dataset:
    """A named dataset: a few individually pinned files plus zero or more collections.

    Attributes:
        name: registry key, lowercase ``[a-z][a-z0-9_]*``, used on the command line.
        description: one line saying what the data is.
        license: the license as stated by the source (or "not stated ..." when it states none).
        files: the individually pinned files.
        collections: folders with a ``FILES.tsv`` index.
        homepage: where the dataset is described (usually the source repository).
        citation: short reference to cite.
    """

    name: str
    description: str
    license: str
    files: tuple[DataFile, ...] = ()
    collections: tuple[Collection, ...] = ()
    homepage: str = ""
    citation: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise DataError(f"dataset name must match [a-z][a-z0-9_]*, got {self.name!r}")
        if not self.description.strip() or "\n" in self.description:
            raise DataError(f"dataset {self.name}: description must be one non-empty line")
        if not self.license.strip():
            raise DataError(f"dataset {self.name}: license must not be empty")
        if not self.files and not self.collections:
            raise DataError(f"dataset {self.name}: has neither files nor collections")
        paths = [f.path for f in self.files] + [c.path for c in self.collections]
        if len(set(paths)) != len(paths):
            raise DataError(f"dataset {self.name}: duplicate paths in {paths}")

    @property
    def n_files(self) -> int:
        """Number of data files: the plain files plus every collection's listed files (indexes excluded)."""
        return len(self.files) + sum(c.n_files for c in self.collections)

    @property
    def bytes(self) -> int:
        """Total size of the data files in bytes (indexes excluded)."""
        return sum(f.bytes for f in self.files) + sum(c.bytes for c in self.collections)


def read_index(collection: Collection, index_path: Path) -> tuple[DataFile, ...]:
    """Parse a collection's ``FILES.tsv`` into :class:`DataFile` objects with root-relative paths.

    The caller is expected to have checked the index's sha256 first. Raises
    :class:`CorruptDataError` when the header, a row or the row count is not as expected.
    """
    text = index_path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or tuple(rows[0]) != INDEX_COLUMNS:
        got = rows[0] if rows else []
        raise CorruptDataError(f"{index_path}: header is {got}, expected {list(INDEX_COLUMNS)}")
    files = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(INDEX_COLUMNS) or not row[1].isdigit():
            raise CorruptDataError(f"{index_path} line {number}: expected 6 tab-separated fields, got {row}")
        path, nbytes, sha256, repo, commit, source_path = row
        try:
            files.append(
                DataFile(
                    f"{collection.path}/{path}",
                    sha256,
                    int(nbytes),
                    github_raw_url(repo, commit, source_path),
                    convert=collection.convert,
                )
            )
        except DataError as exc:
            raise CorruptDataError(f"{index_path} line {number}: {exc}") from None
    if len(files) != collection.n_files:
        raise CorruptDataError(f"{index_path}: lists {len(files)} files, expected {collection.n_files}")
    return tuple(files)


_REGISTRY: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> Dataset:
    """Add ``dataset`` to the global registry and return it; a second dataset of the same name is an error."""
    if dataset.name in _REGISTRY:
        raise DataError(f"dataset {dataset.name!r} is already registered")
    _REGISTRY[dataset.name] = dataset
    return dataset


def get_dataset(name: str) -> Dataset:
    """Return the registered dataset called ``name``; raises :class:`DataError` listing the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(_REGISTRY)}") from None


def list_datasets() -> list[Dataset]:
    """Return every registered dataset, in registration order (grouped by domain)."""
    return list(_REGISTRY.values())
