"""CPU checks of benchmarks/token_reduction.py: the --smoke run writes JSON + md + PNG with every variant and
ratios against timm; helpers (ToMe lengths, speed-ups, target). Nothing here is a timing assertion."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

tr = importlib.import_module("benchmarks.token_reduction")
bench_run = importlib.import_module("benchmarks.run")
Record = importlib.import_module("benchmarks.common").Record


def test_registered_with_harness():
    assert "token_reduction" in bench_run.list_topics()


def test_smoke_run_writes_results(tmp_path):
    path = tr.main(["--smoke", "--no-compile", "--out", str(tmp_path)])
    assert path == tmp_path / "token_reduction-cpu.json"
    payload = json.loads(path.read_text())
    names = {r["name"] for r in payload["records"]}
    assert names == set(tr.VARIANTS)
    assert payload["ours"] == "tome_r13" and "timm" in payload["baselines"]
    ratio = next(r for r in payload["ratios"] if r["baseline"] == "timm")
    assert ratio["ratio"] == ratio["baseline_ms"] / ratio["ours_ms"]
    extra = payload["extra"]
    rows = {r["variant"]: r for r in extra["throughput"]}
    assert rows["timm"]["speedup_vs_timm"] == 1.0
    # 4 x 4 patches + CLS, 2 blocks: ToMe r=13 clips to half the patches per block (16 -> 8 -> 4)
    assert rows["timm"]["final_tokens"] == 17 and rows["tome_r13"]["final_tokens"] == 1 + 4
    assert rows["evit_0.7"]["final_tokens"] == 1 + 12 + 1  # one pruning block (index 1): ceil(0.7 * 16) + fused
    assert "eager" in extra["target"] and extra["target"]["target"] == 1.8
    prof = extra["tome_profile"]
    assert [b["L"] for b in prof["blocks"]] == [17, 9]
    assert prof["fraction_total"] > 0
    assert prof["fraction_total"] == pytest.approx(prof["fraction_match"] + prof["fraction_merge"])
    assert path.with_suffix(".md").read_text().startswith("# token_reduction")
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tome_lengths_vit_b():
    lengths = tr.tome_lengths(197, 1, 12, 13)
    assert lengths[0] == 197 and lengths[-1] == 197 - 11 * 13
    assert tr.tome_lengths(17, 1, 3, 100) == [17, 9, 5]


def test_speedups_and_target():
    shape = {"model": "vit_b16", "B": 8, "img": 224, "compiled": 0}
    recs = [
        Record(
            "token_reduction", "timm", shape, "bfloat16", "fwd", 2.0, extra={"img_per_s": 4000.0, "final_tokens": 197}
        ),
        Record(
            "token_reduction",
            "tome_r13",
            shape,
            "bfloat16",
            "fwd",
            1.0,
            extra={"img_per_s": 8000.0, "final_tokens": 41},
        ),
    ]
    rows = tr.speedups(recs)
    assert [r["speedup_vs_timm"] for r in rows] == [1.0, 2.0]
    target = tr.target_summary(rows)
    assert target["eager"] == {"speedup": 2.0, "met": True} and "compiled" not in target
