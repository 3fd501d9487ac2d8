"""Attention benchmark: the ``Attention`` module (bf16, dim 1024, 16 query heads, 4 KV heads, D = 64,
RoPE) on every backend for L = 1K..64K, causal and causal sliding window 1K, plus Informer's
ProbSparse against full (non-causal) attention.

Each case keeps about ``TOKENS`` tokens per step (``B = max(1, TOKENS // L)``) and times "fwd"
(no autograd graph) and "fwd+bwd" (``torch.autograd.grad`` of the output w.r.t. the input and all
weights). Records carry tokens/s and the peak memory of one step above what was allocated before it
(``torch.cuda.max_memory_allocated``). Backends run with ``strict_backend=True``, so a record is
always the backend it names. Every backend is checked against ``math`` at the smallest L first.

Combinations that cannot run are recorded with the reason in ``extra["skipped"]``: a backend that
does not support the call, ``math`` whose scores would not fit, a call predicted to take longer than
``MAX_CALL_S``, out of memory, or the overall ``DEADLINE_S`` (the run fits in ~4 minutes on an H100).
Ratios are ``baseline_ms / ours_ms`` with ours = ``flash`` when the kernel imports, else ``sdpa``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import Record, bench, require_cuda

TOPIC = "attention"
DEVICE = "cuda"
DIM, HEADS, KV_HEADS = 1024, 16, 4
HEAD_DIM = DIM // HEADS
DTYPE = torch.bfloat16
TOKENS = 16384
LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
QUICK_LENGTHS = (1024, 4096)
WINDOW = 1024
MASKS: dict[str, dict[str, Any]] = {
    "causal": dict(causal=True),
    "window1k": dict(causal=True, window=(WINDOW, 0)),
}
BACKENDS = ("flash", "sdpa", "flex", "math")
PASSES = ("fwd", "fwd+bwd")
FACTOR = 5.0  # ProbSparse c
MAX_CALL_S = 3.0  # skip a case whose single call is predicted to take longer
MATH_MEMORY_FRACTION = 0.4  # math's fp32 scores (x3 with softmax and grads) must fit in this share of memory
DEADLINE_S = 220.0
REL_TOL = 3e-2  # max |backend - math| / max |math| at the check length (bf16 rounding ~ 1e-2)
BENCH_KW = dict(warmup=10, rep=40)


def batch_for(L: int) -> int:
    """Batch size keeping about ``TOKENS`` tokens per step."""
    return max(1, TOKENS // L)


def visible_pairs(L: int, causal: bool, window: int | None) -> int:
    """Query-key pairs one sequence attends over (per head): the work of a mask-aware kernel."""
    if not causal:
        return L * L
    w = L - 1 if window is None else min(window, L - 1)
    return (w + 1) * (w + 2) // 2 + (L - w - 1) * (w + 1)


def attention_flops(L: int, B: int, pass_: str, causal: bool, window: int | None) -> float:
    """Attention-core FLOPs (QK^T and PV, 4 B H D pairs forward; backward 2.5x forward), no projections."""
    fwd = 4.0 * B * HEADS * HEAD_DIM * visible_pairs(L, causal, window)
    return fwd if pass_ == "fwd" else 3.5 * fwd


def ours_name() -> str:
    """``flash`` when its kernel imports here, else ``sdpa``."""
    from longseq.core.attention import get_backend

    return "flash" if get_backend("flash").unavailable(torch.device(DEVICE)) is None else "sdpa"


def make_layer(backend: str, **options: Any) -> torch.nn.Module:
    """A seeded ``Attention`` layer in bf16 on the GPU (same weights for every backend)."""
    from longseq.core.attention.layer import Attention

    torch.manual_seed(0)
    layer = Attention(DIM, HEADS, num_kv_heads=KV_HEADS, backend=backend, strict_backend=True, **options)
    return layer.to(device=DEVICE, dtype=DTYPE)


def make_step(layer: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor, pass_: str) -> Callable[[], Any]:
    """The timed callable: forward without a graph, or forward + grads of input and weights."""
    if pass_ == "fwd":
        x_ = x.detach()

        def fwd() -> torch.Tensor:
            with torch.no_grad():
                return layer(x_)

        return fwd
    leaves = [x, *layer.parameters()]
    return lambda: torch.autograd.grad(layer(x), leaves, dy)


def peak_gib(step: Callable[[], Any]) -> float:
    """Peak memory of one call above what was allocated before it, in GiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def check_vs_math(layer: torch.nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """Relative error of ``layer`` against the same weights on ``math`` at L = 1024, B = 1."""
    ref = make_layer("math", **options)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(1, 1024, DIM, device=DEVICE, dtype=DTYPE)
    with torch.no_grad():
        out, want = layer(x).float(), ref(x).float()
    rel = ((out - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
    del ref
    return {"correct": rel <= REL_TOL, "rel_err": rel}


class Budget:
    """The run's deadline and the skip log."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds
        self.skipped: list[dict[str, Any]] = []

    def expired(self) -> bool:
        return time.perf_counter() > self.end

    def skip(self, name: str, case: str, L: int, reason: str) -> None:
        self.skipped.append({"name": name, "case": case, "L": L, "reason": reason})
        print(f"[{TOPIC}] skip {name} {case} L={L}: {reason}", file=sys.stderr)


def _math_fits(L: int, B: int) -> str | None:
    need = 3 * B * HEADS * L * L * 4  # fp32 scores, probabilities and their gradient
    total = torch.cuda.get_device_properties(0).total_memory
    if need > MATH_MEMORY_FRACTION * total:
        return f"math needs ~{need / 2**30:.0f} GiB of fp32 scores (> {MATH_MEMORY_FRACTION:.0%} of GPU memory)"
    return None


def time_pass(
    name: str, layer: torch.nn.Module, L: int, pass_: str, shape: dict[str, int], flops: float | None
) -> Record:
    """Time one pass of ``layer`` on one length (after a warm-up call that compiles / autotunes)."""
    B = shape["B"]
    x = torch.randn(B, L, DIM, device=DEVICE, dtype=DTYPE, requires_grad=True)
    dy = torch.randn(B, L, DIM, device=DEVICE, dtype=DTYPE)
    step = make_step(layer, x, dy, pass_)
    step()
    mem = peak_gib(step)
    ms = bench(step, **BENCH_KW)
    rec = Record(TOPIC, name, dict(shape), str(DTYPE).removeprefix("torch."), pass_, ms, flops=flops)
    rec.extra.update(tokens_per_s=B * L / (ms * 1e-3), peak_mem_gib=mem)
    return rec


def run_group(
    name: str,
    layer: torch.nn.Module,
    case: str,
    shape_of: Callable[[int], dict[str, int]],
    flops_of: Callable[[int, str], float | None],
    lengths: tuple[int, ...],
    budget: Budget,
    extra: dict[str, Any],
    scaling: float,
) -> list[Record]:
    """Every length and pass for one (variant, case). A pass stops growing L at its first failure
    (out of memory, unsupported) or when its next call is predicted to exceed ``MAX_CALL_S``.

    ``scaling`` is how a call's time grows when L doubles at a fixed token count (2 for quadratic
    attention, ~1 for windows and ProbSparse)."""
    records: list[Record] = []
    last_ms: dict[str, float] = {}
    stop: dict[str, str | None] = dict.fromkeys(PASSES)
    for L in lengths:
        shape = shape_of(L)
        for pass_ in PASSES:
            label = f"{case} {pass_}"
            if stop[pass_] is None and budget.expired():
                stop[pass_] = f"run deadline of {DEADLINE_S:.0f} s reached"
            if stop[pass_] is None and name == "math":
                stop[pass_] = _math_fits(L, shape["B"])
            predicted = last_ms.get(pass_, 0.0) * scaling / 1e3
            if stop[pass_] is None and predicted > MAX_CALL_S:
                stop[pass_] = f"predicted {predicted:.1f} s per call > {MAX_CALL_S} s"
            if stop[pass_] is not None:
                budget.skip(name, label, L, stop[pass_])
                continue
            try:
                rec = time_pass(name, layer, L, pass_, shape, flops_of(L, pass_))
            except torch.OutOfMemoryError:
                stop[pass_] = "out of memory"
            except (ValueError, RuntimeError) as exc:  # unsupported, or a backend failing on this shape
                stop[pass_] = f"{type(exc).__name__}: {exc}"
            else:
                rec.extra.update(extra, case=case)
                records.append(rec)
                last_ms[pass_] = rec.ms
            if stop[pass_] is not None:
                budget.skip(name, label, L, stop[pass_])
            torch.cuda.empty_cache()
    return records


def bench_masks(backends: tuple[str, ...], lengths: tuple[int, ...], budget: Budget) -> list[Record]:
    """``backends`` on causal and sliding-window causal attention."""
    records: list[Record] = []
    for case, options in MASKS.items():
        window = options.get("window", (None,))[0]
        for name in backends:
            torch._dynamo.reset()  # fresh compile caches per group: flex stays under the recompile limit
            layer = make_layer(name, **options)
            try:
                extra = check_vs_math(layer, options)
            except (ValueError, RuntimeError) as exc:
                budget.skip(name, case, lengths[0], f"{type(exc).__name__}: {exc}")
                continue
            print(f"[{TOPIC}] {name} {case}: vs math rel err {extra['rel_err']:.1e}", file=sys.stderr)
            records += run_group(
                name,
                layer,
                case,
                lambda L, w=window: {"L": L, "B": batch_for(L), "causal": 1, "window": w or 0},
                lambda L, p, w=window: attention_flops(L, batch_for(L), p, True, w),
                lengths,
                budget,
                extra,
                scaling=1.1 if window else 2.0,
            )
            del layer
    return records


def bench_probsparse(lengths: tuple[int, ...], budget: Budget, full_name: str) -> list[Record]:
    """ProbSparse (factor ``FACTOR``) against full non-causal attention on ``full_name``."""
    records: list[Record] = []
    shape_of = lambda L: {"L": L, "B": batch_for(L), "causal": 0, "window": 0}  # noqa: E731
    torch._dynamo.reset()
    full = make_layer(full_name)
    records += run_group(
        full_name,
        full,
        "full",
        shape_of,
        lambda L, p: attention_flops(L, batch_for(L), p, False, None),
        lengths,
        budget,
        {},
        2.0,
    )
    sparse = make_layer("auto", variant="probsparse", factor=FACTOR)
    sparse.load_state_dict(full.state_dict())
    records += run_group("probsparse", sparse, "full", shape_of, lambda L, p: None, lengths, budget, {}, 1.2)
    return records


def probsparse_speedups(records: list[Record], full_name: str) -> list[dict[str, Any]]:
    """``full_ms / probsparse_ms`` per length and pass (above 1: ProbSparse is faster)."""
    index = {(r.name, r.shape["L"], r.pass_): r for r in records if r.shape.get("causal") == 0}
    out = []
    for (name, L, pass_), rec in sorted(index.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        full = index.get((full_name, L, pass_))
        if name == "probsparse" and full is not None:
            out.append({"L": L, "pass": pass_, "speedup": full.ms / rec.ms, "mem_ratio": _mem_ratio(full, rec)})
    return out


def _mem_ratio(full: Record, sparse: Record) -> float | None:
    """``full peak / ProbSparse peak`` (below 1: ProbSparse needs more memory)."""
    a, b = full.extra.get("peak_mem_gib"), sparse.extra.get("peak_mem_gib")
    return None if not a or not b else a / b


def run(quick: bool) -> tuple[list[Record], dict[str, Any]]:
    """Benchmark every backend, mask and length; returns the records and ``meta``."""
    require_cuda()
    lengths = QUICK_LENGTHS if quick else LENGTHS
    budget = Budget(DEADLINE_S)
    ours = ours_name()
    fused = tuple(b for b in BACKENDS if b != "math")
    records = bench_masks(fused, lengths, budget)
    records += bench_probsparse(lengths, budget, ours)
    records += bench_masks(("math",), lengths, budget)  # last: the slowest and least interesting
    baselines = [b for b in (*BACKENDS, "probsparse") if b != ours]
    extra = {
        "model": {"dim": DIM, "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "positions": "rope"},
        "tokens_per_step": TOKENS,
        "window": WINDOW,
        "probsparse_factor": FACTOR,
        "flops_formula": "attention core only: 4*B*H*D*visible_pairs forward, x3.5 for fwd+bwd",
        "probsparse_speedup": probsparse_speedups(records, ours),
        "skipped": budget.skipped,
        "quick": quick,
    }
    return records, {"ours": ours, "baselines": baselines, "extra": extra}
