"""Long convolution benchmark: ``longseq.kernels.fftconv`` vs ``torch.fft``, the Hyena mixer vs flash
attention, and a HyenaDNA-sized model on one million tokens.

1. **Long convolution** (the Hyena op ``y = gate * (conv(x * pre_gate, h) + D * x * pre_gate)``) at
   ``L = 16K..1M``, ``D = 256, 864``, ``B = 1``, inputs in bf16 and in fp32 (filter and skip fp32):
   ours vs ``fftconv_torch`` (rfft/irfft zero-padded, fp32 math, the filter's FFT included, as in
   Hyena's code). Passes "fwd" (no graph) and "fwd+bwd" (``autograd.grad`` of every input). Effective
   GB/s count the minimal traffic (formulas in ``extra["bytes_formula"]``) against the device-to-device
   copy bandwidth measured in the same run. Target: >= 3x at ``L >= 64K``.
2. **Hyena mixer vs attention** at ``L = 2K..1M`` with ``max(L, TOKENS)`` tokens per step, dim 768,
   12 heads, bf16 autocast, fwd+bwd (input and all weights): ``HyenaOperator`` (order 2) vs a causal
   attention mixer (fused qkv projection, attention, output projection) on SDPA's flash backend and
   on ``longseq.kernels.flash_attn`` when it imports. Attention runs while a call is predicted to
   take at most ``MAX_CALL_S`` seconds (timed once, after one warm-up call, above ``SINGLE_SHOT_S``);
   skipped points are listed with the reason. Reports the crossover length and the ratios at 64K and 1M.
3. **HyenaDNA-sized model**: ``LanguageModel`` with 8 Hyena blocks, d_model 256, GELU MLP x4,
   LayerNorm, 12-token vocabulary, one 1,048,576-token sequence, bf16 autocast, loss + backward:
   time and peak memory, first without and, if that runs out of memory, with activation checkpointing.

Records use ``ours = "longseq"`` for both our convolution (part 1) and our Hyena mixer / model (parts
2, 3); the shape keys tell the parts apart. The whole run is meant to fit in ~5 minutes on an H100
(``DEADLINE_S``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.attention import peak_gib
from benchmarks.common import (
    Record,
    bench,
    compute_ratios,
    measure_copy_bandwidth,
    one_call_ms,
    parts_from_env,
    require_cuda,
)

TOPIC = "fftconv"
DEVICE = "cuda"
OURS, TORCH_FFT, SDPA, FLASH = "longseq", "torch_fft", "sdpa_flash", "longseq_flash_attn"
#: fp32 only: the Triton kernels with ``FP32_USES_TORCH_FFT`` off (``longseq`` itself then runs torch.fft).
KERNELS = "longseq_kernels"
BASELINES = [TORCH_FFT, KERNELS, SDPA, FLASH]
PASSES = ("fwd", "fwd+bwd")
CONV_LENGTHS, QUICK_CONV_LENGTHS = (16384, 65536, 262144, 1048576), (65536,)
CONV_CHANNELS, QUICK_CONV_CHANNELS = (256, 864), (256,)
CONV_DTYPES = (torch.bfloat16, torch.float32)
BLOCK_LENGTHS = tuple(2**k for k in range(11, 21))  # 2K .. 1M
QUICK_BLOCK_LENGTHS = (2048, 65536)
BLOCK_DIM, BLOCK_HEADS, TOKENS = 768, 12, 131072
MODEL_L, MODEL_DIM, MODEL_DEPTH, MODEL_VOCAB = 2**20, 256, 8, 12
QUICK_MODEL_L = 2**16
MAX_CALL_S = 40.0  # longest single attention call we time (causal attention at 1M: 20-22 s, fftconv-blocks-h100.json)
SINGLE_SHOT_S = 1.0  # above this predicted call time, time one call instead of do_bench
NO_WARMUP_S = 5.0  # above this, time the single call without a warm-up call
#: Shared by the parts run (the conv part alone took 216 s on an H100, fftconv-h100.json); a job that runs one
#: part may give it more with ``LONGSEQ_FFTCONV_DEADLINE`` (seconds).
DEADLINE_S = float(os.environ.get("LONGSEQ_FFTCONV_DEADLINE", "280"))
#: Comma-separated subset of the parts to run (default: all), e.g. ``LONGSEQ_FFTCONV_PARTS=block``
#: (names: conv, model, block), so a device job can give one part the whole deadline.
PARTS_ENV = "LONGSEQ_FFTCONV_PARTS"
REL_TOL = {torch.bfloat16: 2e-2, torch.float32: 1e-4}
TARGET_RATIO, TARGET_FROM_L = 3.0, 65536
BENCH_KW = dict(warmup=10, rep=50)
GRAD_KEYS = ("x", "h", "D", "gate", "pre_gate")


class Budget:
    """The run's deadline, skipped points and errors."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds
        self.skipped: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def expired(self, needs_s: float = 0.0) -> bool:
        """Whether the deadline has passed, or would pass during ``needs_s`` more seconds of work."""
        return time.perf_counter() + needs_s > self.end

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append({"what": what, "reason": reason})
        print(f"[{TOPIC}] skip {what}: {reason}", file=sys.stderr)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _single_shot_ms(fn: Callable[[], Any], warmup: bool = True) -> float:
    """One timed call, after one warm-up call unless ``warmup`` is false (for calls too long for ``do_bench``;
    the kernels involved are already compiled by the shorter lengths)."""
    if warmup:
        fn()
    return one_call_ms(fn)


# --------------------------------------------------------------------------------------------
# part 1: the long convolution
# --------------------------------------------------------------------------------------------


def conv_bytes(B: int, D: int, L: int, elt: int, pass_: str) -> int:
    """Minimal HBM traffic: fwd reads x, pre_gate, gate (3 BDL elt) and h (4 DL), writes y (BDL elt);
    the backward reads dy, x, pre_gate, gate and h and writes dx, dpre_gate, dgate and dh."""
    fwd = 4 * B * D * L * elt + 4 * D * L
    return fwd if pass_ == "fwd" else fwd + 7 * B * D * L * elt + 8 * D * L


def conv_inputs(D: int, L: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Seeded gated-convolution inputs (B = 1); activations in ``dtype``, filter and skip in fp32."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def rand(*shape: int, dt: torch.dtype = dtype, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, device=DEVICE, generator=gen)).to(dt).requires_grad_()

    t = {"x": rand(1, D, L), "pre_gate": rand(1, D, L), "gate": rand(1, D, L)}
    t.update(h=rand(D, L, dt=torch.float32, scale=L**-0.5), D=rand(D, dt=torch.float32))
    t["dy"] = torch.randn(1, D, L, device=DEVICE, generator=gen).to(dtype)
    return t


def conv_ops() -> dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor]]:
    import longseq.kernels.fftconv as fc

    def kernels(t: dict[str, torch.Tensor]) -> torch.Tensor:
        saved, fc.FP32_USES_TORCH_FFT = fc.FP32_USES_TORCH_FFT, False
        try:  # autograd records the kernels' op here, so the backward runs them too
            return fc.fftconv(t["x"], t["h"], t["D"], gate=t["gate"], pre_gate=t["pre_gate"])
        finally:
            fc.FP32_USES_TORCH_FFT = saved

    return {
        OURS: lambda t: fc.fftconv(t["x"], t["h"], t["D"], gate=t["gate"], pre_gate=t["pre_gate"]),
        TORCH_FFT: lambda t: fc.fftconv_torch(t["x"], t["h"], t["D"], t["gate"], t["pre_gate"]),
        KERNELS: kernels,
    }


def conv_step(op: Callable, t: dict[str, torch.Tensor], pass_: str) -> Callable[[], Any]:
    if pass_ == "fwd":

        def fwd() -> torch.Tensor:
            with torch.no_grad():
                return op(t)

        return fwd
    leaves = [t[k] for k in GRAD_KEYS]
    return lambda: torch.autograd.grad(op(t), leaves, t["dy"])


def conv_check(ops: dict[str, Callable], t: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, Any]:
    """Per op other than torch.fft: its largest relative error vs torch.fft over the output and every gradient."""
    leaves = [t[k] for k in GRAD_KEYS]
    outs = {}
    for name, op in ops.items():
        y = op(t)
        outs[name] = (y.detach(), *torch.autograd.grad(y, leaves, t["dy"]))
    checks = {}
    for name, got in outs.items():
        if name != TORCH_FFT:
            rel = max(
                ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()
                for a, b in zip(got, outs[TORCH_FFT])
            )
            checks[name] = {"correct": rel <= REL_TOL[dtype], "rel_err": rel}
    return checks


def bench_conv(quick: bool, copy_gbps: float, budget: Budget) -> list[Record]:
    ops = conv_ops()
    records = []
    lengths = QUICK_CONV_LENGTHS if quick else CONV_LENGTHS
    channels = QUICK_CONV_CHANNELS if quick else CONV_CHANNELS
    for L in lengths:
        for D in channels:
            for dtype in CONV_DTYPES:
                label = f"conv L={L} D={D} {_dtype_name(dtype)}"
                if budget.expired():
                    budget.skip(label, f"run deadline of {DEADLINE_S:.0f} s reached")
                    continue
                try:
                    records += _bench_conv_case(ops, L, D, dtype, copy_gbps, label, budget)
                except torch.OutOfMemoryError:
                    budget.skip(label, "out of memory")
                torch.cuda.empty_cache()
    return records


def _bench_conv_case(ops, L: int, D: int, dtype: torch.dtype, copy_gbps: float, label: str, budget: Budget):
    if dtype != torch.float32:  # the kernels op is OURS there
        ops = {name: op for name, op in ops.items() if name != KERNELS}
    t = conv_inputs(D, L, dtype)
    checks = conv_check(ops, t, dtype)
    for name, check in checks.items():
        ok = "ok" if check["correct"] else "FAILED"
        print(f"[{TOPIC}] {label} {name}: check {ok} ({check['rel_err']:.1e})", file=sys.stderr)
    records = []
    shape = {"B": 1, "D": D, "L": L}
    for pass_ in PASSES:
        for name, op in ops.items():
            step = conv_step(op, t, pass_)
            try:
                step()
                mem = peak_gib(step)
                ms = bench(step, **BENCH_KW)
            except torch.OutOfMemoryError:
                budget.skip(f"{label} {name} {pass_}", "out of memory")
                torch.cuda.empty_cache()
                continue
            nbytes = conv_bytes(1, D, L, t["x"].element_size(), pass_)
            rec = Record(TOPIC, name, dict(shape), _dtype_name(dtype), pass_, ms, nbytes)
            rec.extra.update(part="conv", peak_mem_gib=mem, frac_copy_bw=rec.gbps / copy_gbps)
            rec.extra.update(checks.get(name, {}))
            records.append(rec)
    return records


def conv_targets(records: list[Record]) -> dict[str, Any]:
    """Speed-up over torch.fft per (pass, dtype) at ``L >= TARGET_FROM_L``: min, median, met."""
    ratios = compute_ratios([r for r in records if r.extra.get("part") == "conv"], baselines=[TORCH_FFT], ours=OURS)
    out: dict[str, Any] = {"threshold": TARGET_RATIO, "from_L": TARGET_FROM_L}
    for pass_ in PASSES:
        for dtype in CONV_DTYPES:
            vals = [
                r["ratio"]
                for r in ratios
                if r["pass"] == pass_ and r["dtype"] == _dtype_name(dtype) and r["shape"]["L"] >= TARGET_FROM_L
            ]
            key = f"{pass_} {_dtype_name(dtype)}"
            if vals:
                out[key] = {"min": min(vals), "median": statistics.median(vals), "met": min(vals) >= TARGET_RATIO}
            else:
                out[key] = {"available": False, "met": False}
    return out


# --------------------------------------------------------------------------------------------
# part 2: Hyena mixer vs attention
# --------------------------------------------------------------------------------------------


class AttentionMixer(torch.nn.Module):
    """Causal multi-head attention mixer: fused qkv projection, attention core, output projection."""

    def __init__(self, dim: int, heads: int, core: str) -> None:
        super().__init__()
        self.heads, self.core = heads, core
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.out = torch.nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, C // self.heads).unbind(2)  # (B, L, H, hd)
        if self.core == SDPA:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                o = torch.nn.functional.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
                ).transpose(1, 2)
        else:
            from longseq.kernels.flash_attn import flash_attn_func

            o = flash_attn_func(q, k, v, causal=True)
        return self.out(o.reshape(B, L, C))


def block_mixers(max_len: int) -> dict[str, torch.nn.Module]:
    """Our Hyena mixer and the attention mixers that can run here, seeded, on the GPU."""
    from longseq.core.mixers.hyena import HyenaOperator

    torch.manual_seed(0)
    mixers = {OURS: HyenaOperator(BLOCK_DIM, max_len=max_len), SDPA: AttentionMixer(BLOCK_DIM, BLOCK_HEADS, SDPA)}
    try:
        import longseq.kernels.flash_attn  # noqa: F401

        mixers[FLASH] = AttentionMixer(BLOCK_DIM, BLOCK_HEADS, FLASH)
    except ImportError as exc:
        print(f"[{TOPIC}] {FLASH} unavailable: {exc}", file=sys.stderr)
    return {k: m.to(DEVICE) for k, m in mixers.items()}


def _mixer_step(mixer: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor) -> Callable[[], Any]:
    leaves = [x, *mixer.parameters()]

    def step() -> tuple[torch.Tensor, ...]:
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            y = mixer(x)
        return torch.autograd.grad(y, leaves, dy)

    return step


def bench_blocks(quick: bool, budget: Budget) -> list[Record]:
    lengths = QUICK_BLOCK_LENGTHS if quick else BLOCK_LENGTHS
    mixers = block_mixers(max(lengths))
    records: list[Record] = []
    last_ms: dict[str, tuple[int, float]] = {}
    stopped: dict[str, str] = {}
    for L in lengths:
        B = max(1, TOKENS // L)
        shape = {"B": B, "L": L, "dim": BLOCK_DIM}
        x = torch.randn(B, L, BLOCK_DIM, device=DEVICE, requires_grad=True)
        dy = torch.randn(B, L, BLOCK_DIM, device=DEVICE, dtype=torch.bfloat16)
        for name, mixer in mixers.items():
            what = f"block {name} L={L}"
            if name not in stopped and budget.expired():
                stopped[name] = f"run deadline of {DEADLINE_S:.0f} s reached"
            predicted = 0.0
            if name in last_ms:  # attention: work per step grows with B * L^2; Hyena ~ linearly in tokens
                prev_B, prev_ms = last_ms[name]
                predicted = prev_ms / 1e3 * (B * L * L) / (prev_B * (L // 2) ** 2) if name != OURS else 0.0
            if name not in stopped and predicted > MAX_CALL_S:
                stopped[name] = f"predicted {predicted:.1f} s per call > {MAX_CALL_S:.0f} s"
            calls = 1 if predicted >= NO_WARMUP_S else 2  # a single-shot point: the timed call (+ a warm-up)
            if name not in stopped and predicted > SINGLE_SHOT_S and budget.expired(calls * predicted):
                stopped[name] = f"predicted {calls} x {predicted:.1f} s would pass the run deadline"
            if name in stopped:
                budget.skip(what, stopped[name])
                continue
            step = _mixer_step(mixer, x, dy)
            try:
                if predicted > SINGLE_SHOT_S:
                    ms = _single_shot_ms(step, warmup=predicted < NO_WARMUP_S)
                else:
                    ms = bench(step, **BENCH_KW)
                mem = peak_gib(step) if predicted <= SINGLE_SHOT_S else None
            except torch.OutOfMemoryError:
                stopped[name] = "out of memory"
                budget.skip(what, stopped[name])
                torch.cuda.empty_cache()
                continue
            except (RuntimeError, ValueError) as exc:
                stopped[name] = f"{type(exc).__name__}: {exc}"
                budget.skip(what, stopped[name])
                continue
            last_ms[name] = (B, ms)
            print(f"[{TOPIC}] {what}: {ms:.2f} ms", file=sys.stderr, flush=True)
            rec = Record(TOPIC, name, dict(shape), "bfloat16", "fwd+bwd", ms)
            rec.extra.update(part="block", tokens_per_s=B * L / (ms * 1e-3), peak_mem_gib=mem)
            rec.extra.update(
                timing="single call" if predicted > SINGLE_SHOT_S else "do_bench median", predicted_s=predicted
            )
            records.append(rec)
        del x, dy
        torch.cuda.empty_cache()
    return records


def block_summary(records: list[Record]) -> dict[str, Any]:
    """Crossover length (first L where Hyena is faster) and Hyena's speed-up at 64K and 1M per baseline."""
    blocks = [r for r in records if r.extra.get("part") == "block"]
    ratios = compute_ratios(blocks, baselines=[SDPA, FLASH], ours=OURS)
    out: dict[str, Any] = {}
    for base in (SDPA, FLASH):
        rs = sorted((r for r in ratios if r["baseline"] == base), key=lambda r: r["shape"]["L"])
        by_L = {r["shape"]["L"]: r["ratio"] for r in rs}
        out[base] = {
            "crossover_L": next((L for L, q in by_L.items() if q >= 1.0), None),
            "ratio_at_64K": by_L.get(65536),
            "ratio_at_1M": by_L.get(2**20),
            "ratios": by_L,
        }
    return out


# --------------------------------------------------------------------------------------------
# part 3: a HyenaDNA-sized model on one million tokens
# --------------------------------------------------------------------------------------------


def build_hyena_dna(max_len: int) -> torch.nn.Module:
    from longseq.core.backbone import BackboneConfig
    from longseq.core.models import LanguageModel

    cfg = BackboneConfig(
        vocab_size=MODEL_VOCAB, dim=MODEL_DIM, depth=MODEL_DEPTH, mixer_pattern="hyena",
        mixer_kwargs={"hyena": {"max_len": max_len}}, mlp="gelu", mlp_ratio=4.0, norm="layernorm",
    )  # fmt: skip
    torch.manual_seed(0)
    return LanguageModel(cfg).to(DEVICE)


def bench_model(quick: bool, budget: Budget) -> list[Record]:
    L = QUICK_MODEL_L if quick else MODEL_L
    what = f"hyena_dna L={L}"
    if budget.expired():
        budget.skip(what, f"run deadline of {DEADLINE_S:.0f} s reached")
        return []
    model = build_hyena_dna(L)
    ids = torch.randint(0, MODEL_VOCAB, (1, L), device=DEVICE)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = model(ids, labels=ids)
        loss.backward()

    attempts: list[dict[str, Any]] = []
    for checkpointing in (False, True):
        model.backbone.set_grad_checkpointing(checkpointing)
        torch.cuda.empty_cache()
        try:
            mem = peak_gib(step)
            ms = statistics.median(_single_shot_ms(step) for _ in range(3))
        except torch.OutOfMemoryError:
            attempts.append({"grad_checkpointing": checkpointing, "result": "out of memory"})
            model.zero_grad(set_to_none=True)
            continue
        attempts.append({"grad_checkpointing": checkpointing, "result": "ok"})
        params = sum(p.numel() for p in model.parameters())
        shape = {"model_L": L, "d_model": MODEL_DIM, "layers": MODEL_DEPTH}
        rec = Record(TOPIC, OURS, shape, "bfloat16", "fwd+bwd", ms)
        rec.extra.update(
            part="model", peak_mem_gib=mem, grad_checkpointing=checkpointing, attempts=list(attempts),
            params=params, tokens_per_s=L / (ms * 1e-3), fits=True,
            total_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30,
        )  # fmt: skip
        return [rec]
    budget.skip(what, f"out of memory with and without activation checkpointing: {attempts}")
    return []


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


#: Optional JSON file of kernel knobs to run with (``{"ROW_MAX": 512, "ROW_WARPS": 4, "COL_TILE": 4096,
#: "COL_WARPS": 4, "MIN_COLS": 0}``; ``MIN_COLS`` 0 turns off the long-sequence knobs), e.g. the winner that
#: ``scripts/kernel_sweep.py fftconv --best-out`` wrote in the same device job; the run records the knobs it
#: used in ``extra["kernel_config"]``.
KNOBS_ENV = "LONGSEQ_FFTCONV_KNOBS"


def apply_knobs(path: str | None) -> dict[str, Any] | None:
    """Set the fftconv kernel knobs from the JSON file at ``path`` (none: leave the defaults)."""
    if not path:
        return None
    from longseq.kernels.fftconv import triton as fft_triton

    with open(path) as f:
        knobs = json.load(f)
    unknown = set(knobs) - {"ROW_MAX", "ROW_WARPS", "COL_TILE", "COL_WARPS", "MIN_COLS"}
    if unknown:
        raise ValueError(f"{KNOBS_ENV} file {path} names unknown knobs {sorted(unknown)}")
    for name, value in knobs.items():
        if name == "ROW_WARPS":  # warps of the row length in use
            value = {**fft_triton.ROW_WARPS, knobs.get("ROW_MAX", fft_triton.ROW_MAX): value}
        setattr(fft_triton, name, value)
    return knobs


def run(quick: bool) -> tuple[list[Record], dict[str, Any]]:
    """All three parts; returns the records and ``meta`` (ours, baselines, extra)."""
    require_cuda()
    knobs = apply_knobs(os.environ.get(KNOBS_ENV))
    budget = Budget(DEADLINE_S)
    copy_gbps = measure_copy_bandwidth()
    print(f"[{TOPIC}] device-to-device copy bandwidth: {copy_gbps:.0f} GB/s", file=sys.stderr)
    records: list[Record] = []
    steps = {
        "conv": lambda: bench_conv(quick, copy_gbps, budget),
        "model": lambda: bench_model(quick, budget),
        "block": lambda: bench_blocks(quick, budget),
    }
    chosen = parts_from_env(PARTS_ENV, list(steps))
    for part in chosen:
        fn = steps[part]
        start = time.perf_counter()
        try:
            records += fn()
        except Exception as exc:  # one broken part must not lose the others' numbers
            budget.errors.append(f"{part}: {type(exc).__name__}: {exc}")
            print(f"[{TOPIC}] error in {part}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"[{TOPIC}] part {part} took {time.perf_counter() - start:.0f} s", file=sys.stderr)
        torch.cuda.empty_cache()
    from longseq.kernels.fftconv import triton as fft_triton

    extra = {
        "copy_bandwidth_gbps": copy_gbps,
        "bytes_formula": {
            "fwd": "4*B*D*L*elt + 4*D*L (read x, pre_gate, gate, fp32 h; write y)",
            "fwd+bwd": "fwd + 7*B*D*L*elt + 8*D*L (read dy, x, pre_gate, gate, h; write dx, dpre, dgate, dh)",
        },
        "conv_targets": conv_targets(records),
        "block": {"dim": BLOCK_DIM, "heads": BLOCK_HEADS, "tokens_per_step": TOKENS, **block_summary(records)},
        "model": next((r.extra | {"ms": r.ms} for r in records if r.extra.get("part") == "model"), None),
        "kernel_config": {
            k: getattr(fft_triton, k)
            for k in ("ROW_MAX", "COL_TILE", "COL_SINGLE_MAX", "ROW_WARPS", "COL_WARPS", "NUM_STAGES", "MIN_COLS")
            + ("LONG_ROW_MAX", "LONG_COL_TILE", "LONG_COL_WARPS")
        }
        | {"precision": {"fp32 inputs": fft_triton.FP32_DOT_PRECISION, "16-bit": fft_triton.LOWP_DOT_PRECISION}}
        | {"knobs_from": "the same job's sweep" if knobs else "module defaults"},
        "parts": chosen,
        "skipped": budget.skipped,
        "errors": budget.errors,
        "quick": quick,
    }
    return records, {"ours": OURS, "baselines": BASELINES, "extra": extra}
