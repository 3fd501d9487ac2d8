"""Tests of the dataset registry ``longseq.core.data`` and the ``longseq data`` CLI.

The shared data root is ``$LONGSEQ_DATA`` or ``../shared/data`` next to the repository. No test
touches the network: an autouse fixture makes every socket connection and DNS lookup fail and
records the attempt, and the download tests serve bytes through a fake ``_urlopen``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import os
import re
import shutil
import socket
import sys
import urllib.error
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from longseq.core import cli
from longseq.core.data import (
    Collection,
    CorruptDataError,
    DataError,
    DataFile,
    Dataset,
    MissingDataError,
    download,
    get_dataset,
    list_datasets,
    require,
    resolve_root,
    verify,
)
from longseq.core.data.convert import convert_bytes
from longseq.core.data.registry import INDEX_COLUMNS, INDEX_URL_BASE, read_index

# ``longseq.core.data.download`` the attribute is the function; the module is reached via importlib.
download_module = importlib.import_module("longseq.core.data.download")

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("LONGSEQ_DATA") or REPO.parent / "shared" / "data").expanduser()
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared data root {SHARED} not found (set LONGSEQ_DATA to the data folder)"
)
SHA = re.compile(r"[0-9a-f]{64}")


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Make connections and DNS lookups fail; fail the test if it tried any (unless it clears the list)."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert not attempts, f"the test tried to reach the network: {attempts}"


class FakeWeb:
    """Stand-in for ``download._urlopen``: serves fixed bytes per URL, URLError for anything else."""

    def __init__(self, pages: dict[str, bytes]) -> None:
        self.pages = pages
        self.calls: list[str] = []

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.calls.append(url)
        if url not in self.pages:
            raise urllib.error.URLError("[Errno -2] Name or service not known")
        return io.BytesIO(self.pages[url])


def copy_dataset(name: str, dest: Path) -> Path:
    """Copy the plain files of a registered dataset from the shared root into ``dest``; return ``dest``."""
    for file in get_dataset(name).files:
        target = dest / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / file.path, target)
    return dest


def flip_byte(path: Path, offset: int = 10) -> None:
    """Invert one byte of the file in place (size unchanged)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def make_collection(root: Path, folder: str = "synthetic/items") -> Dataset:
    """Write a small collection with its own FILES.tsv under ``root``; return an unregistered Dataset."""
    contents = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)), "c.txt": b"gamma gamma\n"}
    lines = ["\t".join(INDEX_COLUMNS)]
    for rel, data in contents.items():
        path = root / folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        lines.append(f"{rel}\t{len(data)}\t{sha256(data)}\texample/items\t{'0' * 40}\tsrc/{rel}")
    index = ("\n".join(lines) + "\n").encode()
    (root / folder / "FILES.tsv").write_bytes(index)
    collection = Collection(
        folder,
        index_sha256=sha256(index),
        index_bytes=len(index),
        n_files=len(contents),
        bytes=sum(len(d) for d in contents.values()),
        source="example/items @ 000 : src/<name>",
        index_url="https://example.invalid/items.FILES.tsv",
    )
    return Dataset("synthetic", "a synthetic collection for tests", "CC0-1.0", collections=(collection,))


# ---------------------------------------------------------------- registry


def test_registry_entries_are_well_formed() -> None:
    names = [ds.name for ds in list_datasets()]
    assert len(names) == len(set(names)) >= 13
    for ds in list_datasets():
        assert ds.license.strip() and ds.description.strip() and "\n" not in ds.description, ds.name
        for file in ds.files:
            assert SHA.fullmatch(file.sha256) and file.bytes > 0, file.path
            assert file.url.startswith("https://"), file.url
        for collection in ds.collections:
            assert SHA.fullmatch(collection.index_sha256), collection.path
            assert collection.index_url.startswith(INDEX_URL_BASE), collection.index_url
            assert collection.n_files > 0 and collection.bytes > 0


def test_invalid_entries_are_rejected() -> None:
    good = "0" * 64
    with pytest.raises(DataError, match="64 lowercase hex"):
        DataFile("a/b.csv", "abc", 1, "https://x/y")
    with pytest.raises(DataError, match="https://"):
        DataFile("a/b.csv", good, 1, "http://x/y")
    with pytest.raises(DataError, match="relative path"):
        DataFile("../b.csv", good, 1, "https://x/y")
    with pytest.raises(DataError, match="unknown convert"):
        DataFile("a/b.csv", good, 1, "https://x/y", convert="magic")
    with pytest.raises(DataError, match="license"):
        Dataset("x", "d", " ", files=(DataFile("a", good, 1, "https://x/y"),))


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'nope'; valid names: .*etth1"):
        get_dataset("nope")


# ---------------------------------------------------------------- shared data


@needs_shared
@pytest.mark.parametrize("name", [ds.name for ds in list_datasets()])
def test_verify_passes_on_shared_data(name: str) -> None:
    report = verify(name, SHARED)
    assert report.passed, report.problems()[:5]
    assert len(report.ok) == get_dataset(name).n_files + len(get_dataset(name).collections)


@needs_shared
def test_registry_covers_every_shared_file() -> None:
    registered: set[str] = set()
    for ds in list_datasets():
        registered |= {f.path for f in ds.files}
        for collection in ds.collections:
            registered.add(collection.index.path)
            registered |= {f.path for f in read_index(collection, SHARED / collection.index.path)}
    on_disk = {p.relative_to(SHARED).as_posix() for p in SHARED.rglob("*") if p.is_file()}
    assert on_disk - {"MANIFEST.md"} == registered


# ---------------------------------------------------------------- verify and require


@needs_shared
def test_flipped_byte_is_reported_corrupt(tmp_path: Path) -> None:
    copy_dataset("etth1", tmp_path)
    bad = tmp_path / "timeseries/ETTh1.csv"
    flip_byte(bad)
    report = verify("etth1", tmp_path)
    assert not report.passed
    assert [p for p, _ in report.corrupt] == [bad]
    assert "sha256 mismatch" in report.corrupt[0][1]
    assert len(report.ok) == 2 and not report.missing
    assert verify("etth1", tmp_path, check_hash=False).passed  # same size: only sha256 notices


@needs_shared
def test_truncated_file_is_a_size_mismatch(tmp_path: Path) -> None:
    copy_dataset("ienhancer", tmp_path)
    bad = tmp_path / "genomics/ienhancer/non.ind.txt"
    bad.write_bytes(bad.read_bytes()[:-1])
    report = verify("ienhancer", tmp_path, check_hash=False)
    assert [p for p, _ in report.corrupt] == [bad]
    assert report.corrupt[0][1] == "size mismatch: 52139 bytes, expected 52140"


@needs_shared
def test_missing_file_is_reported_missing(tmp_path: Path) -> None:
    copy_dataset("etth1", tmp_path)
    (tmp_path / "timeseries/ETDataset_README.md").unlink()
    report = verify("etth1", tmp_path)
    assert report.missing == [tmp_path / "timeseries/ETDataset_README.md"]
    assert not report.corrupt and not report.passed


def test_collection_verify_ok_and_corrupt_member(tmp_path: Path) -> None:
    ds = make_collection(tmp_path)
    report = verify(ds, tmp_path)
    assert report.passed and len(report.ok) == 4  # 3 files + FILES.tsv
    flip_byte(tmp_path / "synthetic/items/sub/b.bin", offset=3)
    report = verify(ds, tmp_path)
    assert [p for p, _ in report.corrupt] == [tmp_path / "synthetic/items/sub/b.bin"]
    assert "sha256 mismatch" in report.corrupt[0][1]


def test_collection_with_missing_member_or_index(tmp_path: Path) -> None:
    ds = make_collection(tmp_path)
    (tmp_path / "synthetic/items/c.txt").unlink()
    assert verify(ds, tmp_path).missing == [tmp_path / "synthetic/items/c.txt"]
    (tmp_path / "synthetic/items/FILES.tsv").unlink()
    report = verify(ds, tmp_path)
    assert report.missing == [tmp_path / "synthetic/items/FILES.tsv"]
    assert report.unchecked == [(tmp_path / "synthetic/items", "index missing: its 3 listed files were not checked")]


def test_collection_with_corrupt_index(tmp_path: Path) -> None:
    ds = make_collection(tmp_path)
    flip_byte(tmp_path / "synthetic/items/FILES.tsv", offset=60)
    report = verify(ds, tmp_path, check_hash=False)  # the index is always hashed
    assert [p for p, _ in report.corrupt] == [tmp_path / "synthetic/items/FILES.tsv"]
    assert report.unchecked and "index corrupt" in report.unchecked[0][1]


def test_require(tmp_path: Path) -> None:
    ds = make_collection(tmp_path)
    assert require(ds, tmp_path) == tmp_path
    flip_byte(tmp_path / "synthetic/items/a.txt", offset=0)
    assert require(ds, tmp_path) == tmp_path  # size only by default
    with pytest.raises(CorruptDataError, match=r"'synthetic' has 1 corrupt file.*a\.txt.*longseq data download"):
        require(ds, tmp_path, check_hash=True)
    (tmp_path / "synthetic/items/c.txt").unlink()
    with pytest.raises(MissingDataError) as info:
        require(ds, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "c.txt" in message
    assert f"longseq data download synthetic --root {tmp_path}" in message and "by hand" in message


# ---------------------------------------------------------------- root


def test_resolve_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path))
    assert resolve_root() == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_root(other) == other
    monkeypatch.delenv("LONGSEQ_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_root() == tmp_path / "home/.cache/longseq"  # need not exist yet


def test_resolve_root_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"data root /x/nowhere does not exist \(from --root\); expected a folder"):
        resolve_root("/x/nowhere", origin="--root")
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"\(from \$LONGSEQ_DATA\)"):
        resolve_root()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        resolve_root(tmp_path / "file")


# ---------------------------------------------------------------- download


def plain_dataset(data: bytes, url: str = "https://example.invalid/x.csv") -> Dataset:
    """A one-file dataset pinned to ``data``."""
    file = DataFile("dl/x.csv", sha256(data), len(data), url)
    return Dataset("dl", "download test", "CC0-1.0", files=(file,))


def test_download_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"date,OT\n2020-01-01,1.0\n"
    web = FakeWeb({"https://example.invalid/x.csv": data})
    monkeypatch.setattr(download_module, "_urlopen", web)
    report = download(plain_dataset(data), tmp_path, progress=False)
    assert report.fetched == [tmp_path / "dl/x.csv"] and not report.skipped
    assert (tmp_path / "dl/x.csv").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["x.csv"]  # no temp file left
    report = download(plain_dataset(data), tmp_path, progress=False)  # second run: nothing fetched
    assert report.skipped == [tmp_path / "dl/x.csv"] and len(web.calls) == 1


def test_download_corrupt_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "_urlopen", FakeWeb({"https://example.invalid/x.csv": b"tampered"}))
    with pytest.raises(CorruptDataError, match=r"https://example\.invalid/x\.csv gave sha256"):
        download(plain_dataset(b"original"), tmp_path, progress=False)
    assert not (tmp_path / "dl/x.csv").exists()
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_unreachable_names_url_and_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "_urlopen", FakeWeb({}))
    with pytest.raises(DataError) as info:
        download(plain_dataset(b"x", "https://example.invalid/gone.csv"), tmp_path, progress=False)
    message = str(info.value)
    assert "https://example.invalid/gone.csv" in message and str(tmp_path / "dl/x.csv") in message
    assert "\n" not in message and not (tmp_path / "dl/x.csv").exists()


def test_real_opener_is_blocked_and_reported(tmp_path: Path, network_attempts: list[object]) -> None:
    with pytest.raises(DataError, match=r"could not download https://example\.invalid/x\.csv"):
        download(plain_dataset(b"x"), tmp_path, progress=False)
    assert network_attempts, "the real opener should have been stopped by the fixture"
    network_attempts.clear()


def test_download_never_overwrites_without_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"good bytes"
    monkeypatch.setattr(download_module, "_urlopen", FakeWeb({"https://example.invalid/x.csv": data}))
    target = tmp_path / "dl/x.csv"
    target.parent.mkdir()
    target.write_bytes(b"local edit")
    with pytest.raises(DataError, match="not overwriting.*--force"):
        download(plain_dataset(data), tmp_path, progress=False)
    assert target.read_bytes() == b"local edit"
    download(plain_dataset(data), tmp_path, force=True, progress=False)
    assert target.read_bytes() == data


def test_download_collection_and_zip_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staged = tmp_path / "staged"
    ds = make_collection(staged)
    collection = ds.collections[0]
    pages = {collection.index_url: (staged / collection.index.path).read_bytes()}
    for file in read_index(collection, staged / collection.index.path):
        pages[file.url] = (staged / file.path).read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inner/data.csv", b"a,b\n1,2\n")
    pages["https://example.invalid/bundle.zip"] = archive.getvalue()
    member = DataFile(
        "z/data.csv", sha256(b"a,b\n1,2\n"), 8, "https://example.invalid/bundle.zip", member="inner/data.csv"
    )
    ds = Dataset("dl", "download test", "CC0-1.0", files=(member,), collections=ds.collections)
    monkeypatch.setattr(download_module, "_urlopen", FakeWeb(pages))
    root = tmp_path / "root"
    root.mkdir()  # an explicit root must exist, also for download
    report = download(ds, root, progress=False, workers=4)
    assert len(report.fetched) == 1 + 1 + 3
    assert verify(ds, root).passed
    assert pages["https://raw.githubusercontent.com/example/items/" + "0" * 40 + "/src/sub/b.bin"] == bytes(range(256))


def test_converted_download_mismatch_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = DataFile("c/out.csv", "0" * 64, 5, "https://example.invalid/esc50.csv", convert="esc50_fold4_csv")
    source = b"filename,fold\n1-1.wav,1\n4-2.wav,4\n"
    monkeypatch.setattr(download_module, "_urlopen", FakeWeb({file.url: source}))
    ds = Dataset("conv", "conversion test", "CC0-1.0", files=(file,))
    with pytest.raises(CorruptDataError, match=r"conversion 'esc50_fold4_csv'.*place the staged copy by hand"):
        download(ds, tmp_path, progress=False)
    assert list((tmp_path / "c").iterdir()) == []


@needs_shared
def test_esc50_fold4_csv_conversion_reproduces_staged_file() -> None:
    ds = get_dataset("esc50_fold4_16k")
    source, derived = ds.files[0], ds.files[1]
    assert derived.convert == "esc50_fold4_csv" and derived.url == source.url
    out = convert_bytes("esc50_fold4_csv", (SHARED / source.path).read_bytes())
    assert sha256(out) == derived.sha256


@needs_shared
@pytest.mark.skipif(shutil.which("gzip") is None, reason="GNU gzip not on PATH")
def test_gzip_download_reproduces_staged_bvh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    collection = get_dataset("bandai_namco_motion").collections[0]
    assert collection.convert == "gzip"
    file = read_index(collection, SHARED / collection.index.path)[0]
    source = gzip.decompress((SHARED / file.path).read_bytes())
    monkeypatch.setattr(download_module, "_urlopen", FakeWeb({file.url: source}))
    download(Dataset("bvh", "one bvh", "CC BY-NC 4.0", files=(file,)), tmp_path, progress=False)
    assert (tmp_path / file.path).read_bytes() == (SHARED / file.path).read_bytes()


def test_missing_optional_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "soundfile", None)  # makes `import soundfile` raise ImportError
    with pytest.raises(DataError, match=r"'wav_to_flac' needs the optional package 'soundfile' \(pip install"):
        convert_bytes("wav_to_flac", b"RIFF")


def test_download_checks_optional_package_before_fetching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "soundfile", None)
    file = DataFile("a/x.flac", "0" * 64, 10, "https://example.invalid/x.wav", convert="wav_to_flac")
    web = FakeWeb({file.url: b"RIFF"})
    monkeypatch.setattr(download_module, "_urlopen", web)
    with pytest.raises(DataError, match="pip install soundfile"):
        download(Dataset("flac", "flac test", "CC0-1.0", files=(file,)), tmp_path, progress=False)
    assert web.calls == []


# ---------------------------------------------------------------- CLI


@needs_shared
def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["data", "list", "--root", str(SHARED)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^etth1\s+3\s+2\.6 MB\s+present\s+CC BY-ND 4\.0$", out, re.M), out
    assert len(out.splitlines()) == 2 + len(list_datasets())


@needs_shared
def test_cli_verify_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["data", "verify", "etth1", "--root", str(SHARED)]) == 0
    assert capsys.readouterr().out == "OK etth1 (3 files)\n"


def test_cli_unknown_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["data", "verify", "nope", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("longseq data: error: unknown dataset 'nope'; valid names: etth1, ettm1")
    assert err.count("\n") == 1


def test_cli_bad_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for command in (["list"], ["verify", "etth1"], ["download", "etth1"]):
        assert cli.main(["data", *command, "--root", str(missing)]) == 2
        err = capsys.readouterr().err
        assert err == f"longseq data: error: data root {missing} does not exist (from --root); " + (
            "expected a folder holding e.g. timeseries/ETTh1.csv\n"
        )


@needs_shared
def test_cli_verify_corrupt_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    copy_dataset("etth1", tmp_path)
    flip_byte(tmp_path / "timeseries/ETTh1.csv")
    assert cli.main(["data", "verify", "etth1", "--root", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("FAILED etth1: 0 missing, 1 corrupt")
    assert f"corrupt: {tmp_path / 'timeseries/ETTh1.csv'} (sha256 mismatch" in captured.out
    assert "longseq data download NAME" in captured.err


@needs_shared
def test_cli_download_then_verify(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = {f.url: (SHARED / f.path).read_bytes() for f in get_dataset("etth1").files}
    monkeypatch.setattr(download_module, "_urlopen", FakeWeb(pages))
    argv = ["data", "download", "etth1", "--root", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == f"OK etth1: 3 file(s) fetched, 0 already present, under {tmp_path}\n"
    assert cli.main(["data", "verify", "etth1", "--root", str(tmp_path)]) == 0
    assert cli.main(argv) == 0
    assert "0 file(s) fetched, 3 already present" in capsys.readouterr().out


def test_cli_download_unreachable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_module, "_urlopen", FakeWeb({}))
    assert cli.main(["data", "download", "weather", "--root", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("longseq data: error: weather: could not download https://raw.githubusercontent.com/")
    assert str(tmp_path / "timeseries/weather.csv.gz") in err and err.count("\n") == 1
