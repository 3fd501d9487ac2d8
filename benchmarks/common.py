"""Shared helpers for the benchmarks: GPU timing, device description, result files and charts.

Every topic module (``benchmarks/<topic>.py``) builds a list of :class:`Record` (one timing of one
variant on one shape and pass) and :mod:`benchmarks.run` turns them into
``<out>/<topic>-<device-slug>.json``, a markdown table ``.md`` and a chart ``.png``.

Ratios are always ``baseline_ms / ours_ms``: above 1 means our kernel is faster.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OUT_ENV = "LONGSEQ_BENCH_OUT"

# Words in GPU names that never identify the chip ("NVIDIA GeForce RTX 4090" -> "rtx4090").
_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro", "amd", "radeon", "instinct"}
_JOIN_NEXT = {"rtx", "gtx"}


# --------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------


def require_cuda() -> torch.device:
    """Return the current CUDA device, or raise a clear error: benchmarks measure GPU time only."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            "benchmarks measure GPU time only, but CUDA is not available "
            "(torch.cuda.is_available() is False); run them on a machine with a CUDA GPU"
        )
    return torch.device("cuda", torch.cuda.current_device())


def device_slug(gpu_name: str | None) -> str:
    """Short, stable file-name tag for a GPU: ``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``.

    Lowercases, drops vendor words (nvidia, geforce, ...) and keeps the first remaining token, so
    memory size or form factor (PCIe, SXM, NVL) never changes the name. ``None`` gives ``"cpu"``.
    """
    if not gpu_name:
        return "cpu"
    tokens = [t for t in re.split(r"[^a-z0-9]+", gpu_name.lower()) if t and t not in _VENDOR_WORDS]
    if not tokens:
        return "gpu"
    if tokens[0] in _JOIN_NEXT and len(tokens) > 1:
        return tokens[0] + tokens[1]
    return tokens[0]


def _git_commit() -> str | None:
    """Commit of the checkout the benchmarks run from, or None when there is no git metadata.

    ``LONGSEQ_GIT_COMMIT`` overrides it: a copy of the tree on another machine (the device) may carry
    stale git metadata."""
    if os.environ.get("LONGSEQ_GIT_COMMIT"):
        return os.environ["LONGSEQ_GIT_COMMIT"][:12]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _gpu_info() -> dict[str, Any]:
    """Name, compute capability, SM count and memory of the current GPU (all None without CUDA)."""
    if not torch.cuda.is_available():
        return {"gpu_name": None, "compute_capability": None, "sm_count": None, "total_memory_gib": None}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "gpu_name": torch.cuda.get_device_name(),
        "compute_capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "total_memory_gib": round(props.total_memory / 2**30, 1),
    }


def device_info() -> dict[str, Any]:
    """Describe the GPU and software stack, without host names or machine paths.

    Keys: gpu_name, compute_capability, sm_count, total_memory_gib, slug, torch, triton, python,
    cuda, git_commit, date_utc (ISO 8601).
    """
    import triton

    info = _gpu_info()
    info.update(
        slug=device_slug(info["gpu_name"]),
        torch=torch.__version__,
        triton=triton.__version__,
        python=platform.python_version(),
        cuda=torch.version.cuda,
        git_commit=_git_commit(),
        date_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return info


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def parts_from_env(env: str, names: Sequence[str]) -> list[str]:
    """The benchmark parts named in the comma-separated environment variable ``env`` (all of ``names``
    when unset), in ``names``' order; an unknown name raises ``ValueError`` listing the valid ones."""
    chosen = [n.strip() for n in os.environ.get(env, ",".join(names)).split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"{env} names unknown parts {unknown}; valid: {', '.join(names)}")
    return [n for n in names if n in chosen]


def bench(fn: Callable[[], Any], *, warmup: int = 25, rep: int = 100) -> float:
    """Median run time of ``fn`` in milliseconds, measured on the GPU with ``triton.testing.do_bench``.

    ``warmup`` and ``rep`` are time budgets in ms, as in ``do_bench`` (which also flushes the L2 cache
    before each timed call). Raises RuntimeError when CUDA is unavailable.
    """
    require_cuda()
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def one_call_ms(fn: Callable[[], Any]) -> float:
    """Time of one call of ``fn`` in ms, by CUDA events from an idle GPU: for calls too long to repeat
    under :func:`bench`. Raises RuntimeError without CUDA."""
    require_cuda()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def host_ms(fn: Callable[[], Any], *, n: int = 25) -> float:
    """Median host (CPU) time in ms to issue one call of ``fn``, starting from an idle GPU.

    When this is close to the GPU time from :func:`bench`, the case is launch-bound: Python, dispatch
    and autograd overhead, not the kernels, set its speed. Raises RuntimeError without CUDA.
    """
    require_cuda()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    return statistics.median(times) * 1e3


def measure_copy_bandwidth(nbytes: int = 2**30) -> float:
    """Device-to-device copy bandwidth in GB/s (1e9 bytes/s), counting bytes read plus bytes written.

    This is the practical HBM ceiling that memory-bound kernels are compared against.
    """
    ms = _copy_ms(nbytes, require_cuda())
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _copy_ms(nbytes: int, device: torch.device) -> float:
    """Median ms of copying ``nbytes`` bytes between two buffers on ``device``."""
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return bench(lambda: dst.copy_(src))


# --------------------------------------------------------------------------------------------
# records and ratios
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One timing: a variant (``name``) of a ``topic`` on one shape, dtype and pass.

    ``pass_`` is "fwd", "bwd" or "fwd+bwd" (stored as "pass" in JSON). ``nbytes`` and ``flops`` are
    the work the pass must do at minimum, the same for every variant, so ``gbps`` and ``tflops`` are
    effective throughputs. ``extra`` holds anything else (correctness, fraction of copy bandwidth).
    """

    topic: str
    name: str
    shape: dict[str, int]
    dtype: str
    pass_: str
    ms: float
    nbytes: int | None = None
    flops: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gbps(self) -> float | None:
        """Effective bandwidth in GB/s (1e9 bytes/s), or None without a byte count."""
        return None if self.nbytes is None else self.nbytes / (self.ms * 1e-3) / 1e9

    @property
    def tflops(self) -> float | None:
        """Throughput in TFLOP/s, or None without a flop count."""
        return None if self.flops is None else self.flops / (self.ms * 1e-3) / 1e12

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, derived throughputs included."""
        return {
            "topic": self.topic,
            "name": self.name,
            "shape": dict(self.shape),
            "dtype": self.dtype,
            "pass": self.pass_,
            "ms": self.ms,
            "bytes": self.nbytes,
            "flops": self.flops,
            "gbps": self.gbps,
            "tflops": self.tflops,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """Inverse of :meth:`to_dict` (derived keys are ignored)."""
        return cls(
            topic=d["topic"],
            name=d["name"],
            shape=dict(d["shape"]),
            dtype=d["dtype"],
            pass_=d["pass"],
            ms=d["ms"],
            nbytes=d.get("bytes"),
            flops=d.get("flops"),
            extra=dict(d.get("extra") or {}),
        )


def _case_key(shape: dict[str, int], dtype: str, pass_: str) -> tuple[Any, ...]:
    return (tuple(sorted(shape.items())), dtype, pass_)


def compute_ratios(records: Iterable[Record], *, baselines: Sequence[str], ours: str) -> list[dict[str, Any]]:
    """For every case (shape, dtype, pass) timed for ``ours``, ``baseline_ms / ours_ms`` per baseline.

    Cases where a baseline is missing (e.g. it failed) are skipped for that baseline.
    """
    records = list(records)
    index = {(r.name, *_case_key(r.shape, r.dtype, r.pass_)): r for r in records}
    ratios = []
    for r in records:
        if r.name != ours:
            continue
        for b in baselines:
            base = index.get((b, *_case_key(r.shape, r.dtype, r.pass_)))
            if base is None:
                continue
            ratios.append(
                {
                    "shape": dict(r.shape),
                    "dtype": r.dtype,
                    "pass": r.pass_,
                    "ours": ours,
                    "baseline": b,
                    "ours_ms": r.ms,
                    "baseline_ms": base.ms,
                    "ratio": base.ms / r.ms,
                }
            )
    return ratios


def summarize_ratios(ratios: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Min, median and max ratio per (pass, baseline), in first-seen order."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in ratios:
        groups.setdefault((r["pass"], r["baseline"]), []).append(r["ratio"])
    return [
        {"pass": p, "baseline": b, "n": len(v), "min": min(v), "median": statistics.median(v), "max": max(v)}
        for (p, b), v in groups.items()
    ]


# --------------------------------------------------------------------------------------------
# result files
# --------------------------------------------------------------------------------------------


def resolve_out_dir(out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Output folder: ``out_dir`` (``--out``), else ``$LONGSEQ_BENCH_OUT``, else ``benchmarks/results``."""
    if out_dir is not None:
        return Path(out_dir)
    env = os.environ.get(OUT_ENV)
    return Path(env) if env else RESULTS_DIR


def shape_label(shape: dict[str, int], sep: str = ", ") -> str:
    """``{"M": 16384, "N": 4096}`` -> ``"M=16384, N=4096"``."""
    return sep.join(f"{k}={v}" for k, v in shape.items())


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _cases(records: Sequence[Record], ours: str) -> dict[tuple[Any, ...], dict[str, int]]:
    """Distinct cases (key -> shape as given) in record order, ours first so its cases lead."""
    cases: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in sorted(records, key=lambda r: r.name != ours):
        cases.setdefault(_case_key(r.shape, r.dtype, r.pass_), r.shape)
    return cases


def _check_cell(r: Record | None) -> str:
    if r is None or "correct" not in r.extra:
        return "-"
    rel = r.extra.get("rel_err")
    return ("ok" if r.extra["correct"] else "FAIL") + ("" if rel is None else f" ({rel:.1e})")


def markdown_table(
    records: Sequence[Record], *, baselines: Sequence[str], ours: str, copy_gbps: float | None = None
) -> str:
    """One row per case: ms of every variant, our GB/s (% of copy bandwidth) or TFLOP/s, check, ratios.

    Throughput columns appear only when some record has a byte (or flop) count; a "launch-bound"
    column (variants whose ``extra["launch_bound"]`` is true) only when some record has that key.
    """
    names = [ours, *baselines]
    index = {(r.name, *_case_key(r.shape, r.dtype, r.pass_)): r for r in records}
    with_gbps = any(r.nbytes is not None for r in records)
    with_tflops = any(r.flops is not None for r in records)
    header = ["pass", "shape", "dtype", *(f"{n} ms" for n in names)]
    header += [f"{ours} GB/s"] if with_gbps else []
    header += ["% copy BW"] if with_gbps and copy_gbps else []
    header += [f"{ours} TFLOP/s"] if with_tflops else []
    with_launch = any("launch_bound" in r.extra for r in records)
    header += ["check", *(f"vs {b}" for b in baselines)]
    header += ["launch-bound"] if with_launch else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, shape in _cases(records, ours).items():
        mine = index.get((ours, *key))
        row = [key[2], shape_label(shape), key[1]]
        row += [_fmt(index[(n, *key)].ms if (n, *key) in index else None, "#.4g") for n in names]
        gbps = mine.gbps if mine else None
        row += [_fmt(gbps, ".0f")] if with_gbps else []
        row += [_fmt(None if gbps is None else 100 * gbps / copy_gbps, ".0f")] if with_gbps and copy_gbps else []
        row += [_fmt(mine.tflops if mine else None, ".1f")] if with_tflops else []
        row.append(_check_cell(mine))
        for b in baselines:
            base = index.get((b, *key))
            row.append(f"{base.ms / mine.ms:.2f}x" if base and mine else "-")
        if with_launch:
            bound = [n for n in names if (n, *key) in index and index[(n, *key)].extra.get("launch_bound")]
            row.append(", ".join(bound) or "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_markdown(payload: dict[str, Any]) -> str:
    """Full markdown report of a results payload (as written to JSON)."""
    dev, extra = payload["device"], payload["extra"]
    records = [Record.from_dict(d) for d in payload["records"]]
    copy_gbps = extra.get("copy_bandwidth_gbps")
    parts = [
        f"# {payload['topic']} on {dev.get('gpu_name') or 'no GPU'}",
        "",
        f"{dev.get('date_utc')} · torch {dev.get('torch')} · triton {dev.get('triton')} · "
        f"CUDA {dev.get('cuda')} · commit {dev.get('git_commit')}"
        + (f" · copy bandwidth {copy_gbps:.0f} GB/s" if copy_gbps else ""),
        "",
        f"Ratios are baseline_ms / {payload['ours']}_ms: above 1 means {payload['ours']} is faster.",
        "",
        markdown_table(records, baselines=payload["baselines"], ours=payload["ours"], copy_gbps=copy_gbps),
    ]
    if payload["summary"]:
        parts += [
            "",
            "## Ratio summary",
            "",
            "| pass | baseline | n | min | median | max |",
            "|---|---|---|---|---|---|",
        ]
        parts += [
            f"| {s['pass']} | {s['baseline']} | {s['n']} | {s['min']:.2f}x | {s['median']:.2f}x | {s['max']:.2f}x |"
            for s in payload["summary"]
        ]
    if extra:
        parts += ["", "## Extra", "", "```json", json.dumps(extra, indent=2, default=str), "```"]
    return "\n".join(parts) + "\n"


def write_results(
    topic: str,
    records: Iterable[Record],
    *,
    baselines: Sequence[str],
    ours: str,
    extra: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    device: dict[str, Any] | None = None,
) -> Path:
    """Write ``<out>/<topic>-<slug>.json`` and ``.md``, print the markdown, return the JSON path.

    JSON keys: topic, ours, baselines, device (:func:`device_info`), extra, records
    (:meth:`Record.to_dict`), ratios (:func:`compute_ratios`) and summary (:func:`summarize_ratios`).
    ``device`` overrides :func:`device_info` (for tests); ``out_dir`` as in :func:`resolve_out_dir`.
    """
    device = device_info() if device is None else device
    payload = {
        "topic": topic,
        "ours": ours,
        "baselines": list(baselines),
        "device": device,
        "extra": dict(extra or {}),
        "records": [r.to_dict() for r in records],
    }
    out = resolve_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{topic}-{device.get('slug') or device_slug(device.get('gpu_name'))}"
    json_path = out / f"{stem}.json"
    print(write_payload(payload, json_path))
    return json_path


def write_payload(payload: dict[str, Any], json_path: Path) -> str:
    """Set ``payload``'s ratios (:func:`compute_ratios`) and summary from its records, baselines and ours;
    write it to ``json_path`` and its markdown beside it as ``.md``; return the markdown."""
    records = [Record.from_dict(d) for d in payload["records"]]
    payload["ratios"] = compute_ratios(records, baselines=payload["baselines"], ours=payload["ours"])
    payload["summary"] = summarize_ratios(payload["ratios"])
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    markdown = render_markdown(payload)
    json_path.with_suffix(".md").write_text(markdown)
    return markdown


# --------------------------------------------------------------------------------------------
# chart
# --------------------------------------------------------------------------------------------


def _grouped_bars(
    ax: Any, labels: list[str], series: dict[str, list[float | None]], colors: list[str], fmt: str
) -> None:
    """Bars of several series side by side at each label; missing values are left out."""
    width = 0.8 / max(len(series), 1)
    for i, ((name, values), color) in enumerate(zip(series.items(), colors)):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        pts = [(x, v) for x, v in zip(xs, values) if v is not None]
        if not pts:
            continue
        bars = ax.bar([p[0] for p in pts], [p[1] for p in pts], width, label=name, color=color)
        ax.bar_label(bars, fmt=fmt, fontsize=7, padding=1)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.margins(y=0.12)  # room for the value labels above the bars
    ax.grid(axis="y", alpha=0.3)


def _throughput(rec: Record | None, use_gbps: bool) -> float | None:
    if rec is None:
        return None
    return rec.gbps if use_gbps else rec.tflops


def plot_results(json_path: str | os.PathLike[str]) -> Path:
    """Chart a results JSON into ``<same stem>.png`` (Agg, no display) and return its path.

    Two stacked panels per pass: the speed-up of ours over each baseline (dashed line at 1 = parity),
    then the throughput of every variant (GB/s, or TFLOP/s when no byte count) with the measured copy
    bandwidth as a dashed line when known. Panels are full width so many shapes stay readable.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    json_path = Path(json_path)
    payload = json.loads(json_path.read_text())
    ours, recs = payload["ours"], [Record.from_dict(d) for d in payload["records"]]
    baselines = [b for b in payload["baselines"] if any(r.name == b for r in recs)]
    passes = list(dict.fromkeys(r.pass_ for r in recs))
    index = {(r.name, *_case_key(r.shape, r.dtype, r.pass_)): r for r in recs}
    ratio_index = {
        (q["baseline"], *_case_key(q["shape"], q["dtype"], q["pass"])): q["ratio"] for q in payload["ratios"]
    }
    copy_gbps = payload["extra"].get("copy_bandwidth_gbps")
    use_gbps = any(r.nbytes is not None for r in recs)
    all_cases = _cases(recs, ours)
    colors = {n: f"C{i}" for i, n in enumerate([ours, *baselines])}  # one colour per variant in both rows

    n_cases = max((sum(k[2] == p for k in all_cases) for p in passes), default=1)
    fig = Figure(figsize=(max(8.0, 1.1 * n_cases), 3.6 * 2 * max(len(passes), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * max(len(passes), 1), 1, squeeze=False)
    for col, pass_ in enumerate(passes):
        cases = [k for k in all_cases if k[2] == pass_]
        several_dtypes = len({k[1] for k in cases}) > 1  # then the dtype tells cases of one shape apart
        labels = [shape_label(all_cases[k], sep="\n") + (f"\n{k[1]}" if several_dtypes else "") for k in cases]
        top, bottom = axes[2 * col][0], axes[2 * col + 1][0]
        ratios = {f"vs {b}": [ratio_index.get((b, *k)) for k in cases] for b in baselines}
        _grouped_bars(top, labels, ratios, [colors[b] for b in baselines], "%.2f")
        top.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        top.set_title(f"{pass_}: speed-up of {ours} (baseline ms / {ours} ms)", fontsize=10)
        top.set_ylabel("speed-up (x)")
        throughput = {n: [_throughput(index.get((n, *k)), use_gbps) for k in cases] for n in [ours, *baselines]}
        _grouped_bars(bottom, labels, throughput, list(colors.values()), "%.0f")
        if copy_gbps and use_gbps:
            bottom.axhline(copy_gbps, color="gray", linewidth=0.8, linestyle="--", label="copy bandwidth")
        bottom.set_title(f"{pass_}: effective throughput", fontsize=10)
        bottom.set_ylabel("GB/s" if use_gbps else "TFLOP/s")
        for ax in (top, bottom):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    return save_figure(fig, payload, json_path)


def save_figure(fig: Any, payload: dict[str, Any], json_path: Path) -> Path:
    """Title ``fig`` with the payload's topic, GPU and date and save it beside ``json_path`` as PNG."""
    dev = payload["device"]
    fig.suptitle(f"{payload['topic']} on {dev.get('gpu_name') or 'no GPU'} ({str(dev.get('date_utc', ''))[:10]})")
    png = json_path.with_suffix(".png")
    fig.savefig(png, dpi=120)
    return png
