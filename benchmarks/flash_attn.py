"""Flash attention benchmark: ``longseq.kernels.flash_attn`` vs SDPA (flash, cuDNN) and FlexAttention.

Shapes (bf16), as the issue asks:

- main grid: ``B * L = 16K`` tokens, ``H * D = 2048``, ``L`` in 512..16K, ``D`` in (128, 64), causal and
  not. Baselines: ``F.scaled_dot_product_attention`` under ``sdpa_kernel(FLASH_ATTENTION)`` and
  ``sdpa_kernel(CUDNN_ATTENTION)``, and ``flex_attention`` compiled (``dynamic=False``, one compile
  per shape) with a causal block mask (no mask when not causal);
- sliding window of 1024 keys (causal, ``window_size=(1023, 0)``) at ``L`` = 16K, 32K, 64K (B=1,
  D=128) vs FlexAttention with the same block mask; ours and SDPA at full causal on the same
  lengths give the window target (window time at 64K <= 1/20 of full causal);
- packed sequences: 16K tokens in 8 documents (causal, ``flash_attn_varlen_func``) vs FlexAttention
  with a document mask.

"longseq" is flash-attn's default ``deterministic=False`` (dq accumulated with fp32 atomics);
"longseq_deterministic" (listed with the baselines, D=128 cases only) is our bitwise-reproducible
backward, so the ratio "vs longseq_deterministic" is what the atomics buy.

TFLOP/s use flash-attn's formula: forward ``4 * B * L^2 * H * D``, halved when causal; backward 2.5x
the forward, so "fwd+bwd" is 3.5x. Windows and documents count their visible (query, key) pairs
instead of ``L^2 / 2``. Passes: "fwd" (inputs without grad) and "fwd+bwd" (forward, then
``torch.autograd.grad`` with a fixed ``dout``). Each variant gets its native layout, made outside
the timed region: ``(B, L, H, D)`` for ours, ``(B, H, L, D)`` for SDPA and Flex.

Our kernels autotune once per (head dim, mask kind, dtype, length bucket: up to 1K, up to 4K, longer); the
benchmark warms the long bucket up first, the shorter buckets tune in their first case's correctness check,
so every timing is of tuned kernels. Each shape is checked against SDPA-flash (or Flex for
windows/documents) before it is timed. A wall-clock budget keeps the run near seven minutes;
cases past it are listed in ``extra["skipped"]`` rather than timed. Targets on H100 (D=128, causal,
L >= 4K) are summarised in ``extra["targets"]``, met or not.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import Record, bench, require_cuda

TOPIC = "flash_attn"
OURS, FLASH, CUDNN, FLEX = "longseq", "sdpa_flash", "sdpa_cudnn", "flex"
OURS_DET = "longseq_deterministic"  # our deterministic backward (no atomics), for comparison
BASELINES = [FLASH, CUDNN, FLEX, OURS_DET]
PASSES = ("fwd", "fwd+bwd")
TOKENS, HIDDEN = 16384, 2048
LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
HEADDIMS = (128, 64)
WINDOW, WINDOW_LENGTHS = 1024, (16384, 32768, 65536)
DOCS = 8
DTYPE = torch.bfloat16
BUDGET_S = 420.0  # stop starting new cases after this many seconds (a 10-minute device call, with margin)
WARMUP_MS, REP_MS = 20, 80  # do_bench budgets (ms): modest, most cases run for milliseconds
REL_TOL = 3e-2  # max |ours - baseline| / max |baseline| per output and gradient (bf16 vs bf16)
TARGETS = {  # (pass, baseline) -> minimum speed-up of ours, D=128 causal L >= 4K
    ("fwd+bwd", FLEX): 1.0,
    ("fwd+bwd", FLASH): 1.15,
    ("fwd+bwd", CUDNN): 0.8,
    ("fwd", CUDNN): 0.85,
}
WINDOW_TARGET = 1 / 20  # ours window-1K time / ours full-causal time at L = 64K

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Problem:
    """One benchmark case: ``docs > 0`` packs ``B * L`` tokens into that many causal documents."""

    B: int
    L: int
    H: int
    D: int
    causal: bool
    window: int = -1  # keys per query (left context incl. itself), -1 for none
    docs: int = 0

    @property
    def shape(self) -> dict[str, int]:
        s = {"B": self.B, "L": self.L, "H": self.H, "D": self.D, "causal": int(self.causal)}
        if self.window > 0:
            s["window"] = self.window
        if self.docs:
            s["docs"] = self.docs
        return s

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.shape.items())

    def doc_lengths(self) -> list[int]:
        """Seeded lengths of ``docs`` documents that sum to ``B * L`` (each at least 64 tokens)."""
        gen = torch.Generator().manual_seed(self.docs)
        cuts = torch.randperm(self.B * self.L // 64 - 1, generator=gen)[: self.docs - 1] + 1
        bounds = [0, *sorted((cuts * 64).tolist()), self.B * self.L]
        return [b - a for a, b in zip(bounds[:-1], bounds[1:])]

    def pairs(self) -> float:
        """(query, key) pairs per batch element and head, by the issue's formula for full/causal."""
        if self.docs:
            return sum(n * (n + 1) / 2 for n in self.doc_lengths()) / self.B
        if self.window > 0:
            w, L = self.window, self.L
            return w * (w + 1) / 2 + (L - w) * w
        return self.L * self.L / (2 if self.causal else 1)

    def flops(self, pass_: str) -> float:
        fwd = 4 * self.B * self.pairs() * self.H * self.D
        return fwd if pass_ == "fwd" else 3.5 * fwd


def main_grid(quick: bool) -> list[Problem]:
    """The issue's grid, D=128 first (the targets), then D=64; causal before non-causal."""
    lengths = (4096,) if quick else LENGTHS
    return [
        Problem(TOKENS // L, L, HIDDEN // D, D, causal) for D in HEADDIMS for causal in (True, False) for L in lengths
    ]


# --------------------------------------------------------------------------------------------
# variants: each maps native-layout (q, k, v) to out
# --------------------------------------------------------------------------------------------

Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def ours_op(p: Problem, deterministic: bool = False, device: str = "cuda") -> Op:
    """Our kernels; ``deterministic=False`` (flash-attn's default) is the atomic-dq backward."""
    from longseq.kernels.flash_attn import flash_attn_func, flash_attn_varlen_func

    window = (p.window - 1, 0) if p.window > 0 else (-1, -1)
    if not p.docs:
        return lambda q, k, v: flash_attn_func(
            q, k, v, causal=p.causal, window_size=window, deterministic=deterministic
        )  # fmt: skip
    lens = torch.tensor([0, *p.doc_lengths()], device=device).cumsum(0).to(torch.int32)
    longest = max(p.doc_lengths())

    def packed(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = flash_attn_varlen_func(
            q[0], k[0], v[0], lens, lens, longest, longest, causal=True, deterministic=deterministic
        )  # fmt: skip
        return out.unsqueeze(0)

    return packed


def sdpa_op(p: Problem, backend: Any) -> Op:
    from torch.nn.attention import sdpa_kernel

    def op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=p.causal)

    return op


def flex_op(p: Problem) -> Op:
    """``flex_attention`` compiled for this shape, with the block mask of the problem's mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.reset()  # one compile per shape; without this the recompile limit would kick in
    compiled = torch.compile(flex_attention, dynamic=False)
    mask_mod = None
    if p.docs:
        doc = torch.repeat_interleave(
            torch.arange(p.docs, device="cuda"), torch.tensor(p.doc_lengths(), device="cuda")
        )  # fmt: skip

        def mask_mod(b, h, q_idx, kv_idx):
            return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    elif p.window > 0:

        def mask_mod(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (q_idx - kv_idx < p.window)

    elif p.causal:

        def mask_mod(b, h, q_idx, kv_idx):
            return q_idx >= kv_idx

    block_mask = None
    if mask_mod is not None:
        block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=p.L, KV_LEN=p.L, device="cuda")
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask)


def variants(p: Problem, names: list[str]) -> dict[str, tuple[Op, bool]]:
    """name -> (op, uses the (B, H, L, D) layout)."""
    from torch.nn.attention import SDPBackend

    out: dict[str, tuple[Op, bool]] = {}
    for name in names:
        if name == OURS:
            out[name] = (ours_op(p), False)
        elif name == OURS_DET:
            out[name] = (ours_op(p, deterministic=True), False)
        elif name == FLASH:
            out[name] = (sdpa_op(p, SDPBackend.FLASH_ATTENTION), True)
        elif name == CUDNN:
            out[name] = (sdpa_op(p, SDPBackend.CUDNN_ATTENTION), True)
        elif name == FLEX:
            out[name] = (flex_op(p), True)
    return out


# --------------------------------------------------------------------------------------------
# timing and checks
# --------------------------------------------------------------------------------------------


def make_inputs(p: Problem, device: str = "cuda", dtype: torch.dtype = DTYPE) -> dict[str, Tensors]:
    """Seeded q, k, v, dout in both layouts; all require grad."""
    gen = torch.Generator(device=device).manual_seed(0)
    blhd = {
        name: torch.randn(p.B, p.L, p.H, p.D, device=device, dtype=dtype, generator=gen)
        for name in ("q", "k", "v", "dout")
    }
    bhld = {name: t.transpose(1, 2).contiguous() for name, t in blhd.items()}
    for layout in (blhd, bhld):
        for name in ("q", "k", "v"):
            layout[name].requires_grad_()
    return {"blhd": blhd, "bhld": bhld}


def step(op: Op, pass_: str, t: Tensors) -> Callable[[], Any]:
    """The timed callable: forward on detached inputs, or forward + ``autograd.grad``."""
    if pass_ == "fwd":
        q, k, v = (t[n].detach() for n in ("q", "k", "v"))
        return lambda: op(q, k, v)
    return lambda: torch.autograd.grad(op(t["q"], t["k"], t["v"]), (t["q"], t["k"], t["v"]), t["dout"])


def _outputs(op: Op, t: Tensors, bhld: bool) -> list[torch.Tensor]:
    out = op(t["q"], t["k"], t["v"])
    grads = torch.autograd.grad(out, (t["q"], t["k"], t["v"]), t["dout"])
    res = [out.detach(), *grads]
    return [x.transpose(1, 2) if bhld else x for x in res]  # compare in (B, L, H, D)


def check(ours: Op, ref: Op, t: dict[str, Tensors]) -> dict[str, Any]:
    """Relative max errors of out, dq, dk, dv of ours against a baseline."""
    a, b = _outputs(ours, t["blhd"], False), _outputs(ref, t["bhld"], True)
    rel = {
        name: (x.float() - y.float()).abs().max().item() / max(y.float().abs().max().item(), 1e-12)
        for name, x, y in zip(("out", "dq", "dk", "dv"), a, b)
    }
    worst = max(rel.values())
    return {"correct": worst <= REL_TOL, "rel_err": worst, "rel_err_by_output": rel}


def _prepare(p: Problem, names: list[str], t: dict[str, Tensors], log: dict[str, list]) -> dict[str, tuple]:
    """name -> (op, bhld layout, setup seconds); each op run once so compiling/autotuning is not timed."""
    made = {}
    for name in names:
        try:
            start = time.perf_counter()
            op, bhld = variants(p, [name])[name]
            for pass_ in PASSES:  # compiled baselines trace each pass (grad mode) separately
                step(op, pass_, t["bhld" if bhld else "blhd"])()
            torch.cuda.synchronize()
            made[name] = (op, bhld, time.perf_counter() - start)
        except Exception as exc:  # a missing backend must not lose the other numbers
            log["errors"].append(f"{p.label} {name}: {type(exc).__name__}: {str(exc)[:300]}")
    return made


def bench_problem(p: Problem, names: list[str], check_against: str | None, log: dict[str, list]) -> list[Record]:
    """Check ours, then time every variant and pass on one problem; failures go to ``log["errors"]``."""
    t = make_inputs(p)
    made = _prepare(p, names, t, log)
    verdict: dict[str, Any] = {}
    if OURS in made and check_against in made:
        try:
            verdict = check(made[OURS][0], made[check_against][0], t)
            verdict["checked_against"] = check_against
        except Exception as exc:
            verdict = {"correct": False, "rel_err": None, "error": f"{type(exc).__name__}: {exc}"}
        state = "ok" if verdict.get("correct") else "FAILED"
        print(f"[{TOPIC}] {p.label}: check vs {check_against} {state} ({verdict.get('rel_err')})", file=sys.stderr)
    records: list[Record] = []
    for pass_ in PASSES:
        for name, (op, bhld, setup_s) in made.items():
            try:
                ms = bench(step(op, pass_, t["bhld" if bhld else "blhd"]), warmup=WARMUP_MS, rep=REP_MS)
            except Exception as exc:
                log["errors"].append(f"{p.label} {name} {pass_}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            rec = Record(TOPIC, name, p.shape, str(DTYPE).removeprefix("torch."), pass_, ms, None, p.flops(pass_))
            rec.extra["setup_s"] = round(setup_s, 2)
            if name == OURS:
                rec.extra.update(verdict)
            records.append(rec)
    del t, made
    torch.cuda.empty_cache()
    return records


# --------------------------------------------------------------------------------------------
# targets and the run
# --------------------------------------------------------------------------------------------


def _ms(records: list[Record], name: str, shape: dict[str, int], pass_: str) -> float | None:
    rec = next((r for r in records if r.name == name and r.shape == shape and r.pass_ == pass_), None)
    return None if rec is None else rec.ms


def summarize_targets(records: list[Record]) -> dict[str, Any]:
    """Every target ratio at D=128, causal, L >= 4K (per L, min and median) and the window target."""
    out: dict[str, Any] = {}
    target_shapes = [p.shape for p in main_grid(False) if p.D == 128 and p.causal and p.L >= 4096]
    for (pass_, base), threshold in TARGETS.items():
        per_l = {}
        for shape in target_shapes:
            mine, theirs = _ms(records, OURS, shape, pass_), _ms(records, base, shape, pass_)
            if mine and theirs:
                per_l[shape["L"]] = theirs / mine
        vals = list(per_l.values())
        out[f"{pass_} vs {base}"] = {
            "threshold": threshold,
            "per_L": per_l,
            "min": min(vals, default=None),
            "median": statistics.median(vals) if vals else None,
            "met": bool(vals) and min(vals) >= threshold,
        }
    L = max(WINDOW_LENGTHS)
    win = Problem(1, L, HIDDEN // 128, 128, True, window=WINDOW).shape
    full = Problem(1, L, HIDDEN // 128, 128, True).shape
    ratios = {}
    for pass_ in PASSES:
        w, f = _ms(records, OURS, win, pass_), _ms(records, OURS, full, pass_)
        ratios[pass_] = None if not (w and f) else w / f
    out["window_1K_over_full_causal_at_64K"] = {
        "threshold": WINDOW_TARGET,
        "per_pass": ratios,
        "met": all(r is not None and r <= WINDOW_TARGET for r in ratios.values()),
    }
    out["correct"] = all(r.extra.get("correct", False) for r in records if r.name == OURS)
    out["all_met"] = out["correct"] and all(v["met"] for k, v in out.items() if isinstance(v, dict))
    return out


def _tuned_configs() -> dict[str, str]:
    """The configuration the autotuner picked per kernel and key (for the record)."""
    from longseq.kernels.flash_attn import tuning

    return {
        f"{name}-d{d}{'-fp32' if fp32 else ''}-len{bucket} {key}": str(cfg)
        for (name, d, fp32, bucket), tuner in tuning._TUNED.items()
        for key, cfg in tuner.cache.items()
    }


def _cases(quick: bool) -> list[tuple[Problem, list[str], str | None]]:
    """(problem, variants, check against) in priority order (the budget may cut the tail)."""
    everyone = [OURS, *BASELINES]
    cases = [(p, everyone, FLASH) for p in main_grid(quick) if p.D == 128]
    grid_shapes = [p.shape for p, _, _ in cases]
    for L in WINDOW_LENGTHS[-1:] if quick else WINDOW_LENGTHS:
        cases.append((Problem(1, L, HIDDEN // 128, 128, True, window=WINDOW), [OURS, FLEX, OURS_DET], FLEX))
        full = Problem(1, L, HIDDEN // 128, 128, True)  # the window target's denominator
        if full.shape not in grid_shapes:
            cases.append((full, [OURS, FLASH, CUDNN, OURS_DET], FLASH))
    cases.append((Problem(1, TOKENS, HIDDEN // 128, 128, True, docs=DOCS), [OURS, FLEX, OURS_DET], FLEX))
    cases += [(p, [OURS, FLASH, CUDNN, FLEX], FLASH) for p in main_grid(quick) if p.D == 64]
    return cases


def warm_up(quick: bool, log: dict[str, list]) -> float:
    """Autotune ours on a long sequence per (D, mask kind) before timing; returns the seconds spent."""
    start = time.perf_counter()
    L = 4096 if quick else 8192
    for p in [Problem(TOKENS // L, L, HIDDEN // D, D, causal) for D in HEADDIMS for causal in (True, False)] + [
        Problem(1, 16384, HIDDEN // 128, 128, True, window=WINDOW),
        Problem(1, TOKENS, HIDDEN // 128, 128, True, docs=DOCS),
    ]:
        try:
            t = make_inputs(p)["blhd"]
            step(ours_op(p), "fwd+bwd", t)()
            if p.D == 128:  # the deterministic backward is compared on D=128 only (autotuning time)
                step(ours_op(p, deterministic=True), "fwd+bwd", t)()
        except Exception as exc:  # the cases themselves will report the failure again
            log["errors"].append(f"warm-up {p.label}: {type(exc).__name__}: {str(exc)[:300]}")
    torch.cuda.synchronize()
    return time.perf_counter() - start


def run(quick: bool) -> tuple[list[Record], dict[str, Any]]:
    """Benchmark every case within the budget; returns the records and ``meta`` for the harness."""
    require_cuda()
    start = time.perf_counter()
    log: dict[str, list] = {"errors": [], "skipped": []}
    warm_s = warm_up(quick, log)
    print(f"[{TOPIC}] autotune warm-up: {warm_s:.0f} s", file=sys.stderr)
    records: list[Record] = []
    for p, names, ref in _cases(quick):
        if time.perf_counter() - start > BUDGET_S:
            log["skipped"].append(p.label)
            continue
        records += bench_problem(p, names, ref, log)
        print(f"[{TOPIC}] {p.label} done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
    for e in log["errors"]:
        print(f"[{TOPIC}] error: {e}", file=sys.stderr)
    extra = {
        "flops_formula": "fwd 4*B*pairs*H*D with pairs = L^2 (L^2/2 causal; visible pairs for window/docs); "
        "bwd = 2.5 x fwd; fwd+bwd = 3.5 x fwd",
        "window": f"{WINDOW} keys (window_size=({WINDOW - 1}, 0), causal)",
        "doc_lengths": Problem(1, TOKENS, 16, 128, True, docs=DOCS).doc_lengths(),
        "flex": "torch.compile(flex_attention, dynamic=False), one compile per shape, block masks",
        "timing": f"triton.testing.do_bench median, warmup {WARMUP_MS} ms, rep {REP_MS} ms",
        "autotune_warmup_s": round(warm_s, 1),
        "tuned_configs": _tuned_configs(),
        "targets": summarize_targets(records),
        "rel_tol": REL_TOL,
        "total_s": round(time.perf_counter() - start, 1),
        "quick": quick,
        **log,
    }
    return records, {"ours": OURS, "baselines": BASELINES, "extra": extra}


# --------------------------------------------------------------------------------------------
# chart
# --------------------------------------------------------------------------------------------


def _grid_points(recs: list[Record], name: str, pass_: str, d: int, causal: int) -> list[tuple[int, float]]:
    return sorted(
        (r.shape["L"], r.tflops)
        for r in recs
        if r.name == name and r.pass_ == pass_ and r.shape.get("D") == d and r.shape.get("causal") == causal
        and "window" not in r.shape and "docs" not in r.shape and r.shape["B"] * r.shape["L"] == TOKENS
    )  # fmt: skip


def plot(json_path: str | Any) -> Any:
    """TFLOP/s against L per variant (a panel per pass and head dim; causal solid, full dashed) and the
    window/document cases as bars; written beside the JSON as ``<stem>-tflops.png`` (returns the path).

    The harness's generic chart (``plot_results``) is written too; this one reads better for this topic.
    """
    import json
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    json_path = Path(json_path)
    payload = json.loads(json_path.read_text())
    recs = [Record.from_dict(d) for d in payload["records"]]
    colors = {n: f"C{i}" for i, n in enumerate([OURS, *BASELINES])}
    fig = Figure(figsize=(17, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(HEADDIMS) + 1, squeeze=False)
    for row, pass_ in enumerate(PASSES):
        for col, d in enumerate(HEADDIMS):
            ax = axes[row][col]
            for name, color in colors.items():
                for causal, style in ((1, "-"), (0, "--")):
                    pts = _grid_points(recs, name, pass_, d, causal)
                    if pts:
                        label = f"{name} {'causal' if causal else 'full'}"
                        ax.plot(*zip(*pts), style, marker="o", color=color, label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(LENGTHS), [f"{L // 1024}K" if L >= 1024 else str(L) for L in LENGTHS])
            ax.set_title(f"{pass_}, D={d}, B*L={TOKENS}, H*D={HIDDEN}", fontsize=10)
            ax.set_xlabel("L")
            ax.set_ylabel("TFLOP/s")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax = axes[row][-1]
        special = [r for r in recs if r.pass_ == pass_ and ("window" in r.shape or "docs" in r.shape)]
        labels = list(dict.fromkeys(
            f"window {r.shape['L'] // 1024}K" if "window" in r.shape else f"{r.shape['docs']} docs" for r in special
        ))  # fmt: skip
        for i, name in enumerate([OURS, FLEX]):
            vals = []
            for label in labels:
                match = [
                    r.tflops for r in special if r.name == name
                    and (f"window {r.shape['L'] // 1024}K" if "window" in r.shape else f"{r.shape['docs']} docs") == label
                ]  # fmt: skip
                vals.append(match[0] if match else 0.0)
            xs = [j + (i - 0.5) * 0.4 for j in range(len(labels))]
            bars = ax.bar(xs, vals, 0.4, color=colors[name], label=name)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ratio = payload["extra"].get("targets", {}).get("window_1K_over_full_causal_at_64K", {}).get("per_pass", {})
        if ratio.get(pass_):
            ax.set_title(f"{pass_}: window 1K / docs (window/full causal at 64K: {ratio[pass_]:.3f})", fontsize=10)
        else:
            ax.set_title(f"{pass_}: window 1K and packed documents", fontsize=10)
        ax.set_ylabel("TFLOP/s (visible pairs)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    dev = payload["device"]
    fig.suptitle(f"flash attention (bf16) on {dev.get('gpu_name') or 'no GPU'} ({str(dev.get('date_utc', ''))[:10]})")
    png = json_path.with_name(json_path.stem + "-tflops.png")
    fig.savefig(png, dpi=110)
    return png
