"""CPU checks of the flash attention benchmark's own logic (it runs once, unattended, on the GPU):
FLOP counts, the case list, the targets summary and the chart. Nothing here times anything."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level folder, not part of the installed package
    sys.path.insert(0, str(REPO))

fa = importlib.import_module("benchmarks.flash_attn")
# Triton 3.6's interpreter turns 1-element arrays into loop bounds with a NumPy deprecation warning.
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")
common = importlib.import_module("benchmarks.common")


def test_flops_follow_flash_attn_formula():
    p = fa.Problem(B=4, L=4096, H=16, D=128, causal=False)
    assert p.flops("fwd") == 4 * 4 * 4096**2 * 16 * 128
    causal = fa.Problem(B=4, L=4096, H=16, D=128, causal=True)
    assert causal.flops("fwd") == p.flops("fwd") / 2
    assert causal.flops("fwd+bwd") == 3.5 * causal.flops("fwd")  # bwd = 2.5 x fwd


def test_window_and_document_pairs():
    win = fa.Problem(1, 4096, 16, 128, True, window=1024)
    assert win.pairs() == sum(min(i + 1, 1024) for i in range(4096))
    docs = fa.Problem(1, 16384, 16, 128, True, docs=8)
    lens = docs.doc_lengths()
    assert len(lens) == 8 and sum(lens) == 16384 and min(lens) >= 64 and all(n % 64 == 0 for n in lens)
    assert docs.doc_lengths() == lens  # seeded
    assert docs.pairs() == sum(n * (n + 1) / 2 for n in lens)


def test_cases_cover_the_issue_and_are_unique():
    cases = fa._cases(quick=False)
    shapes = [tuple(sorted(p.shape.items())) for p, _, _ in cases]
    assert len(shapes) == len(set(shapes))
    grid = [p for p, _, _ in cases if "window" not in p.shape and "docs" not in p.shape and p.B * p.L == fa.TOKENS]
    assert {(p.L, p.D, p.causal) for p in grid} == {
        (L, D, c) for L in fa.LENGTHS for D in fa.HEADDIMS for c in (True, False)
    }
    assert all(p.H * p.D == fa.HIDDEN for p in grid)
    windows = [p for p, _, _ in cases if "window" in p.shape]
    assert sorted(p.L for p in windows) == list(fa.WINDOW_LENGTHS)
    full_64k = fa.Problem(1, 65536, 16, 128, True).shape
    assert any(p.shape == full_64k for p, _, _ in cases), "the window target needs full causal at 64K"
    assert any("docs" in p.shape for p, _, _ in cases)
    assert cases[0][0].D == 128 and cases[0][0].causal  # the targets come first (the budget cuts the tail)


def _record(name, p, pass_, ms):
    return common.Record(fa.TOPIC, name, p.shape, "bfloat16", pass_, ms, None, p.flops(pass_))


def test_targets_summary_reports_met_and_missed():
    recs = []
    for L in (4096, 8192, 16384):
        p = fa.Problem(fa.TOKENS // L, L, 16, 128, True)
        for pass_ in fa.PASSES:
            recs.append(_record(fa.OURS, p, pass_, 1.0))
            recs.append(_record(fa.FLEX, p, pass_, 1.2))  # ours 1.2x faster: met
            recs.append(_record(fa.FLASH, p, pass_, 1.1))  # 1.1x < 1.15: missed
            recs.append(_record(fa.CUDNN, p, pass_, 0.82))  # 0.82x >= 0.8 but < 0.85 for fwd
    for r in recs:
        if r.name == fa.OURS:
            r.extra["correct"] = True
    win = fa.Problem(1, 65536, 16, 128, True, window=1024)
    full = fa.Problem(1, 65536, 16, 128, True)
    for pass_ in fa.PASSES:
        recs += [_record(fa.OURS, win, pass_, 1.0), _record(fa.OURS, full, pass_, 30.0)]
        recs[-1].extra["correct"] = recs[-2].extra["correct"] = True
    t = fa.summarize_targets(recs)
    assert t["fwd+bwd vs flex"]["met"] and t["fwd+bwd vs flex"]["min"] == pytest.approx(1.2)
    assert not t["fwd+bwd vs sdpa_flash"]["met"]
    assert t["fwd+bwd vs sdpa_cudnn"]["met"] and not t["fwd vs sdpa_cudnn"]["met"]
    assert t["window_1K_over_full_causal_at_64K"]["met"]
    assert t["correct"] and not t["all_met"]


def test_chart_is_written(tmp_path):
    recs = []
    for D in fa.HEADDIMS:
        for L in (1024, 4096):
            for causal in (True, False):
                p = fa.Problem(fa.TOKENS // L, L, fa.HIDDEN // D, D, causal)
                for pass_ in fa.PASSES:
                    recs += [_record(n, p, pass_, 1.0 + i / 10) for i, n in enumerate([fa.OURS, *fa.BASELINES])]
    for p in (fa.Problem(1, 16384, 16, 128, True, window=1024), fa.Problem(1, 16384, 16, 128, True, docs=8)):
        for pass_ in fa.PASSES:
            recs += [_record(fa.OURS, p, pass_, 1.0), _record(fa.FLEX, p, pass_, 1.5)]
    device = {"gpu_name": "NVIDIA H100 80GB HBM3", "slug": "h100", "date_utc": "2025-01-01T00:00:00+00:00"}
    extra = {"targets": fa.summarize_targets(recs)}
    path = common.write_results(
        fa.TOPIC, recs, baselines=fa.BASELINES, ours=fa.OURS, extra=extra, out_dir=tmp_path, device=device
    )
    png = fa.plot(path)
    assert png.exists() and png.stat().st_size > 10_000
    assert common.plot_results(path).exists()


def _reference_bhld(p):
    """The reference in the baselines' (B, H, L, D) layout, with the problem's mask."""
    from longseq.kernels.flash_attn import attention_ref

    def op(q, k, v):
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
        if p.docs:
            cu = torch.tensor([0, *p.doc_lengths()]).cumsum(0).to(torch.int32)
            out = attention_ref(q[0], k[0], v[0], causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu)[0][None]
        else:
            window = (p.window - 1, 0) if p.window > 0 else (-1, -1)
            out = attention_ref(q, k, v, causal=p.causal, window_size=window)[0]
        return out.transpose(1, 2)

    return op


@pytest.mark.parametrize(
    "p",
    [
        fa.Problem(2, 48, 2, 16, True),
        fa.Problem(1, 80, 2, 16, False),
        fa.Problem(1, 96, 2, 16, True, window=20),
        fa.Problem(1, 512, 1, 16, True, docs=3),
    ],
    ids=lambda p: p.label.replace(", ", "-"),
)
def test_correctness_check_and_steps_on_cpu(p):
    """The benchmark's own check (layouts, transposes, gradients) and timed steps, run on the CPU
    interpreter against the reference: a layout slip would otherwise only show on the device."""
    from longseq.kernels._common import interpreting

    if not interpreting():
        pytest.skip("needs the Triton interpreter (CPU)")
    t = fa.make_inputs(p, device="cpu", dtype=torch.float32)
    for deterministic in (False, True):
        verdict = fa.check(fa.ours_op(p, deterministic, device="cpu"), _reference_bhld(p), t)
        assert verdict["correct"] and verdict["rel_err"] < 1e-4, verdict
    out = fa.step(fa.ours_op(p, device="cpu"), "fwd", t["blhd"])()
    assert out.shape == (p.B, p.L, p.H, p.D) and not out.requires_grad
    grads = fa.step(fa.ours_op(p, device="cpu"), "fwd+bwd", t["blhd"])()
    assert len(grads) == 3 and all(g.shape == (p.B, p.L, p.H, p.D) for g in grads)
