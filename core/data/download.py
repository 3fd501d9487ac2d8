"""Fetch a dataset's files from their public sources into the data root: :func:`download`.

Each file is streamed into a temporary file next to its target, converted or extracted if the
registry says so, checked against the registered sha256, and only then renamed onto the target
(atomic on one file system). A failed or corrupt download leaves no target and no temporary file.
An existing file is never overwritten or deleted unless ``force=True``; one that already matches is
skipped. Only :mod:`urllib.request` is used; the network is reached through the module-level
:func:`_urlopen`, which tests replace.
"""

from __future__ import annotations

import http.client
import os
import tempfile
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from longseq.core.data.convert import check_packages, convert_bytes
from longseq.core.data.errors import CorruptDataError, DataError
from longseq.core.data.registry import DataFile, Dataset, get_dataset, read_index
from longseq.core.data.root import resolve_root
from longseq.core.data.verify import CHUNK, sha256_file

__all__ = ["TIMEOUT_S", "DownloadReport", "download"]

TIMEOUT_S = 30.0
"""Socket timeout of each request, in seconds."""


def _urlopen(url: str, timeout: float) -> BinaryIO:
    """Open ``url`` for reading; the only place that touches the network (tests monkeypatch it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "longseq-data"})
    return urllib.request.urlopen(request, timeout=timeout)


@dataclass
class DownloadReport:
    """What :func:`download` did; paths are absolute.

    Attributes:
        dataset: the dataset name.
        root: the data root written to.
        fetched: files downloaded (and converted) and written.
        skipped: files already present with the registered sha256, left untouched.
    """

    dataset: str
    root: Path
    fetched: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


_NETWORK_ERRORS = (OSError, http.client.HTTPException)  # URLError, HTTPError, timeouts are OSError


def _unreachable(url: str, exc: BaseException, target: Path) -> DataError:
    """Build the one-line error for a URL that could not be fetched."""
    reason = getattr(exc, "reason", None) or exc or type(exc).__name__
    return DataError(
        f"could not download {url}: {reason}; to work offline, place the file by hand at {target} "
        "(see `longseq data list`)"
    )


def _fetch(url: str, out: BinaryIO, target: Path) -> None:
    """Stream ``url`` into the open file ``out``; network failures become one-line :class:`DataError`."""
    try:
        response = _urlopen(url, TIMEOUT_S)
    except _NETWORK_ERRORS as exc:
        raise _unreachable(url, exc, target) from None
    with response:
        while True:
            try:
                chunk = response.read(CHUNK)
            except _NETWORK_ERRORS as exc:
                raise _unreachable(url, exc, target) from None
            if not chunk:
                return
            out.write(chunk)


def _produce(file: DataFile, target: Path, temp: Path) -> None:
    """Write the staged form of ``file`` into ``temp``: fetch, then extract a zip member or convert."""
    with open(temp, "wb") as out:
        _fetch(file.url, out, target)
    if file.member is not None:
        try:
            with zipfile.ZipFile(temp) as archive:
                data = archive.read(file.member)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise CorruptDataError(f"{file.url}: cannot extract {file.member!r}: {exc}") from None
        temp.write_bytes(data)
    if file.convert is not None:
        temp.write_bytes(convert_bytes(file.convert, temp.read_bytes()))


def _mismatch(file: DataFile, target: Path, digest: str, size: int) -> CorruptDataError:
    """Build the error for a download whose result differs from the registry."""
    found = f"sha256 {digest} ({size} bytes), expected {file.sha256} ({file.bytes} bytes)"
    if file.convert is not None:
        return CorruptDataError(
            f"conversion '{file.convert}' of {file.url} gave {found}; re-encoding is not always "
            f"byte-identical across library versions, so place the staged copy by hand at {target}"
        )
    return CorruptDataError(
        f"download of {file.url} gave {found}; the source changed or the transfer was damaged; {target} was not written"
    )


def _matches(file: DataFile, target: Path) -> bool:
    """True when ``target`` exists with the registered size and sha256."""
    return target.stat().st_size == file.bytes and sha256_file(target) == file.sha256


def _install(file: DataFile, root: Path, force: bool, report: DownloadReport) -> None:
    """Make ``root/file.path`` a correct copy of ``file``, downloading it unless it already is one."""
    target = root / file.path
    if target.exists():
        if target.is_file() and _matches(file, target):
            report.skipped.append(target)
            return
        if not force:
            raise DataError(
                f"{target} exists but differs from the registry; not overwriting it: "
                "pass --force (force=True) to replace it"
            )
    if file.convert is not None:
        check_packages(file.convert)  # before fetching the source
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"cannot write into {target.parent}: {exc.strerror or exc}") from None
    os.close(handle)
    temp = Path(name)
    try:
        _produce(file, target, temp)
        digest, size = sha256_file(temp), temp.stat().st_size
        if digest != file.sha256 or size != file.bytes:
            raise _mismatch(file, target, digest, size)
        os.replace(temp, target)
    finally:
        with suppress(FileNotFoundError):
            temp.unlink()
    report.fetched.append(target)


def _run(
    files: list[DataFile],
    root: Path,
    force: bool,
    report: DownloadReport,
    bar: tqdm,
    *,
    workers: int = 1,
    counted: bool = True,
) -> None:
    """Install ``files`` with up to ``workers`` threads; the first error stops the rest and is raised.

    ``counted`` says whether their sizes advance the progress bar (collection indexes do not).
    """

    def one(file: DataFile) -> None:
        _install(file, root, force, report)
        if counted:
            bar.update(file.bytes)

    if workers <= 1 or len(files) <= 1:
        for file in files:
            one(file)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for _ in pool.map(one, files):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def download(
    dataset: str | Dataset,
    root: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    workers: int = 8,
) -> DownloadReport:
    """Download every file of ``dataset`` that is not already present and correct under the data root.

    Args:
        dataset: a registered name or a :class:`Dataset` object.
        root: the data root (see :func:`resolve_root`); the default ``~/.cache/longseq`` is created.
        force: replace existing files whose content differs from the registry (never done otherwise).
        progress: show a tqdm progress bar (bytes of staged files) on stderr.
        workers: parallel downloads for the files of a collection.

    Returns:
        A :class:`DownloadReport` of fetched and skipped files; when it returns, every file matches.

    Raises:
        DataError: unreachable URL (the message names it and where to place the file by hand), an
            existing different file without ``force``, or a missing optional package for a conversion.
        CorruptDataError: a downloaded (or converted) file does not have the registered sha256.
    """
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    base = resolve_root(root)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data root {base}: {exc.strerror or exc}") from None
    report = DownloadReport(ds.name, base)
    with tqdm(total=ds.bytes, unit="B", unit_scale=True, desc=ds.name, disable=not progress) as bar:
        _run(list(ds.files), base, force, report, bar)
        for collection in ds.collections:
            _run([collection.index], base, force, report, bar, counted=False)
            members = list(read_index(collection, base / collection.index.path))
            _run(members, base, force, report, bar, workers=workers)
    return report
