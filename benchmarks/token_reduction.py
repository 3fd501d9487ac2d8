"""Token reduction benchmark: inference images/s of timm ViT-B/16 and ViT-L/16 (224 px, bf16, batch 256)
with ToMe (r = 8, 13, 16) and EViT (keep 0.7 at EViT's layers) against the unmodified timm model, eager
and under ``torch.compile``, plus a profile of ToMe's matching and merge as a share of the ViT-B forward.

Every variant is the same randomly initialised timm model (speed does not depend on the weights; nothing is
downloaded) patched by :func:`longseq.core.reduction.apply_token_reduction`. Ratios are
``timm_ms / variant_ms`` within one run, eager against eager and compiled against compiled. The target is
ToMe r = 13 >= 1.8x on ViT-B (``extra["target"]``).

    python -m benchmarks.run token_reduction             # both models (the harness; GPU)
    python -m benchmarks.token_reduction --models vit_b16 --batch 256 --out /tmp/bench
    python -m benchmarks.token_reduction --smoke --out /tmp/bench   # tiny ViT on CPU, a check of the code path

The profile (``extra["tome_profile"]``) times, per block of ToMe r = 13, the bipartite matching
(:func:`bipartite_soft_matching` on the head-mean keys) and the merge (:func:`merge_wavg`: the size-weighted
scatter of tokens and sizes) on tensors of that block's shape, and divides their sum by the whole forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Record, bench, plot_results, require_cuda, write_results

TOPIC = "token_reduction"
MODELS = {"vit_b16": "vit_base_patch16_224", "vit_l16": "vit_large_patch16_224"}
#: variant -> (method, kwargs) for ``apply_token_reduction``; ``None`` is the unmodified timm model.
VARIANTS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "timm": None,
    "tome_r8": ("tome", {"r": 8}),
    "tome_r13": ("tome", {"r": 13}),
    "tome_r16": ("tome", {"r": 16}),
    "evit_0.7": ("evit", {"keep_rate": 0.7}),
}
OURS, BASELINE = "tome_r13", "timm"
TARGET_SPEEDUP = 1.8
PROFILE_R = 13
SMOKE_MODEL = dict(depth=2, embed_dim=64, num_heads=2)  # a tiny vit_base for --smoke


@dataclass
class Config:
    """What one run measures."""

    models: tuple[str, ...] = tuple(MODELS)
    batch: int = 256
    img: int = 224
    dtype: torch.dtype = torch.bfloat16
    compile: bool = True
    profile: bool = True
    smoke: bool = False
    deadline_s: float = 540.0
    device: str = "cuda"
    compile_backend: str = "inductor"
    skipped: list[dict[str, Any]] = field(default_factory=list)


def smoke_config() -> Config:
    """Tiny ViT (2 blocks, width 64) at 64 px, batch 2, fp32 on CPU; compile through dynamo only."""
    return Config(
        models=("vit_b16",),
        batch=2,
        img=64,
        dtype=torch.float32,
        smoke=True,
        device="cpu",
        compile_backend="eager",
        deadline_s=120.0,
    )


def build_model(model_key: str, variant: str, cfg: Config) -> torch.nn.Module:
    """A seeded timm model in eval mode on ``cfg.device`` in ``cfg.dtype``, patched for ``variant``."""
    import timm

    from longseq.core.reduction import apply_token_reduction

    torch.manual_seed(0)
    extra = SMOKE_MODEL if cfg.smoke else {}
    model = timm.create_model(MODELS[model_key], pretrained=False, img_size=cfg.img, **extra)
    model = model.eval().to(device=cfg.device, dtype=cfg.dtype)
    spec = VARIANTS[variant]
    if spec is not None:
        method, kwargs = spec
        apply_token_reduction(model, method, **kwargs)
    return model


def cpu_ms(fn: Callable[[], Any], n: int = 5) -> float:
    """Median wall time of ``fn`` in ms (the CPU smoke mode's timer)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_fn(fn: Callable[[], Any], cfg: Config) -> float:
    """GPU time (``bench``) on CUDA, wall time on CPU; one warm-up call first."""
    fn()
    if cfg.device == "cpu":
        return cpu_ms(fn)
    return bench(fn, warmup=25, rep=100)


def final_tokens(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Tokens left after the last block."""
    with torch.no_grad():
        return int(model.forward_features(images).shape[1])


def time_variant(model_key: str, variant: str, compiled: bool, cfg: Config) -> Record:
    """Images/s of one variant of one model, eager or compiled."""
    model = build_model(model_key, variant, cfg)
    images = torch.randn(cfg.batch, 3, cfg.img, cfg.img, device=cfg.device, dtype=cfg.dtype)
    tokens = final_tokens(model, images)
    fn = torch.compile(model, backend=cfg.compile_backend) if compiled else model

    def step() -> torch.Tensor:
        with torch.no_grad():
            return fn(images)

    ms = time_fn(step, cfg)
    shape = {"model": model_key, "B": cfg.batch, "img": cfg.img, "compiled": int(compiled)}
    rec = Record(TOPIC, variant, shape, str(cfg.dtype).removeprefix("torch."), "fwd", ms)
    rec.extra.update(img_per_s=cfg.batch / (ms * 1e-3), final_tokens=tokens)
    print(f"[{TOPIC}] {model_key} {variant} compiled={compiled}: {ms:.3f} ms", file=sys.stderr)
    return rec


def tome_lengths(num_tokens: int, num_prefix: int, depth: int, r: int) -> list[int]:
    """The token count entering every block of ToMe with ``r`` (each block clips r to half its patches)."""
    lengths, L = [], num_tokens
    for _ in range(depth):
        lengths.append(L)
        L -= min(r, (L - num_prefix) // 2)
    return lengths


def profile_tome(model_key: str, cfg: Config) -> dict[str, Any]:
    """Matching and merge time of ToMe r = ``PROFILE_R``, per block and as a share of the eager forward."""
    from longseq.core.reduction import bipartite_soft_matching, merge_wavg

    model = build_model(model_key, f"tome_r{PROFILE_R}", cfg)
    images = torch.randn(cfg.batch, 3, cfg.img, cfg.img, device=cfg.device, dtype=cfg.dtype)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(images)

    total = time_fn(forward, cfg)
    P, B, C = model.num_prefix_tokens, cfg.batch, model.embed_dim
    num_tokens = model.patch_embed.num_patches + P
    head_dim = model.blocks[0].attn.head_dim
    blocks, match_sum, merge_sum = [], 0.0, 0.0
    for L in tome_lengths(num_tokens, P, len(model.blocks), PROFILE_R):
        r = min(PROFILE_R, (L - P) // 2)
        if r == 0:
            break
        metric = torch.randn(B, L, head_dim, device=cfg.device, dtype=cfg.dtype)
        x = torch.randn(B, L, C, device=cfg.device, dtype=cfg.dtype)
        sizes = torch.ones(B, L, 1, device=cfg.device)
        merge = bipartite_soft_matching(metric, r, P)
        match_ms = time_fn(lambda m=metric, r=r: bipartite_soft_matching(m, r, P), cfg)
        merge_ms = time_fn(lambda mg=merge, x=x, s=sizes: merge_wavg(mg, x, s), cfg)
        blocks.append({"L": L, "r": r, "match_ms": match_ms, "merge_ms": merge_ms})
        match_sum += match_ms
        merge_sum += merge_ms
    return {
        "model": model_key,
        "r": PROFILE_R,
        "forward_ms": total,
        "match_ms": match_sum,
        "merge_ms": merge_sum,
        "fraction_match": match_sum / total,
        "fraction_merge": merge_sum / total,
        "fraction_total": (match_sum + merge_sum) / total,
        "blocks": blocks,
        "method": "each op timed alone on random tensors of the block's shape (matching does not depend on values)",
    }


def speedups(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Images/s of every record with its speed-up over ``timm`` on the same model, batch and compile flag."""
    key = lambda r: (r.shape["model"], r.shape["B"], r.shape["img"], r.shape["compiled"])  # noqa: E731
    base = {key(r): r for r in records if r.name == BASELINE}
    rows = []
    for r in records:
        b = base.get(key(r))
        rows.append(
            {
                "model": r.shape["model"],
                "compiled": bool(r.shape["compiled"]),
                "variant": r.name,
                "img_per_s": r.extra["img_per_s"],
                "final_tokens": r.extra["final_tokens"],
                "speedup_vs_timm": None if b is None else b.ms / r.ms,
            }
        )
    return rows


def target_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """ToMe r = 13 against timm on ViT-B, eager and compiled, with whether each meets ``TARGET_SPEEDUP``."""
    out: dict[str, Any] = {"target": TARGET_SPEEDUP, "model": "vit_b16", "variant": OURS}
    for row in rows:
        if row["model"] == "vit_b16" and row["variant"] == OURS and row["speedup_vs_timm"] is not None:
            mode = "compiled" if row["compiled"] else "eager"
            out[mode] = {"speedup": row["speedup_vs_timm"], "met": row["speedup_vs_timm"] >= TARGET_SPEEDUP}
    return out


def measure(cfg: Config) -> tuple[list[Record], dict[str, Any]]:
    """Every model x variant eager, then compiled (skipped once the deadline passes); then the profile."""
    if cfg.device == "cuda":
        require_cuda()
    end = time.perf_counter() + cfg.deadline_s
    records: list[Record] = []
    for compiled in (False, True) if cfg.compile else (False,):
        for model_key in cfg.models:
            for variant in VARIANTS:
                if time.perf_counter() > end:
                    cfg.skipped.append(
                        {"model": model_key, "variant": variant, "compiled": compiled, "reason": "deadline"}
                    )
                    continue
                try:
                    records.append(time_variant(model_key, variant, compiled, cfg))
                except torch.OutOfMemoryError:
                    cfg.skipped.append({"model": model_key, "variant": variant, "compiled": compiled, "reason": "OOM"})
                if cfg.device == "cuda":
                    torch.cuda.empty_cache()
            torch._dynamo.reset()
    rows = speedups(records)
    extra: dict[str, Any] = {
        "config": {
            "models": {k: MODELS[k] for k in cfg.models},
            "batch": cfg.batch,
            "img": cfg.img,
            "dtype": str(cfg.dtype).removeprefix("torch."),
            "compile_backend": cfg.compile_backend if cfg.compile else None,
            "smoke": cfg.smoke,
            "smoke_model": SMOKE_MODEL if cfg.smoke else None,
            "evit_layers": "default_evit_layers(depth): 3, 6, 9 of 12; 6, 12, 18 of 24",
        },
        "throughput": rows,
        "target": target_summary(rows),
        "skipped": cfg.skipped,
    }
    if cfg.profile and "vit_b16" in cfg.models:
        extra["tome_profile"] = profile_tome("vit_b16", cfg)
    baselines = [v for v in VARIANTS if v != OURS]
    return records, {"ours": OURS, "baselines": baselines, "extra": extra}


def run(quick: bool) -> tuple[list[Record], dict[str, Any]]:
    """The harness entry (``python -m benchmarks.run token_reduction``): GPU; ``quick`` measures ViT-B only."""
    cfg = Config(models=("vit_b16",) if quick else tuple(MODELS))
    return measure(cfg)


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``python -m benchmarks.token_reduction``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.token_reduction", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--no-profile", action="store_true", help="skip the ToMe matching/merge profile")
    p.add_argument("--deadline", type=float, default=540.0, help="seconds after which remaining cases are skipped")
    p.add_argument("--smoke", action="store_true", help="tiny model and batch on CPU (checks the code path)")
    p.add_argument("--name", default=TOPIC, help="output file stem (default: token_reduction)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $LONGSEQ_BENCH_OUT or results/)")
    p.add_argument("--no-plot", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> Path:
    """Run, write ``<out>/<name>-<device>.json``/``.md`` (and ``.png``); returns the JSON path."""
    args = build_parser().parse_args(argv)
    if args.smoke:
        cfg = replace(smoke_config(), compile=not args.no_compile, profile=not args.no_profile)
    else:
        cfg = Config(
            models=tuple(args.models),
            batch=args.batch,
            img=args.img,
            compile=not args.no_compile,
            profile=not args.no_profile,
            deadline_s=args.deadline,
        )
    records, meta = measure(cfg)
    device = None
    if cfg.device == "cpu":
        from benchmarks.common import device_info

        device = {**device_info(), "gpu_name": None, "slug": "cpu"}
    path = write_results(
        args.name,
        records,
        baselines=meta["baselines"],
        ours=meta["ours"],
        extra=meta["extra"],
        out_dir=args.out,
        device=device,
    )
    if not args.no_plot:
        print(f"wrote {plot_results(path)}")
    return path


if __name__ == "__main__":
    main()
