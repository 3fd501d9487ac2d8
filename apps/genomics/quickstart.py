"""``longseq-genomics quickstart``: the project's demo (``make demo``), on CPU in a few minutes.

1. makes sure the E. coli K-12 reference is under the data root (downloads it, with a progress bar,
   when it is missing and ``--no-download`` is not given);
2. pretrains a tiny HyenaDNA on E. coli windows with the shipped ``demo.yaml`` (``fit``);
3. scores a FASTA (default: three synthetic sequences shipped in ``apps/genomics/examples/demo.fa``)
   with the trained model (``score``) and prints bits/base per sequence.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from longseq.core.data import MissingDataError, download, require, resolve_root

EXAMPLE_FASTA = Path(__file__).resolve().parent / "examples" / "demo.fa"


def ensure_ecoli(root: str | None, allow_download: bool) -> Path:
    """The data root holding ``ecoli_k12``; downloads it when missing and allowed."""
    try:
        return require("ecoli_k12", root)
    except MissingDataError:
        if not allow_download:
            raise
    base = resolve_root(root)
    print(f"E. coli K-12 reference not found under {base}: downloading it (about 1.4 MB)")
    download("ecoli_k12", base)
    return base


def print_summary(path: Path) -> None:
    """Print the per-sequence bits/base of a ``score`` summary file."""
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    print(f"\n{'sequence':<20} {'length':>7} {'bits/base':>10}")
    for row in rows:
        print(f"{row['seq_id']:<20} {row['length']:>7} {float(row['bits_per_base']):>10.3f}")
    print("(2 bits/base = no better than guessing; the demo model trains for a minute, so expect ~1.9-2.0)")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the quickstart: download if needed, pretrain the demo model, score a FASTA."""
    from longseq.apps.genomics.cli import GenomicsCLI, config_path, run_pipeline

    parser = argparse.ArgumentParser(prog="longseq-genomics quickstart", description=__doc__)
    parser.add_argument("--root", default=None, help="data root (default: $LONGSEQ_DATA or ~/.cache/longseq)")
    parser.add_argument("--out", default="runs/demo", help="run folder (checkpoints, logs, scores)")
    parser.add_argument("--fasta", default=str(EXAMPLE_FASTA), help="FASTA to score after training")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    args = parser.parse_args(list(argv) if argv is not None else None)

    root = ensure_ecoli(args.root, not args.no_download)
    out = Path(args.out)
    GenomicsCLI(
        args=[
            "fit",
            "--config",
            str(config_path("demo.yaml")),
            f"--data.init_args.root={root}",
            f"--trainer.default_root_dir={out}",
            f"--trainer.logger.init_args.save_dir={out}",
        ]
    )
    written = run_pipeline(
        ["score", "--checkpoint", str(out / "pretrained"), "--fasta", args.fasta, "--out", str(out / "scores" / "demo")]
    )
    print_summary(written["summary"])
