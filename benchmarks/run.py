"""Run benchmark topics and write their results: ``python -m benchmarks.run TOPIC [TOPIC...]``.

A topic is a module ``benchmarks/<topic>.py`` defining ``run(quick: bool) -> (records, meta)``, where
``records`` is a list of :class:`benchmarks.common.Record` and ``meta`` a dict with ``ours`` (variant
name), ``baselines`` (variant names) and optionally ``extra`` (anything JSON-serialisable). For each
topic this writes ``<out>/<topic>-<device>.json``, ``.md`` and ``.png`` and prints the table.

Examples::

    python -m benchmarks.run --list
    python -m benchmarks.run rmsnorm --quick
    python -m benchmarks.run rmsnorm --out /tmp/bench      # or LONGSEQ_BENCH_OUT=/tmp/bench
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def _defines_run(path: Path) -> bool:
    """Whether a module defines a top-level ``run`` function (read with ``ast``, not imported)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body)


def list_topics() -> list[str]:
    """Names of the benchmark topics: modules in ``benchmarks/`` that define ``run``."""
    return [p.stem for p in sorted(BENCH_DIR.glob("*.py")) if not p.stem.startswith("_") and _defines_run(p)]


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser of ``python -m benchmarks.run``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark longseq kernels against PyTorch baselines on the current GPU.",
    )
    parser.add_argument("topics", nargs="*", metavar="TOPIC", help="benchmark topics to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the available topics and exit")
    parser.add_argument("--quick", action="store_true", help="one small shape per topic (smoke test)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $LONGSEQ_BENCH_OUT or benchmarks/results)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    return parser


def run_topic(topic: str, *, quick: bool, out: Path | None, plot: bool) -> Path:
    """Run one topic, write its JSON/markdown (and chart) and return the JSON path."""
    from benchmarks.common import plot_results, write_results

    module = importlib.import_module(f"benchmarks.{topic}")
    records, meta = module.run(quick=quick)
    json_path = write_results(
        topic,
        records,
        baselines=meta["baselines"],
        ours=meta["ours"],
        extra=meta.get("extra", {}),
        out_dir=out,
    )
    print(f"wrote {json_path} and {json_path.with_suffix('.md').name}")
    if plot:
        print(f"wrote {plot_results(json_path)}")
    return json_path


def _require_gpu(parser: argparse.ArgumentParser) -> None:
    """Exit with a one-line message (status 1) when there is no CUDA GPU to measure."""
    from benchmarks.common import require_cuda

    try:
        require_cuda()
    except RuntimeError as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status (argument errors exit with status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    topics = list_topics()
    if args.list:
        print("\n".join(topics))
        return 0
    if not args.topics:
        parser.error(f"give at least one topic; valid topics: {', '.join(topics)}")
    unknown = [t for t in args.topics if t not in topics]
    if unknown:
        parser.error(f"unknown topic(s): {', '.join(unknown)}; valid topics: {', '.join(topics)}")
    if str(BENCH_DIR.parent) not in sys.path:  # run as a script rather than with -m
        sys.path.insert(0, str(BENCH_DIR.parent))
    _require_gpu(parser)
    for topic in args.topics:
        run_topic(topic, quick=args.quick, out=args.out, plot=not args.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
