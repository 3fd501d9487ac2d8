"""``longseq data list|verify|download``: the command-line face of the dataset registry.

Exit status: 0 success; 1 data problem (verify found missing or corrupt files, a download failed);
2 usage error (unknown dataset name, bad ``--root``). Errors are one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from longseq.core.data.download import download
from longseq.core.data.errors import DataError
from longseq.core.data.registry import Dataset, get_dataset, list_datasets
from longseq.core.data.root import resolve_root
from longseq.core.data.verify import VerifyReport, verify

__all__ = ["add_parser"]

_PROBLEM_LINES = 10
"""Problems printed per dataset by ``verify`` unless ``--all`` is given."""


def _error(message: str) -> None:
    """Print a one-line error to stderr."""
    print(f"longseq data: error: {message}", file=sys.stderr)


def _count(n: int, noun: str) -> str:
    """``1 file``, ``2 files``, ``2 FILES.tsv indexes``."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun}{'es' if noun.endswith('x') else 's'}"


def _size(nbytes: int) -> str:
    """Format a byte count with a decimal unit, e.g. ``2.6 MB``."""
    value = float(nbytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _setup(args: argparse.Namespace, names: list[str]) -> tuple[Path, list[Dataset]]:
    """Resolve ``--root`` and the dataset names (all datasets when ``names`` is empty).

    Commands pass ``args.root`` on (not the resolved path) so that a default root that does not
    exist yet stays acceptable.
    """
    root = resolve_root(args.root, origin="--root")
    datasets = [get_dataset(name) for name in names] if names else list_datasets()
    return root, datasets


def _status(ds: Dataset, report: VerifyReport) -> str:
    """Summarise a size-only report as ``present``, ``missing`` or ``incomplete (k/N ok)``."""
    if report.passed:
        return "present"
    indexes = {report.root / c.index.path for c in ds.collections}
    good = sum(1 for path in report.ok if path not in indexes)
    return "missing" if good == 0 else f"incomplete ({good}/{ds.n_files} ok)"


def _cmd_list(args: argparse.Namespace) -> int:
    """Print every dataset with its file count, size, presence under the root and license."""
    root, datasets = _setup(args, [])
    rows = [("NAME", "FILES", "SIZE", "STATUS", "LICENSE")]
    for ds in datasets:
        status = _status(ds, verify(ds, args.root, check_hash=False))
        rows.append((ds.name, str(ds.n_files), _size(ds.bytes), status, ds.license))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"data root: {root} (status by existence and size; `longseq data verify` checks sha256)")
    for row in rows:
        *padded, license_text = row  # the license comes last and is not padded
        print("  ".join([*(cell.ljust(width) for cell, width in zip(padded, widths)), license_text]))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Verify the named datasets (all by default); exit 1 when any file is missing or corrupt."""
    root, datasets = _setup(args, args.names)
    failed = 0
    for ds in datasets:
        report = verify(ds, args.root, check_hash=not args.quick)
        if report.passed:
            indexes = f" + {_count(len(ds.collections), 'FILES.tsv index')}" if ds.collections else ""
            print(f"OK {ds.name} ({_count(ds.n_files, 'file')}{indexes})")
            continue
        failed += 1
        print(
            f"FAILED {ds.name}: {len(report.missing)} missing, {len(report.corrupt)} corrupt, "
            f"{len(report.unchecked)} unchecked folder(s) under {root}"
        )
        problems = report.problems()
        shown = problems if args.all else problems[:_PROBLEM_LINES]
        for line in shown:
            print(f"  {line}")
        if len(shown) < len(problems):
            print(f"  ... and {len(problems) - len(shown)} more (use --all to list them)")
    if failed:
        print(
            f"{failed} dataset(s) failed; run `longseq data download NAME --root {root}` "
            "or place the files by hand (see `longseq data list`)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _cmd_download(args: argparse.Namespace) -> int:
    """Download the named datasets into the root; existing correct files are skipped."""
    _, datasets = _setup(args, args.names)
    for ds in datasets:
        try:
            report = download(ds, args.root, force=args.force, progress=not args.no_progress, workers=args.workers)
        except DataError as exc:
            _error(f"{ds.name}: {exc}")
            return 1
        print(
            f"OK {ds.name}: {len(report.fetched)} file(s) fetched, "
            f"{len(report.skipped)} already present, under {report.root}"
        )
    return 0


def _guard(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command so that a :class:`DataError` raised while setting up becomes exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except DataError as exc:
            _error(str(exc))
            return 2

    run.__doc__ = command.__doc__
    return run


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data`` with its ``list``, ``verify`` and ``download`` subcommands; return its parser.

    Each subcommand sets ``func`` on the parsed namespace to a callable returning the exit status.
    """
    parser = subparsers.add_parser(
        "data",
        help="list, verify and download the registered datasets",
        description="List, verify and download the registered datasets (see shared/data/MANIFEST.md).",
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="{list,verify,download}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        help="data root (default: $LONGSEQ_DATA, else ~/.cache/longseq); must exist when given",
    )

    show = commands.add_parser("list", parents=[common], help="show every dataset and whether it is present")
    show.set_defaults(func=_guard(_cmd_list))

    check = commands.add_parser("verify", parents=[common], help="check sizes and sha256 of datasets")
    check.add_argument("names", nargs="*", metavar="NAME", help="datasets to verify (default: all)")
    check.add_argument("--quick", action="store_true", help="check existence and size only, not sha256")
    check.add_argument("--all", action="store_true", help="print every problem, not only the first ten")
    check.set_defaults(func=_guard(_cmd_verify))

    fetch = commands.add_parser("download", parents=[common], help="download datasets from their sources")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="datasets to download")
    fetch.add_argument("--force", action="store_true", help="replace existing files that differ")
    fetch.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    fetch.add_argument("--workers", type=int, default=8, help="parallel downloads per collection (default 8)")
    fetch.set_defaults(func=_guard(_cmd_download))
    return parser
