"""GPU grid of the flash attention kernels (``gpu`` marker; run with ``make gpu-test``).

At least as wide as flash-attn's own test file: sequence lengths 1..4096 with unequal q/k lengths,
head dims 32..256 (odd ones included), causal x window x ALiBi x GQA x packed x dtype, every
autotuning candidate, the autotuned path, NaN-poisoned outputs, determinism and the decode path.
Autotuning is off except where a test says otherwise, so each kernel variant compiles once; the
variants are sampled so that the file stays within a few minutes on an H100.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_flash_attn import Case, DecodeCase, check_case, check_decode, kernel_forward, make_inputs

from longseq.kernels.flash_attn import flash_attn_with_kvcache, tuning
from longseq.kernels.testing import poison

pytestmark = pytest.mark.gpu

BF16, FP16 = torch.bfloat16, torch.float16


@pytest.fixture(autouse=True)
def _no_autotune(monkeypatch):
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "0")


# flash-attn's test lengths plus the powers of two up to 4096; (Lq, Lk).
SEQLENS = [
    (1, 1), (1, 239), (3, 799), (17, 17), (113, 113), (113, 203), (128, 128), (128, 217), (227, 113), (339, 339),
    (512, 512), (256, 512), (512, 256), (1023, 1024), (1024, 1023), (2048, 2048), (4096, 4096),
]  # fmt: skip


def _lengths_case(lq: int, lk: int, d: int, causal: bool) -> Case:
    """D=64 runs the deterministic backward, D=128 the default one (atomic dQ for keys up to
    ``ATOMIC_MAX_SEQLEN_K``, the two-kernel path beyond), so every backward sees the lengths it serves."""
    big = max(lq, lk) >= 2048
    return Case(
        batch=1 if big else 2, seqlen_q=lq, seqlen_k=lk, nheads=2 if big else 4, nheads_kv=2 if big else 4,
        headdim=d, causal=causal, deterministic=d == 64, dtype=BF16,
    )  # fmt: skip


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("d", [64, 128], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("lq,lk", SEQLENS, ids=lambda x: str(x))
def test_gpu_seqlens(lq, lk, d, causal):
    check_case(_lengths_case(lq, lk, d, causal), "cuda")


FEATURES = {
    "causal-gqa4-fp16": {"causal": True, "nheads": 8, "nheads_kv": 2, "dtype": FP16},
    "window-alibi-det-bf16": {"window": (64, 32), "alibi": "head", "deterministic": True, "dtype": BF16},
    "packed-causal-bf16": {"lens": ((0, 339, 17, 128), (5, 217, 17, 300)), "causal": True, "dtype": BF16},
    "softcap-window-alibi-mqa-fp16": {
        "softcap": 30.0, "window": (-1, 64), "alibi": "batch", "nheads": 4, "nheads_kv": 1, "dtype": FP16,
    },
}  # fmt: skip


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("d", [32, 59, 96, 111, 256], ids=lambda d: f"d{d}")
def test_gpu_headdims_features(d, feature):
    kw = dict(FEATURES[feature])
    shape = {} if "lens" in kw else {"batch": 2, "seqlen_q": 339, "seqlen_k": 217}
    check_case(Case(headdim=d, **shape, **kw), "cuda")


LARGE = [
    Case(seqlen_q=2048, seqlen_k=2048, headdim=128, causal=True, window=(256, -1), dtype=BF16),
    Case(seqlen_q=1024, seqlen_k=1024, headdim=128, window=(512, 512), dtype=BF16),
    Case(batch=2, seqlen_q=1024, seqlen_k=2048, headdim=128, causal=True, alibi="batch", dtype=BF16),
    Case(seqlen_q=1024, seqlen_k=1024, headdim=128, nheads=8, nheads_kv=1, causal=True, dtype=BF16),
    Case(seqlen_q=1024, seqlen_k=1024, headdim=128, nheads=8, nheads_kv=2, causal=True, deterministic=True, dtype=BF16),
    Case(lens=((700, 1, 0, 333, 1500, 64, 90, 2000),) * 2, headdim=128, causal=True, dtype=BF16),
    Case(lens=((100, 900, 5), (1000, 300, 0)), headdim=64, window=(128, 16), dtype=FP16),
    Case(seqlen_q=1024, seqlen_k=512, headdim=128, causal=True, dtype=BF16),
    Case(seqlen_q=1024, seqlen_k=1024, headdim=128, softcap=50.0, causal=True, dtype=FP16),
    Case(batch=2, seqlen_q=300, seqlen_k=257, headdim=64, causal=True, dtype=torch.float32),
]


@pytest.mark.parametrize("case", LARGE, ids=lambda c: c.id)
def test_gpu_large_features(case):
    check_case(case, "cuda")


def _each_config():
    for name in ("fwd", "bwd_dkdv", "bwd_dkdv_atomic", "bwd_dq"):
        for d in (64, 128, 256):
            for cfg in tuning.candidate_configs(name, d, BF16):
                m, n = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
                yield pytest.param(name, d, cfg, id=f"{name}-d{d}-{m}x{n}-w{cfg.num_warps}-s{cfg.num_stages}")


@pytest.mark.parametrize("name,d,cfg", list(_each_config()))
def test_gpu_every_autotune_candidate(name, d, cfg, monkeypatch):
    """Each candidate the autotuner may pick computes the right result (masked and unmasked tiles)."""
    monkeypatch.setitem(tuning.FORCED_CONFIGS, name, cfg)
    det = name in ("bwd_dkdv", "bwd_dq")  # the kernels of the deterministic backward
    check_case(Case(batch=2, seqlen_q=300, seqlen_k=333, headdim=d, causal=True, deterministic=det, dtype=BF16), "cuda")


def test_gpu_autotuned_path_and_no_retuning(monkeypatch):
    """With autotuning on: right results, and a second sequence length reuses the tuned configuration."""
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "1")
    case = Case(batch=2, seqlen_q=512, seqlen_k=512, headdim=128, causal=True, dtype=BF16)  # atomic dQ
    check_case(case, "cuda")
    tuned = [tuning._TUNED[(name, 128, False, 0)] for name in ("fwd", "bwd_dkdv_atomic")]
    n_keys = [len(t.cache) for t in tuned]
    check_case(Case(batch=1, seqlen_q=384, seqlen_k=384, headdim=128, causal=True, dtype=BF16), "cuda")
    assert [len(t.cache) for t in tuned] == n_keys, "a new sequence length must not trigger retuning"
    assert {k[3] for k in tuning._TUNED if k[:3] == ("fwd", 128, False)} == {0}, "384 and 512 share a bucket"
    check_case(replace(case, deterministic=True), "cuda")  # tunes the two deterministic kernels


def test_gpu_writes_every_output(monkeypatch):
    """NaN-poisoned buffers on the GPU: rows without keys, empty sequences and empty splits are written."""
    real_empty, real_empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poison(real_empty_like(*a, **kw)))
    for case in [
        Case(seqlen_q=1000, seqlen_k=700, headdim=128, causal=True, dtype=BF16),
        Case(lens=((0, 513, 7), (300, 0, 900)), headdim=96, window=(100, 0), dtype=FP16),
    ]:
        t = make_inputs(case, "cuda")
        out, lse = kernel_forward(case, t)
        grads = torch.autograd.grad(out.float().sum(), [t["q"], t["k"], t["v"]])
        for name, x in [("out", out), ("lse", lse), ("dq", grads[0]), ("dk", grads[1]), ("dv", grads[2])]:
            assert not x.isnan().any(), f"{case.id}: {name} has unwritten (NaN) entries"
    q = torch.randn(4, 1, 8, 128, device="cuda", dtype=BF16)
    cache = torch.randn(4, 4096, 2, 128, device="cuda", dtype=BF16)
    lens = torch.tensor([0, 1, 4000, 4096], dtype=torch.int32, device="cuda")
    out = flash_attn_with_kvcache(q, cache, cache, cache_seqlens=lens, num_splits=16, causal=True)
    assert not out.isnan().any()


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic-bwd", "deterministic-bwd"])
def test_gpu_forward_is_deterministic_and_backward_when_asked(deterministic):
    """The forward is always bitwise reproducible; the backward with deterministic=True."""
    case = Case(
        batch=2, seqlen_q=2048, seqlen_k=2048, nheads=8, nheads_kv=2, headdim=128, causal=True,
        deterministic=deterministic, dtype=BF16,
    )  # fmt: skip
    t = make_inputs(case, "cuda")
    dout = torch.randn_like(t["q"])
    runs = []
    for _ in range(3):
        out, lse = kernel_forward(case, t)
        grads = torch.autograd.grad(out, [t["q"], t["k"], t["v"]], dout) if deterministic else ()
        runs.append((out, lse, *grads))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


DECODE_GPU = [
    DecodeCase(batch=4, seqlen_q=1, cache_len=8192, nheads=32, nheads_kv=8, headdim=128, new=1, dtype=BF16),
    DecodeCase(batch=2, seqlen_q=4, cache_len=4096, nheads=16, nheads_kv=16, headdim=64, new=4, splits=1, dtype=FP16),
    DecodeCase(batch=3, seqlen_q=16, cache_len=4096, nheads=8, nheads_kv=1, headdim=128, new=16, splits=7, dtype=BF16),
    DecodeCase(batch=2, seqlen_q=1, cache_len=4096, nheads=8, nheads_kv=2, headdim=111, window=(1024, -1), alibi=True, dtype=FP16),
    DecodeCase(batch=2, seqlen_q=8, cache_len=2048, nheads=8, nheads_kv=4, headdim=256, causal=False, softcap=20.0, dtype=BF16),
    DecodeCase(batch=1, seqlen_q=300, cache_len=1024, nheads=4, nheads_kv=2, headdim=64, new=300, dtype=BF16),
]  # fmt: skip


@pytest.mark.parametrize("case", DECODE_GPU, ids=lambda c: c.id)
def test_gpu_kvcache(case):
    check_decode(case, "cuda")
