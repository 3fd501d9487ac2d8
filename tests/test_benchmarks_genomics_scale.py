"""CPU checks of benchmarks/genomics_scale.py: a tiny run of the real training step writes JSON + md + PNG with
every row and the measured ratios; the runner's OOM / time-cap / deadline handling and the quadratic projection
(with fake measurements); the model builders and config validation. No timing assertions."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

gs = importlib.import_module("benchmarks.genomics_scale")
bench_run = importlib.import_module("benchmarks.run")

ROW_FIELDS = {"model", "L", "status", "step_ms", "tokens_per_s", "peak_mem_gib", "loss", "grad_checkpointing"}
TINY = ["--device", "cpu", "--dim", "32", "--depth", "2", "--steps", "1", "--warmup-steps", "1"]


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run Hyena's long convolution through torch.fft on CPU, not the (slow) Triton interpreter."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")


def test_registered_with_harness() -> None:
    assert "genomics_scale" in bench_run.list_topics()


def test_cpu_run_writes_rows_and_ratios(tmp_path: Path) -> None:
    argv = [*TINY, "--lengths", "256", "512", "--models", "hyena", "transformer_sdpa", "transformer_flash"]
    path = gs.main([*argv, "--out", str(tmp_path)])
    assert path == tmp_path / "genomics_scale-cpu.json"
    payload = json.loads(path.read_text())
    extra = payload["extra"]
    rows = {(r["model"], r["L"]): r for r in extra["rows"]}
    assert len(rows) == 6
    for name in ("hyena", "transformer_sdpa"):
        for L in (256, 512):
            row = rows[(name, L)]
            assert row["status"] == "ok", row
            assert set(row) >= ROW_FIELDS
            assert math.isfinite(row["loss"]) and 0.5 < row["loss"] < 5.0  # ~ln(10) at initialisation
            assert row["step_ms"] > 0 and row["tokens_per_s"] == pytest.approx(L / (row["step_ms"] * 1e-3))
            assert row["peak_mem_gib"] is None and row["grad_checkpointing"] is False
    # the Triton flash kernel needs CUDA here: a clear error, strict (no silent fallback), later lengths skipped
    assert rows[("transformer_flash", 256)]["status"].startswith("error: ValueError")
    assert "flash" in rows[("transformer_flash", 256)]["status"]
    assert rows[("transformer_flash", 512)]["status"] == "skipped (after error at L=256)"
    # ratio = transformer_ms / hyena_ms, from the same run, in the speed-up summary and in common's ratios
    sdpa = extra["speedup"]["transformer_sdpa"]
    assert [m["L"] for m in sdpa["measured"]] == [256, 512]
    for m in sdpa["measured"]:
        want = rows[("transformer_sdpa", m["L"])]["step_ms"] / rows[("hyena", m["L"])]["step_ms"]
        assert m["ratio"] == pytest.approx(want)
    assert sdpa["largest_common_L"] == 512 and sdpa["ratio_at_target_L"] == sdpa["measured"][-1]["ratio"]
    assert sdpa["projected_quadratic"] is None  # it ran at the target length: nothing projected
    assert extra["speedup"]["transformer_flash"]["measured"] == []
    common = {r["shape"]["L"]: r["ratio"] for r in payload["ratios"] if r["baseline"] == "transformer_sdpa"}
    assert common == pytest.approx({m["L"]: m["ratio"] for m in sdpa["measured"]})
    assert {r["name"] for r in payload["records"]} == {"hyena", "transformer_sdpa"}
    md = path.with_suffix(".md").read_text()
    assert md.startswith("# genomics_scale") and "## Entries" in md and "measured (transformer ms / hyena ms)" in md
    assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_measure(calls: list[tuple[str, int, int, bool]], oom_from: dict[str, int], ckpt_fits: tuple[str, ...] = ()):
    """A stand-in for one real entry: step time L/100 ms for Hyena, (L/100)^2 ms for transformers; running
    out of memory from ``oom_from[model]`` on, unless checkpointing and the model is in ``ckpt_fits``."""

    def fake(name: str, L: int, cfg, steps: int, checkpointing: bool) -> dict:
        calls.append((name, L, steps, checkpointing))
        if oom_from.get(name, 1 << 40) <= L and not (checkpointing and name in ckpt_fits):
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        ms = L / 100 if name == "hyena" else (L / 100) ** 2
        return {
            "step_ms": ms, "tokens_per_s": L / (ms * 1e-3), "peak_mem_gib": 1.0, "timing": "fake",
            "timed_steps": steps, "loss": 2.3, "loss_finite": True, "params": 1,
        }  # fmt: skip

    return fake


def test_oom_stops_the_model_and_projection_is_kept_apart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int, bool]] = []
    oom_from = {"transformer_sdpa": 512, "hyena": 512}  # hyena fits from 512 on with checkpointing only
    monkeypatch.setattr(gs, "_measure_once", _fake_measure(calls, oom_from, ckpt_fits=("hyena",)))
    cfg = gs.ScaleConfig(lengths=(256, 512, 1024), models=("hyena", "transformer_sdpa"), device="cpu")
    written: list[int] = []
    records, meta = gs.measure(cfg, on_entry=lambda r, m: written.append(len(m["extra"]["rows"])))
    assert written == [1, 2, 3, 4, 5, 6]  # results handed out after every entry
    rows = {(r["model"], r["L"]): r for r in meta["extra"]["rows"]}
    oom = rows[("transformer_sdpa", 512)]
    assert oom["status"] == "oom"
    assert [a["grad_checkpointing"] for a in oom["attempts"]] == [False, True]  # auto: retried with checkpointing
    assert rows[("transformer_sdpa", 1024)]["status"] == "skipped (after oom at L=512)"
    assert ("transformer_sdpa", 1024) not in {(c[0], c[1]) for c in calls}
    assert [a["grad_checkpointing"] for a in rows[("hyena", 512)]["attempts"]] == [False, True]
    assert rows[("hyena", 512)]["status"] == "ok" and rows[("hyena", 512)]["grad_checkpointing"] is True
    assert [c[3] for c in calls if c[:2] == ("hyena", 1024)] == [True]  # starts where the shorter L fitted
    sp = meta["extra"]["speedup"]["transformer_sdpa"]
    assert sp["largest_common_L"] == 256 and sp["ratio_at_largest_common_L"] == pytest.approx(2.56**2 / 2.56)
    assert sp["ratio_at_target_L"] is None  # not measured at 1024: no measured ratio there
    proj = sp["projected_quadratic"]
    assert proj["label"].startswith("projected_quadratic") and proj["from_L"] == 256
    assert proj["transformer_ms_projected_at_target"] == pytest.approx(2.56**2 * 16)
    assert proj["ratio_projected"] == pytest.approx(2.56**2 * 16 / 10.24)
    assert [m["L"] for m in sp["measured"]] == [256]  # the projection never enters the measured list
    assert {(r.name, r.shape["L"]) for r in records} == {("hyena", 256), ("hyena", 512), ("hyena", 1024),
                                                        ("transformer_sdpa", 256)}  # fmt: skip
    path = gs.write(records, meta, out_dir=tmp_path, device={"gpu_name": None, "slug": "cpu"}, quiet=True)
    md = path.with_suffix(".md").read_text()
    assert "Projected, NOT measured" in md and "| oom |" in md
    assert gs.plot_scale(path).read_bytes()[:4] == b"\x89PNG"


def test_time_cap_and_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, int, bool]] = []
    monkeypatch.setattr(gs, "_measure_once", _fake_measure(calls, {}))
    # transformer: 6.55 ms at 256 -> predicted 26.2 ms at 512 (x4: warm-up + 2 steps fit 0.1 s), 105 ms at 1024
    # (warm-up + 1 step = 0.21 s > the 0.1 s cap)
    cfg = gs.ScaleConfig(lengths=(256, 512, 1024), models=("transformer_flash",), device="cpu", entry_cap_s=0.1)
    _, meta = gs.measure(cfg)
    status = [r["status"] for r in meta["extra"]["rows"]]
    assert status[:2] == ["ok", "ok"] and status[2].startswith("skipped (time cap)")
    assert meta["extra"]["rows"][1]["predicted_step_s"] == pytest.approx(0.0065536 * 4)
    assert [c[2] for c in calls] == [3, 2]  # timed steps cut so warm-up + steps fit the cap
    cfg = gs.ScaleConfig(lengths=(256, 512), models=("hyena", "transformer_sdpa"), device="cpu", deadline_s=0)
    records, meta = gs.measure(cfg)
    assert records == [] and all(r["status"].startswith("skipped (deadline)") for r in meta["extra"]["rows"])
    assert len(meta["extra"]["rows"]) == 4


def test_plan_entry() -> None:
    cfg = gs.ScaleConfig(device="cpu", steps=3, warmup_steps=1, entry_cap_s=100.0)
    assert gs.plan_entry(None, cfg, 50.0) == (3, None)
    assert gs.plan_entry(1.0, cfg, 500.0) == (3, None)
    assert gs.plan_entry(30.0, cfg, 500.0) == (2, None)
    steps, why = gs.plan_entry(60.0, cfg, 500.0)
    assert steps == 0 and why.startswith("skipped (time cap)")
    steps, why = gs.plan_entry(30.0, cfg, 40.0)
    assert steps == 0 and why.startswith("skipped (deadline)")
    assert gs.plan_entry(None, cfg, 0.0)[1].startswith("skipped (deadline)")


def test_models_share_size_vocab_and_mlp() -> None:
    from longseq.apps.genomics.tokenizer import DNATokenizer
    from longseq.core.mixers.hyena import HyenaOperator

    cfg = gs.ScaleConfig(device="cpu", dim=32, depth=2, lengths=(128,))
    hyena = gs.build_model("hyena", 128, cfg)
    assert all(isinstance(b.mixer, HyenaOperator) and b.mixer.config.max_len == 128 for b in hyena.backbone.blocks)
    for name, backend in (("transformer_flash", "flash"), ("transformer_sdpa", "sdpa")):
        model = gs.build_model(name, 128, cfg)
        c, h = model.backbone.cfg, hyena.backbone.cfg
        assert (c.dim, c.depth, c.vocab_size, c.mlp, c.mlp_ratio, c.norm) == (h.dim, h.depth, h.vocab_size, h.mlp,
                                                                             h.mlp_ratio, h.norm)  # fmt: skip
        assert c.vocab_size == DNATokenizer.vocab_size and c.dim == 32 and c.depth == 2
        attn = c.mixer_kwargs["attention"]
        assert attn["backend"] == backend and attn["strict_backend"] and attn["causal"]
    ids = gs.random_dna_ids(1000, 0, "cpu")
    assert ids.shape == (1, 1000) and set(ids.unique().tolist()) == {6, 7, 8, 9}  # A C G T


def test_config_and_cli_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gs.parse_length("16K") == 16384 and gs.parse_length("1M") == 2**20 and gs.parse_length("300") == 300
    with pytest.raises(argparse.ArgumentTypeError, match="bad length"):
        gs.parse_length("1G")
    assert gs.ScaleConfig(lengths=(512, 256), device="cpu").lengths == (256, 512)
    for kwargs, match in (
        ({"lengths": (256, 256)}, "distinct"),
        ({"lengths": (1,)}, ">= 2"),
        ({"models": ("mamba",)}, "unknown models"),
        ({"steps": 0}, "steps"),
        ({"grad_checkpointing": "maybe"}, "grad_checkpointing"),
    ):
        with pytest.raises(ValueError, match=match):
            gs.ScaleConfig(device="cpu", **kwargs)
    monkeypatch.setenv("LONGSEQ_ATTN_BACKEND", "math")
    with pytest.raises(ValueError, match="LONGSEQ_ATTN_BACKEND"):
        gs.ScaleConfig(device="cpu")
    assert gs.ScaleConfig(device="cpu", models=("hyena",)).models == ("hyena",)
    with pytest.raises(SystemExit) as bad_length:
        gs.main(["--device", "cpu", "--lengths", "1"])
    assert bad_length.value.code == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as no_gpu:
        gs.main(["--models", "hyena", "--lengths", "256"])
    assert no_gpu.value.code == 1
