"""Long-horizon forecasting accuracy against the published tables.

Trains and tests every chosen (model, dataset, look-back, horizon) from the shipped config table
(:mod:`longseq.apps.timeseries.configs.generate`), with the configs' fixed seed, and writes
``<out>/forecasting-<tag>.csv`` and ``.md`` (our test MSE/MAE beside the published ones from
:mod:`benchmarks.forecasting_published`) plus ``forecasting-<tag>-<dataset>.png`` per dataset::

    python -m benchmarks.forecasting --datasets etth1 --models dlinear --horizons 96 --lookback 336 96 --tag cpu
    python -m benchmarks.forecasting --max-epochs 1 --tag smoke          # the whole table, one epoch each
    python -m benchmarks.forecasting merge --inputs a.csv b.csv --tag full --out DIR   # shards -> one table

Each run is ``fit`` with early stopping on ``val/loss`` then ``test`` on the best checkpoint, every test
window scored (see docs/timeseries.md). Runs go through the same LightningCLI as
``longseq-timeseries``; ``--accelerator``/``--devices`` pass through to the trainer.

``merge`` joins the CSVs of several runs (e.g. one process per dataset/model, each with its own
``--tag``) into the same CSV, markdown table and PNGs a single run of their union writes; a run present
in two inputs, or a CSV with other columns, is an error.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import _git_commit, resolve_out_dir
from benchmarks.forecasting_published import published_for
from longseq.apps.timeseries.cli import build_cli
from longseq.apps.timeseries.configs.generate import DATASETS, HORIZONS, RUNS, config_name, render

FIELDS = (
    "model", "dataset", "lookback", "horizon", "seed", "epochs_run", "max_epochs", "mse", "mae", "published_mse",
    "published_mae", "published_source", "published_checked", "seconds", "device",
)  # fmt: skip


def select(
    models: list[str] | None, datasets: list[str] | None, lookbacks: list[int] | None, horizons: list[int] | None
):
    """Entries of the config table matching the filters (None keeps all)."""
    chosen = []
    for (model, lookback), per_dataset in RUNS.items():
        for dataset in per_dataset:
            for horizon in HORIZONS:
                if models and model not in models or datasets and dataset not in datasets:
                    continue
                if lookbacks and lookback not in lookbacks or horizons and horizon not in horizons:
                    continue
                chosen.append((model, dataset, lookback, horizon))
    return chosen


def run_one(
    entry: tuple[str, str, int, int], workdir: Path, *, max_epochs: int | None, seed: int | None,
    accelerator: str, devices: str, num_workers: int,
) -> dict[str, Any]:  # fmt: skip
    """Fit + test one table entry; returns a result row."""
    model, dataset, lookback, horizon = entry
    run_dir = workdir / config_name(*entry).removesuffix(".yaml")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "config.yaml"
    config.write_text(render(*entry))
    args = [
        "--config", str(config), f"--trainer.default_root_dir={run_dir}", f"--trainer.accelerator={accelerator}",
        f"--trainer.devices={devices}", f"--data.num_workers={num_workers}",
    ]  # fmt: skip
    if max_epochs is not None:
        args.append(f"--trainer.max_epochs={max_epochs}")
    if seed is not None:
        args.append(f"--seed_everything={seed}")
    start = time.perf_counter()
    cli = build_cli(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)[0]
    seconds = time.perf_counter() - start
    pub = published_for(model, dataset, lookback, horizon)
    return {
        "model": model, "dataset": dataset, "lookback": lookback, "horizon": horizon,
        "seed": cli.config.get("seed_everything"), "epochs_run": cli.trainer.current_epoch,
        "max_epochs": cli.trainer.max_epochs, "mse": round(metrics["test/mse"], 4), "mae": round(metrics["test/mae"], 4),
        "published_mse": None if pub is None else pub.mse, "published_mae": None if pub is None else pub.mae,
        "published_source": None if pub is None else pub.source,
        "published_checked": None if pub is None else pub.checked, "seconds": round(seconds, 1),
        "device": _device_name(cli.trainer),
    }  # fmt: skip


def _device_name(trainer: Any) -> str:
    root = trainer.strategy.root_device
    if root.type == "cuda":
        return torch.cuda.get_device_name(root)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _public_args(argv: list[str]) -> list[str]:
    """The command line without the values of ``--out``/``--workdir`` (machine paths stay out of results)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--out", "--workdir"):
            skip = True
            continue
        if not arg.startswith(("--out=", "--workdir=")):
            out.append(arg)
    return out


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def write_outputs(rows: list[dict[str, Any]], out_dir: Path, tag: str, meta: dict[str, Any]) -> list[Path]:
    """The CSV, the markdown table and one PNG per dataset."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"forecasting-{tag}.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    md = [f"# Forecasting accuracy ({tag})", ""]
    md += [f"- {key}: {value}" for key, value in meta.items()]
    md += [
        "",
        "Test MSE / MAE on the normalised scale, every test window scored; published numbers from",
        "`benchmarks/forecasting_published.py` (checked = read in the copy of the table named there).",
        "",
    ]
    md += ["| model | dataset | L | H | epochs | MSE | MAE | published MSE | published MAE | source | device |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        source = _cell(r["published_source"]) + (" (checked)" if r["published_checked"] else "")
        md.append(
            f"| {r['model']} | {r['dataset']} | {r['lookback']} | {r['horizon']} | {r['epochs_run']}/{r['max_epochs']} "
            f"| {r['mse']:.4f} | {r['mae']:.4f} | {_cell(r['published_mse'])} | {_cell(r['published_mae'])} "
            f"| {source} | {r['device']} |"
        )
    md_path = out_dir / f"forecasting-{tag}.md"
    md_path.write_text("\n".join(md) + "\n")
    return [csv_path, md_path, *plot(rows, out_dir, tag)]


def plot(rows: list[dict[str, Any]], out_dir: Path, tag: str) -> list[Path]:
    """Per dataset: MSE against horizon, ours (solid) and published (dashed), one colour per model and look-back."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset in sorted({r["dataset"] for r in rows}):
        fig, ax = plt.subplots(figsize=(7, 4))
        series = sorted({(r["model"], r["lookback"]) for r in rows if r["dataset"] == dataset})
        for i, (model, lookback) in enumerate(series):
            mine = sorted((r["horizon"], r["mse"], r["published_mse"]) for r in rows
                          if r["dataset"] == dataset and r["model"] == model and r["lookback"] == lookback)  # fmt: skip
            hs = [h for h, _, _ in mine]
            ax.plot(hs, [m for _, m, _ in mine], "o-", color=f"C{i}", label=f"{model} L={lookback} (ours)")
            pub = [(h, p) for h, _, p in mine if p is not None]
            if pub:
                ax.plot(*zip(*pub), "x--", color=f"C{i}", label=f"{model} L={lookback} (published)")
        ax.set(xlabel="horizon H", ylabel="test MSE", title=f"{dataset} ({tag})", xticks=list(HORIZONS))
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"forecasting-{tag}-{dataset}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


_INT_FIELDS = ("lookback", "horizon", "seed", "epochs_run", "max_epochs")
_FLOAT_FIELDS = ("mse", "mae", "published_mse", "published_mae", "seconds")


def _parse_cell(field: str, text: str, where: str) -> Any:
    """A CSV cell back to the type :func:`run_one` wrote (empty = None)."""
    if text == "":
        if field in ("model", "dataset", "lookback", "horizon", "mse", "mae"):
            raise ValueError(f"{where}: column {field!r} is empty; every result row needs it")
        return None
    try:
        if field in _INT_FIELDS:
            return int(text)
        if field in _FLOAT_FIELDS:
            return float(text)
    except ValueError:
        raise ValueError(f"{where}: column {field!r} = {text!r} is not a number") from None
    if field == "published_checked":
        if text not in ("True", "False"):
            raise ValueError(f"{where}: column 'published_checked' = {text!r}, expected True or False")
        return text == "True"
    return text


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The result rows of one ``forecasting-<tag>.csv``, typed as :func:`run_one` returns them."""
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not those of a forecasting CSV {list(FIELDS)}")
        return [
            {field: _parse_cell(field, row[field], f"{path} line {line}") for field in FIELDS}
            for line, row in enumerate(reader, start=2)
        ]


def merge_rows(inputs: list[Path]) -> list[dict[str, Any]]:
    """The union of the inputs' rows in table order; a run found twice is an error naming both files."""
    seen: dict[tuple[str, str, int, int], Path] = {}
    rows = []
    for path in inputs:
        for row in read_rows(path):
            key = (row["model"], row["dataset"], row["lookback"], row["horizon"])
            if key in seen:
                raise ValueError(f"run {key} is in both {seen[key]} and {path}; merge each run once")
            seen[key] = path
            rows.append(row)
    order = {entry: i for i, entry in enumerate(select(None, None, None, None))}

    def table_order(row: dict[str, Any]) -> tuple:
        run = (row["model"], row["dataset"], row["lookback"], row["horizon"])
        return (order.get(run, len(order)), *run)  # runs no longer in the table go last

    return sorted(rows, key=table_order)


def merge_main(argv: list[str]) -> int:
    """``merge --inputs A.csv B.csv ... --tag NAME [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.forecasting merge",
                                     description="Merge several forecasting CSVs into one table (csv, md, png).")  # fmt: skip
    parser.add_argument("--inputs", nargs="+", type=Path, required=True, help="forecasting-<tag>.csv files")
    parser.add_argument("--tag", required=True, help="file tag of the merged outputs")
    parser.add_argument("--out", default=None, help="output folder (default: benchmarks/results)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        parser.error(f"input CSV not found: {', '.join(missing)}")
    try:
        rows = merge_rows(args.inputs)
    except ValueError as err:
        parser.error(str(err))
    if not rows:
        parser.error("the inputs hold no result rows")
    out_dir = resolve_out_dir(args.out)
    clash = [p for p in args.inputs if p.resolve() == (out_dir / f"forecasting-{args.tag}.csv").resolve()]
    if clash:
        parser.error(f"--tag {args.tag!r} would overwrite input {clash[0]}; choose another tag")
    meta = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "command": "python -m benchmarks.forecasting merge --inputs " + " ".join(p.name for p in args.inputs)
        + f" --tag {args.tag}",
        "merged_from": ", ".join(p.name for p in args.inputs),
    }  # fmt: skip
    for path in write_outputs(rows, out_dir, args.tag, meta):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="python -m benchmarks.forecasting merge --help: merge several runs' CSVs")  # fmt: skip
    parser.add_argument("--models", nargs="+", choices=sorted({m for m, _ in RUNS}), default=None)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=None)
    parser.add_argument("--lookback", nargs="+", type=int, default=None, help="336 (PatchTST protocol), 96 (TSLib)")
    parser.add_argument("--horizons", nargs="+", type=int, choices=HORIZONS, default=None)
    parser.add_argument("--max-epochs", type=int, default=None, help="cap the configs' epochs (smoke runs)")
    parser.add_argument("--seed", type=int, default=None, help="override the configs' seed (2021)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="1", help="test on one device for exact numbers")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--tag", default=None, help="file tag (default: the device type)")
    parser.add_argument("--out", default=None, help="output folder (default: benchmarks/results)")
    parser.add_argument("--workdir", default=None, help="checkpoints and logs (default: a temporary folder)")
    args = parser.parse_args(argv)
    entries = select(args.models, args.datasets, args.lookback, args.horizons)
    if not entries:
        parser.error("no table entry matches the filters")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="longseq-forecasting-"))
    tag = args.tag or ("cuda" if torch.cuda.is_available() else "cpu")
    meta = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(), "torch": torch.__version__, "python": platform.python_version(),
        "command": "python -m benchmarks.forecasting " + " ".join(_public_args(argv)),
        "data": "$LONGSEQ_DATA" if os.environ.get("LONGSEQ_DATA") else "(default root)",  # no machine paths in results
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        print(f"== {config_name(*entry)}", flush=True)
        rows.append(run_one(entry, workdir, max_epochs=args.max_epochs, seed=args.seed,
                            accelerator=args.accelerator, devices=args.devices, num_workers=args.num_workers))  # fmt: skip
        print(f"   test mse {rows[-1]['mse']:.4f} mae {rows[-1]['mae']:.4f} ({rows[-1]['seconds']} s)", flush=True)
        # rewritten after every entry, so a run stopped by a time limit keeps what it finished
        done = i + 1 == len(entries)
        partial = {} if done else {"note": f"partial: {i + 1} of {len(entries)} entries finished"}
        paths = write_outputs(rows, resolve_out_dir(args.out), tag, {**meta, **partial})
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
