"""Re-render a result JSON's markdown table and chart from its records, optionally with another baseline list
(e.g. a variant recorded in the run but not listed as a baseline when it ran). Times are never changed.

    python -m benchmarks.render benchmarks/results/fftconv-h200.json --baselines torch_fft,longseq_kernels
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import plot_results, write_payload


def rerender(json_path: Path, baselines: Sequence[str] | None = None) -> None:
    """Recompute ratios and summary of ``json_path`` (with ``baselines`` if given); rewrite it, its .md and .png."""
    payload = json.loads(json_path.read_text())
    if baselines is not None:
        known = {r["name"] for r in payload["records"]}
        missing = [b for b in baselines if b not in known]
        if missing:
            raise ValueError(f"baselines {missing} have no records in {json_path} (names there: {sorted(known)})")
        payload["baselines"] = list(baselines)
    write_payload(payload, json_path)
    plot_results(json_path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path)
    parser.add_argument("--baselines", type=lambda v: v.split(","), default=None, help="comma-separated names")
    args = parser.parse_args(argv)
    rerender(args.json, args.baselines)


if __name__ == "__main__":
    main()
