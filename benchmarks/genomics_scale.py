"""Genomics at scale: one training step of a HyenaDNA-sized model vs a Transformer on one long DNA sequence.

The genomics acceptance item: *one training step of a HyenaDNA-sized model on a single 1M-token sequence
on one GPU (time, memory), and the same step for the Transformer baseline with flash/SDPA attention at 1M
or the largest length that fits: the speed ratio* (HyenaDNA reports up to 160x).

Variants (all built through the genomics model registry, d_model 256, 8 layers, GELU MLP x4, LayerNorm,
the :class:`~longseq.apps.genomics.tokenizer.DNATokenizer` vocabulary):

* ``hyena``: ``hyena_dna_medium`` (HyenaDNA's blocks) with ``max_len = L``;
* ``transformer_flash``: ``transformer_dna`` with the same MLP and norm, causal attention (8 heads, RoPE)
  on the core ``"flash"`` backend (our Triton kernel), ``strict_backend`` so it never falls back;
* ``transformer_sdpa``: the same on the ``"sdpa"`` backend (PyTorch's fused kernels).

One step is ``zero_grad``, forward under bf16 autocast, the chunked LM-head cross-entropy, backward and an
AdamW step, on one sequence (batch 1) of ``L = 16K .. 1M`` random bases. Per (variant, L): the median step
time (:func:`benchmarks.common.bench` for short steps, CUDA events over a few steps for long ones, after
``warmup_steps`` untimed steps), the peak allocated memory of the entry (model, optimizer state and
activations; the peak counter is reset per entry) and tokens/s. Activation checkpointing is off, and with
``grad_checkpointing="auto"`` an entry that runs out of memory is retried with it on (the row says which).

Each variant runs at increasing L until it runs out of memory (row ``"oom"``), fails (``"error: ..."``),
or its next step is predicted (from its previous length, time ~ L for Hyena and ~ L^2 for attention) to
make the entry longer than ``entry_cap_s`` (``"skipped (time cap)"``); once the run's ``deadline_s`` has
passed, or an entry is predicted to end after it, rows read ``"skipped (deadline)"``. The CLI rewrites
the JSON and markdown after every entry, so a killed run keeps the rows it measured.

Ratios are ``transformer_ms / hyena_ms`` at each L both ran (measured). Where a transformer did not run at
the target length (the largest asked, 1M by default), the summary gives the largest length both ran and
the ratio there, and, apart and labelled ``projected_quadratic``, the transformer's time at its largest
length scaled by ``(target_L / L)^2`` (attention-dominated cost). A projection is not a measurement.

Examples::

    python -m benchmarks.genomics_scale --deadline 400 --out /tmp/bench
    python -m benchmarks.genomics_scale --models hyena transformer_flash --lengths 256K 512K 1M
    python -m benchmarks.run genomics_scale --quick
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import Record, _fmt, bench, one_call_ms, require_cuda, save_figure, write_results

__all__ = [
    "LENGTHS",
    "TOPIC",
    "VARIANTS",
    "ScaleConfig",
    "Variant",
    "build_model",
    "main",
    "make_train_step",
    "measure",
    "measure_entry",
    "parse_length",
    "plan_entry",
    "plot_scale",
    "random_dna_ids",
    "report_markdown",
    "run",
    "speedup_summary",
    "write",
]

TOPIC = "genomics_scale"
OURS = "hyena"
LENGTHS = tuple(2**k for k in range(14, 21))  # 16K .. 1M
QUICK_LENGTHS = (16384, 65536)
DEADLINE_S = 400.0
ENTRY_CAP_S = 150.0
BENCH_MAX_S = 0.25  # steps shorter than this are timed with common.bench (do_bench), longer ones with events
BENCH_KW = dict(warmup=25, rep=200)
PUBLISHED = {
    "speedup_up_to": 160.0,
    "source": "HyenaDNA (Nguyen et al., NeurIPS 2023): training up to 160x faster than a Transformer with "
    "FlashAttention at sequence length 1M",
}
STATUS_OK, STATUS_OOM = "ok", "oom"
SKIP_DEADLINE, SKIP_CAP = "skipped (deadline)", "skipped (time cap)"


@dataclass(frozen=True)
class Variant:
    """A benchmarked model: a registered genomics model, its attention backend and how its step time grows.

    Attributes:
        registry_name: the :func:`~longseq.core.registry.create_model` name.
        attention_backend: core attention backend (``None`` for attention-free models).
        cost_exponent: step time ~ ``L ** cost_exponent``, used only to predict the next entry's time.
    """

    registry_name: str
    attention_backend: str | None
    cost_exponent: float


VARIANTS: dict[str, Variant] = {
    OURS: Variant("hyena_dna_medium", None, 1.0),
    "transformer_flash": Variant("transformer_dna", "flash", 2.0),
    "transformer_sdpa": Variant("transformer_dna", "sdpa", 2.0),
}
BASELINES = [name for name in VARIANTS if name != OURS]


@dataclass
class ScaleConfig:
    """What to run; validated on creation.

    Attributes:
        lengths: sequence lengths (>= 2, distinct), run in increasing order.
        models: variant names (keys of :data:`VARIANTS`).
        dim, depth: model width and layers (HyenaDNA-sized: 256, 8).
        warmup_steps: untimed steps per entry (compilation, autotuning, allocator warm-up).
        steps: timed steps per entry at most (fewer when the time cap needs it, at least one).
        deadline_s: seconds for the whole run; later entries are recorded as skipped.
        entry_cap_s: longest predicted time of one entry (warm-up plus timed steps).
        grad_checkpointing: ``"off"``, ``"on"`` or ``"auto"`` (off, retried on after running out of memory).
        device: ``"cuda"`` (measurements) or ``"cpu"`` (checks the code path; no memory figures).
        lr: AdamW learning rate.
        seed: seed of the weights and the sequence.
    """

    lengths: tuple[int, ...] = LENGTHS
    models: tuple[str, ...] = tuple(VARIANTS)
    dim: int = 256
    depth: int = 8
    warmup_steps: int = 1
    steps: int = 3
    deadline_s: float = DEADLINE_S
    entry_cap_s: float = ENTRY_CAP_S
    grad_checkpointing: str = "auto"
    device: str = "cuda"
    lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        self.lengths = tuple(int(n) for n in self.lengths)
        self.models = tuple(self.models)
        if not self.lengths:
            raise ValueError("lengths must name at least one sequence length")
        bad = [n for n in self.lengths if n < 2]
        if bad:
            raise ValueError(f"lengths must be >= 2 (the loss predicts the next token), got {bad}")
        if len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"lengths must be distinct, got {list(self.lengths)}")
        self.lengths = tuple(sorted(self.lengths))
        if not self.models:
            raise ValueError(f"models must name at least one of {list(VARIANTS)}")
        unknown = [m for m in self.models if m not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown models {unknown}; expected some of {list(VARIANTS)}")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct, got {list(self.models)}")
        for name in ("dim", "depth", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.deadline_s < 0 or self.entry_cap_s <= 0:
            raise ValueError(f"need deadline_s >= 0 and entry_cap_s > 0, got {self.deadline_s}, {self.entry_cap_s}")
        if self.grad_checkpointing not in ("off", "on", "auto"):
            raise ValueError(f"grad_checkpointing must be 'off', 'on' or 'auto', got {self.grad_checkpointing!r}")
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"device must be 'cuda' or 'cpu', got {self.device!r}")
        from longseq.core.attention import ENV_VAR

        if os.environ.get(ENV_VAR) and any(VARIANTS[m].attention_backend for m in self.models):
            raise ValueError(
                f"${ENV_VAR}={os.environ[ENV_VAR]!r} overrides the attention backend that the transformer variants "
                "name; unset it to benchmark them"
            )

    @property
    def target_length(self) -> int:
        """The length the speed-up is asked for: the largest in ``lengths`` (1M by default)."""
        return max(self.lengths)


def parse_length(text: str) -> int:
    """``"16384"``, ``"16K"`` or ``"1M"`` (K = 1024, M = 1024^2) -> int; a clear error otherwise."""
    s = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20}.get(s[-1:], 1)
    digits = s[:-1] if scale > 1 else s
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"bad length {text!r}: expected an integer, optionally with K or M (16K, 1M)")
    return int(digits) * scale


# --------------------------------------------------------------------------------------------
# models and the training step
# --------------------------------------------------------------------------------------------


def build_model(name: str, L: int, cfg: ScaleConfig) -> torch.nn.Module:
    """The variant ``name`` as a :class:`~longseq.core.models.LanguageModel` for sequences of length ``L``,
    seeded, on ``cfg.device``. Transformers get HyenaDNA's MLP (GELU x4) and norm (LayerNorm, eps 1e-5)."""
    import longseq.apps.genomics  # noqa: F401  (registers the DNA models)
    from longseq.core.registry import create_model

    variant = VARIANTS[name]
    overrides: dict[str, Any] = {"dim": cfg.dim, "depth": cfg.depth}
    if variant.attention_backend is None:
        overrides["max_len"] = L
    else:
        attn = {"backend": variant.attention_backend, "strict_backend": True, "causal": True}
        overrides.update(mixer_kwargs={"attention": attn}, mlp="gelu", mlp_ratio=4.0, norm="layernorm", norm_eps=1e-5)
    torch.manual_seed(cfg.seed)
    return create_model(variant.registry_name, **overrides).to(cfg.device)


def random_dna_ids(L: int, seed: int, device: str) -> torch.Tensor:
    """``(1, L)`` token ids of a uniformly random ACGT sequence, encoded by the genomics tokenizer."""
    from longseq.apps.genomics.tokenizer import DNATokenizer

    bases = np.random.default_rng(seed).choice(np.frombuffer(b"ACGT", dtype=np.uint8), size=L)
    return DNATokenizer().encode(bases.tobytes().decode("ascii")).long().unsqueeze(0).to(device)


def make_train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor
) -> Callable[[], torch.Tensor]:
    """One full training step: zero_grad, bf16-autocast forward with the next-token loss, backward, AdamW."""

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(ids.device.type, dtype=torch.bfloat16):
            loss = model(ids, labels=ids)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _step_ms(step: Callable[[], Any], device: str) -> float:
    """Time of one call in ms: CUDA events on the GPU, wall time on the CPU."""
    if device == "cpu":
        start = time.perf_counter()
        step()
        return (time.perf_counter() - start) * 1e3
    return one_call_ms(step)


# --------------------------------------------------------------------------------------------
# one entry
# --------------------------------------------------------------------------------------------


def plan_entry(predicted_step_s: float | None, cfg: ScaleConfig, seconds_left: float) -> tuple[int, str | None]:
    """Timed steps for an entry whose step is predicted to take ``predicted_step_s`` (None: unknown), or
    ``(0, reason)`` when it must be skipped: ``"skipped (deadline)"`` / ``"skipped (time cap)"`` + why."""
    if seconds_left <= 0:
        return 0, f"{SKIP_DEADLINE}: run deadline of {cfg.deadline_s:g} s reached"
    if predicted_step_s is None:
        return cfg.steps, None
    shortest = predicted_step_s * (cfg.warmup_steps + 1)
    if shortest > cfg.entry_cap_s:
        return 0, f"{SKIP_CAP}: predicted {shortest:.3g} s for the entry > cap of {cfg.entry_cap_s:g} s"
    if shortest > seconds_left:
        return 0, f"{SKIP_DEADLINE}: predicted {shortest:.3g} s for the entry > {seconds_left:.3g} s left"
    fit = int(min(cfg.entry_cap_s, seconds_left) / predicted_step_s) - cfg.warmup_steps
    return max(1, min(cfg.steps, fit)), None


def _measure_once(name: str, L: int, cfg: ScaleConfig, steps: int, checkpointing: bool) -> dict[str, Any]:
    """Build, warm up and time one (variant, L); raises ``torch.OutOfMemoryError`` when it does not fit."""
    cuda = cfg.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = build_model(name, L, cfg)
    model.backbone.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=cuda)
    train_step = make_train_step(model, optimizer, random_dna_ids(L, cfg.seed, cfg.device))
    losses: list[torch.Tensor] = []

    def step() -> None:
        losses[:] = [train_step()]  # keep the last loss to check, without a sync per step

    first_ms = None
    for _ in range(cfg.warmup_steps):
        first_ms = _step_ms(step, cfg.device)  # the last warm-up step estimates the step time
    if cuda and first_ms is not None and first_ms < BENCH_MAX_S * 1e3:
        peak = torch.cuda.max_memory_allocated()  # before do_bench adds its L2-flush buffer
        ms, timing, timed = bench(step, **BENCH_KW), "common.bench (do_bench median)", None
    else:
        times = [_step_ms(step, cfg.device) for _ in range(steps)]
        ms, timing, timed = statistics.median(times), f"median of {steps} timed steps", steps
        peak = torch.cuda.max_memory_allocated() if cuda else None
    loss = float(losses[0])
    return {
        "step_ms": ms,
        "tokens_per_s": L / (ms * 1e-3),
        "peak_mem_gib": None if peak is None else peak / 2**30,
        "timing": timing,
        "timed_steps": timed,
        "loss": loss,
        "loss_finite": math.isfinite(loss),
        "params": sum(p.numel() for p in model.parameters()),
    }


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def measure_entry(
    name: str, L: int, cfg: ScaleConfig, steps: int, *, needed_checkpointing: bool = False
) -> dict[str, Any]:
    """The row of one (variant, L): status ``"ok"`` with the measurements, ``"oom"`` or ``"error: ..."``.
    ``needed_checkpointing``: a shorter L of this variant fitted only with it, so ``"auto"`` starts there."""
    row: dict[str, Any] = {"model": name, "L": L, "attention_backend": VARIANTS[name].attention_backend}
    tries = {"off": [False], "on": [True], "auto": [False, True]}[cfg.grad_checkpointing]
    if needed_checkpointing and cfg.grad_checkpointing == "auto":
        tries = [True]
    attempts: list[dict[str, Any]] = []
    start = time.perf_counter()
    for checkpointing in tries:
        outcome: dict[str, Any] | None = None
        try:
            outcome = _measure_once(name, L, cfg, steps, checkpointing)
        except torch.OutOfMemoryError as exc:
            attempts.append({"grad_checkpointing": checkpointing, "result": "oom", "detail": str(exc)[:200]})
        except Exception as exc:  # e.g. a kernel that cannot run this shape: recorded in the row, run goes on
            attempts.append({"grad_checkpointing": checkpointing, "result": f"error: {type(exc).__name__}: {exc}"})
        _free(cfg.device)  # outside the except block: the traceback no longer holds the step's tensors
        if outcome is not None:
            attempts.append({"grad_checkpointing": checkpointing, "result": STATUS_OK})
            row.update(status=STATUS_OK, grad_checkpointing=checkpointing, **outcome)
            if not outcome["loss_finite"]:
                row["status"] = f"error: non-finite loss {outcome['loss']}"
            break
        if attempts[-1]["result"] != "oom":
            row["status"] = attempts[-1]["result"]
            break
    else:
        row["status"] = STATUS_OOM
    row.update(attempts=attempts, entry_s=time.perf_counter() - start)
    return row


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def _predict_step_s(prev: dict[str, Any] | None, L: int) -> float | None:
    """Step time at ``L`` from the variant's previous ok row, scaled by ``(L / L_prev) ** cost_exponent``."""
    if prev is None:
        return None
    return prev["step_ms"] / 1e3 * (L / prev["L"]) ** VARIANTS[prev["model"]].cost_exponent


def measure(
    cfg: ScaleConfig, on_entry: Callable[[list[Record], dict[str, Any]], None] | None = None
) -> tuple[list[Record], dict[str, Any]]:
    """Run every (variant, L), lengths outermost; returns the records of ok rows and ``meta`` (ours,
    baselines, extra with every row and the speed-up summary). ``on_entry`` gets both after each entry."""
    if cfg.device == "cuda":
        require_cuda()
    end = time.perf_counter() + cfg.deadline_s
    rows: list[dict[str, Any]] = []
    last_ok: dict[str, dict[str, Any]] = {}
    stopped: dict[str, str] = {}  # variant -> why its larger lengths are not run
    for L in cfg.lengths:
        for name in cfg.models:
            predicted = _predict_step_s(last_ok.get(name), L)
            steps, skip = (
                (0, stopped[name]) if name in stopped else plan_entry(predicted, cfg, end - time.perf_counter())
            )
            if skip is not None:
                row = {"model": name, "L": L, "attention_backend": VARIANTS[name].attention_backend, "status": skip}
                if skip.startswith(SKIP_CAP):
                    stopped[name] = f"{SKIP_CAP}: predicted over the cap from L={L} on"
            else:
                needed = bool(last_ok.get(name, {}).get("grad_checkpointing"))
                row = measure_entry(name, L, cfg, steps, needed_checkpointing=needed)
                if row["status"] == STATUS_OK:
                    last_ok[name] = row
                else:
                    stopped[name] = f"skipped (after {row['status'].split(':')[0]} at L={L})"
            row["predicted_step_s"] = predicted
            rows.append(row)
            print(f"[{TOPIC}] {_row_line(row)}", file=sys.stderr, flush=True)
            if on_entry is not None:
                on_entry(*_results(rows, cfg))
    return _results(rows, cfg)


def _row_line(row: dict[str, Any]) -> str:
    if row["status"] != STATUS_OK:
        return f"{row['model']} L={row['L']}: {row['status']}"
    mem = "" if row["peak_mem_gib"] is None else f", peak {row['peak_mem_gib']:.1f} GiB"
    return f"{row['model']} L={row['L']}: {row['step_ms']:.1f} ms/step{mem}, {row['tokens_per_s']:.3g} tokens/s"


def _results(rows: list[dict[str, Any]], cfg: ScaleConfig) -> tuple[list[Record], dict[str, Any]]:
    records = []
    for row in rows:
        if row["status"] != STATUS_OK:
            continue
        shape = {"B": 1, "L": row["L"], "d_model": cfg.dim, "layers": cfg.depth}
        keep = ("tokens_per_s", "peak_mem_gib", "grad_checkpointing", "timing", "loss", "params")
        records.append(
            Record(
                TOPIC, row["model"], shape, "bfloat16", "train_step", row["step_ms"], extra={k: row[k] for k in keep}
            )
        )
    extra = {
        "config": {
            "d_model": cfg.dim,
            "layers": cfg.depth,
            "batch": 1,
            "lengths": list(cfg.lengths),
            "models": {
                m: VARIANTS[m].registry_name
                + (f" ({VARIANTS[m].attention_backend})" if VARIANTS[m].attention_backend else "")
                for m in cfg.models
            },
            "warmup_steps": cfg.warmup_steps,
            "steps": cfg.steps,
            "deadline_s": cfg.deadline_s,
            "entry_cap_s": cfg.entry_cap_s,
            "grad_checkpointing": cfg.grad_checkpointing,
            "device": cfg.device,
            "step": "zero_grad + bf16 autocast forward + chunked LM-head cross-entropy + backward + AdamW step",
        },
        "rows": [dict(r) for r in rows],
        "speedup": speedup_summary(rows, cfg.target_length),
        "published": PUBLISHED,
    }
    baselines = [m for m in cfg.models if m != OURS]
    return records, {"ours": OURS, "baselines": baselines, "extra": extra}


def speedup_summary(rows: Sequence[dict[str, Any]], target_L: int) -> dict[str, Any]:
    """Hyena's speed-up (``transformer_ms / hyena_ms``) per transformer variant: ``measured`` at every L both
    ran, the largest such L, the ratio at ``target_L`` when both ran there, and, kept apart, the
    ``projected_quadratic`` estimate when the transformer did not run at ``target_L``."""
    ok: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["status"] == STATUS_OK:
            ok.setdefault(r["model"], {})[r["L"]] = r["step_ms"]
    hyena = ok.get(OURS, {})
    out: dict[str, Any] = {"target_L": target_L, "hyena_ms_at_target": hyena.get(target_L)}
    for base in dict.fromkeys(r["model"] for r in rows if r["model"] != OURS):
        trans = ok.get(base, {})
        common = sorted(set(hyena) & set(trans))
        measured = [
            {"L": L, "transformer_ms": trans[L], "hyena_ms": hyena[L], "ratio": trans[L] / hyena[L]} for L in common
        ]
        entry: dict[str, Any] = {
            "measured": measured,
            "largest_common_L": common[-1] if common else None,
            "ratio_at_largest_common_L": measured[-1]["ratio"] if measured else None,
            "ratio_at_target_L": trans[target_L] / hyena[target_L] if target_L in common else None,
            "projected_quadratic": None,
        }
        if target_L not in trans and trans:
            from_L = max(trans)
            projected = trans[from_L] * (target_L / from_L) ** 2
            entry["projected_quadratic"] = {
                "label": "projected_quadratic (NOT a measurement)",
                "from_L": from_L,
                "transformer_ms_measured_at_from_L": trans[from_L],
                "transformer_ms_projected_at_target": projected,
                "hyena_ms_measured_at_target": hyena.get(target_L),
                "ratio_projected": projected / hyena[target_L] if target_L in hyena else None,
                "assumption": f"attention-dominated step time, scaled by (target_L / from_L)^2 = ({target_L}/{from_L})^2",
            }
        out[base] = entry
    return out


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


def report_markdown(extra: dict[str, Any]) -> str:
    """Markdown sections of every row and of the speed-ups, measured and projected apart."""
    lines = [
        "## Entries",
        "",
        "| model | L | status | step ms | peak GiB | tokens/s | grad ckpt | timing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in extra["rows"]:
        lines.append(
            f"| {r['model']} | {r['L']} | {r['status']} | {_fmt(r.get('step_ms'), '.1f')} | "
            f"{_fmt(r.get('peak_mem_gib'), '.2f')} | {_fmt(r.get('tokens_per_s'), '.3g')} | "
            f"{r.get('grad_checkpointing', '-')} | {r.get('timing', '-')} |"
        )
    sp = extra["speedup"]
    lines += ["", "## Speed-up of hyena, measured (transformer ms / hyena ms)", ""]
    lines += ["| baseline | L | transformer ms | hyena ms | ratio |", "|---|---|---|---|---|"]
    bases = [b for b in sp if b not in ("target_L", "hyena_ms_at_target")]
    for b in bases:
        for m in sp[b]["measured"]:
            lines.append(f"| {b} | {m['L']} | {m['transformer_ms']:.1f} | {m['hyena_ms']:.1f} | {m['ratio']:.2f}x |")
    for b in bases:
        e = sp[b]
        largest = "none" if e["largest_common_L"] is None else f"{e['ratio_at_largest_common_L']:.2f}x"
        at_target = "not measured" if e["ratio_at_target_L"] is None else f"{e['ratio_at_target_L']:.2f}x"
        lines.append(
            f"\n{b}: largest L both ran: {e['largest_common_L'] or 'none'} (ratio {largest}); "
            f"measured ratio at L={sp['target_L']}: {at_target}"
        )
    projected = [(b, sp[b]["projected_quadratic"]) for b in bases if sp[b]["projected_quadratic"]]
    if projected:
        lines += ["", f"## Projected, NOT measured: transformer at L={sp['target_L']} (projected_quadratic)", ""]
        lines += ["| baseline | from L | measured ms there | projected ms | hyena ms (measured) | projected ratio |"]
        lines += ["|---|---|---|---|---|---|"]
        for b, p in projected:
            lines.append(
                f"| {b} | {p['from_L']} | {p['transformer_ms_measured_at_from_L']:.1f} | "
                f"{p['transformer_ms_projected_at_target']:.0f} | {_fmt(p['hyena_ms_measured_at_target'], '.1f')} | "
                f"{_fmt(p['ratio_projected'], '.1f')}{'x' if p['ratio_projected'] is not None else ''} |"
            )
        lines += ["", "Projection: attention-dominated cost scaled by (target L / from L)^2."]
    lines += ["", f"Published: {PUBLISHED['source']}."]
    return "\n".join(lines) + "\n"


def write(
    records: list[Record],
    meta: dict[str, Any],
    *,
    name: str = TOPIC,
    out_dir: str | os.PathLike[str] | None = None,
    device: dict[str, Any] | None = None,
    quiet: bool = False,
) -> Path:
    """``write_results`` plus the entries and speed-up sections appended to the markdown; returns the JSON
    path. ``quiet`` keeps the markdown off stdout (the rewrites after each entry)."""
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        path = write_results(
            name, records, baselines=meta["baselines"], ours=meta["ours"], extra=meta["extra"], out_dir=out_dir,
            device=device,
        )  # fmt: skip
    md = path.with_suffix(".md")
    md.write_text(md.read_text() + "\n" + report_markdown(meta["extra"]))
    return path


def plot_scale(json_path: str | os.PathLike[str]) -> Path:
    """Chart a results JSON into ``<same stem>.png``: step time and peak memory against L per variant (log
    axes); a transformer's ``projected_quadratic`` time is drawn apart, hollow and dashed. Returns the path."""
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    json_path = Path(json_path)
    payload = json.loads(json_path.read_text())
    extra = payload["extra"]
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_m = fig.subplots(1, 2)
    for i, name in enumerate(dict.fromkeys(r["model"] for r in extra["rows"])):
        ok = [r for r in extra["rows"] if r["model"] == name and r["status"] == STATUS_OK]
        color = f"C{i}"
        if ok:
            ax_t.plot([r["L"] for r in ok], [r["step_ms"] for r in ok], "o-", color=color, label=name)
            mem = [r for r in ok if r["peak_mem_gib"] is not None]
            if mem:
                ax_m.plot([r["L"] for r in mem], [r["peak_mem_gib"] for r in mem], "o-", color=color, label=name)
        proj = (extra["speedup"].get(name) or {}).get("projected_quadratic")
        if proj:
            xs = [proj["from_L"], extra["speedup"]["target_L"]]
            ys = [proj["transformer_ms_measured_at_from_L"], proj["transformer_ms_projected_at_target"]]
            ax_t.plot(xs, ys, "o--", color=color, mfc="none", label=f"{name} projected (not measured)")
    ax_t.set(xscale="log", yscale="log", xlabel="L (tokens, batch 1)", ylabel="ms per training step")
    ax_t.set_title("training step time", fontsize=10)
    ax_m.set(xscale="log", xlabel="L (tokens, batch 1)", ylabel="peak allocated GiB")
    ax_m.set_title("peak memory", fontsize=10)
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return save_figure(fig, payload, json_path)


def run(quick: bool) -> tuple[list[Record], dict[str, Any]]:
    """Harness entry (``python -m benchmarks.run genomics_scale``): every variant at 16K..1M (``quick``:
    16K and 64K) within :data:`DEADLINE_S`. Use the module's CLI to keep rows of a killed run."""
    return measure(ScaleConfig(lengths=QUICK_LENGTHS if quick else LENGTHS))


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``python -m benchmarks.genomics_scale``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.genomics_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", nargs="+", type=parse_length, default=list(LENGTHS), help="e.g. 16K 64K 1M")
    p.add_argument("--models", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds for the whole run")
    p.add_argument("--entry-cap", type=float, default=ENTRY_CAP_S, help="longest predicted seconds of one entry")
    p.add_argument("--steps", type=int, default=3, help="timed steps per entry (long steps)")
    p.add_argument("--warmup-steps", type=int, default=1, help="untimed steps per entry")
    p.add_argument("--dim", type=int, default=256, help="d_model")
    p.add_argument("--depth", type=int, default=8, help="layers")
    p.add_argument("--grad-checkpointing", choices=("auto", "off", "on"), default="auto")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: check the code path only")
    p.add_argument("--name", default=TOPIC, help=f"output file stem (default: {TOPIC})")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $LONGSEQ_BENCH_OUT or results/)")
    p.add_argument("--no-plot", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> Path:
    """Run, writing ``<out>/<name>-<device>.json`` and ``.md`` after every entry (and a ``.png`` at the end);
    returns the JSON path."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = ScaleConfig(
            lengths=tuple(args.lengths), models=tuple(args.models), dim=args.dim, depth=args.depth,
            warmup_steps=args.warmup_steps, steps=args.steps, deadline_s=args.deadline, entry_cap_s=args.entry_cap,
            grad_checkpointing=args.grad_checkpointing, device=args.device,
        )  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    if cfg.device == "cuda":
        try:
            require_cuda()
        except RuntimeError as exc:
            parser.exit(1, f"{parser.prog}: error: {exc} (or pass --device cpu to check the code path)\n")
    from benchmarks.common import device_info

    device = device_info()
    if cfg.device == "cpu":
        device.update(gpu_name=None, slug="cpu")
    records, meta = measure(cfg, lambda r, m: write(r, m, name=args.name, out_dir=args.out, device=device, quiet=True))
    path = write(records, meta, name=args.name, out_dir=args.out, device=device)
    print(report_markdown(meta["extra"]))
    if not args.no_plot:
        print(f"wrote {plot_scale(path)}")
    return path


if __name__ == "__main__":
    main()
