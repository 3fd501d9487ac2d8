"""Order-k Markov baseline on E. coli K-12: bits per base on the held-out last 10% of the genome.

The split is the one of ``GenomeLMDataModule`` (the last ``round(0.1 * n)`` bases held out). The order
k and the smoothing alpha are chosen on a validation part carved from the training region (its last
1/9, about 10% of the genome); the chosen model is refitted on the whole training region and scored on
the held-out 10%. Every order's held-out score is reported as well. Writes
``benchmarks/results/genomics_markov-cpu.json``.

    python scripts/genomics_markov_baseline.py [--root DATA_ROOT] [--max-order 11]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from longseq.apps.genomics.markov import MarkovModel, encode_acgt, select_order
from longseq.apps.genomics.sources import ECOLI_K12, load_ecoli_k12

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "genomics_markov-cpu.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root (default: $LONGSEQ_DATA, then ~/.cache/longseq)")
    parser.add_argument("--max-order", type=int, default=11)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    began = time.perf_counter()
    records = load_ecoli_k12(args.root, soft_mask="upper").records
    train, inner_train, inner_val, test = [], [], [], []
    for rec in records:
        codes = encode_acgt(rec.seq)
        n = len(codes)
        boundary = n - round(n * args.val_fraction)  # GenomeWindowDataset's split
        inner = boundary - round(boundary / 9)
        train.append(codes[:boundary])
        inner_train.append(codes[:inner])
        inner_val.append(codes[inner:boundary])
        test.append(codes[boundary:])
    alphas = (0.01, 0.1, 1.0)
    grid = select_order(inner_train, inner_val, range(args.max_order + 1), alphas)
    best = min(grid, key=lambda r: r["val_bits_per_base"])
    per_order = []
    for k in range(args.max_order + 1):
        row = min((r for r in grid if r["order"] == k), key=lambda r: r["val_bits_per_base"])
        model = MarkovModel(k, row["alpha"]).fit(train)
        per_order.append({**row, "test_bits_per_base": model.bits_per_base(test)})
    final = MarkovModel(best["order"], best["alpha"]).fit(train)
    total, count = final.score(test)
    result = {
        "benchmark": "genomics_markov",
        "dataset": f"E. coli K-12 MG1655 ({ECOLI_K12})",
        "split": f"held-out last {args.val_fraction:.0%} of each record; k and alpha chosen on the last 1/9 of the training region",
        "best": {"order": best["order"], "alpha": best["alpha"], "val_bits_per_base": best["val_bits_per_base"]},
        "test_bits_per_base": total / count,
        "test_scored_bases": count,
        "train_bases": int(sum(len(t) for t in train)),
        "per_order": per_order,
        "alphas": list(alphas),
        "device": f"CPU ({platform.processor() or platform.machine()})",
        "seconds": round(time.perf_counter() - began, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'k':>3} {'alpha':>6} {'val bpb':>9} {'test bpb':>9}")
    for row in per_order:
        print(f"{row['order']:>3} {row['alpha']:>6} {row['val_bits_per_base']:9.4f} {row['test_bits_per_base']:9.4f}")
    print(
        f"best k={best['order']} alpha={best['alpha']}: test {result['test_bits_per_base']:.4f} bits/base -> {args.out}"
    )


if __name__ == "__main__":
    main()
