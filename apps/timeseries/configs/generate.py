"""Generate the shipped forecasting configs from one table: ``<model>_<dataset>_<L>_<H>.yaml``.

Run ``python -m longseq.apps.timeseries.configs.generate`` (or this file) after editing the table;
a test checks that the committed YAMLs equal what this script writes.

Two protocols, as published:

* look-back 336 (PatchTST paper, Table 3; DLinear paper): ``patchtst`` and ``dlinear`` with the
  official scripts' settings (PatchTST ``PatchTST_supervised/scripts/PatchTST/*.sh``; DLinear
  ``LTSF-Linear/scripts/EXP-LongForecasting/Linear/*.sh``);
* look-back 96 (Time-Series-Library / iTransformer tables): ``patchtst``, ``dlinear``, ``informer``,
  ``s_mamba`` with Time-Series-Library's defaults (batch 32, 10 epochs, patience 3, ``type1``) and
  each model's script settings (Informer: the paper's 6 epochs and factor 5; S-Mamba: the
  S-D-Mamba repository's scripts).

Calendar features use ``freq="h"`` for every dataset, as Time-Series-Library's ``run.py`` does (4
``timeF`` columns). Entries marked ``# ours`` are choices where no official script exists (PatchTST
on Exchange) and are flagged as such in docs/timeseries.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CONFIG_DIR", "DATASETS", "HORIZONS", "RUNS", "config_name", "generate", "render", "table"]

CONFIG_DIR = Path(__file__).resolve().parent
HORIZONS = (96, 192, 336, 720)
#: dataset -> number of channels (``enc_in``)
DATASETS = {"etth1": 7, "ettm1": 7, "weather": 21, "exchange_rate": 8}
MODEL_CLASSES = {
    "dlinear": "longseq.apps.timeseries.models.DLinear",
    "patchtst": "longseq.apps.timeseries.models.PatchTST",
    "informer": "longseq.apps.timeseries.models.Informer",
    "s_mamba": "longseq.apps.timeseries.models.SMamba",
}
_TSLIB_TRAIN = {"batch_size": 32, "max_epochs": 10, "patience": 3, "lradj": "type1", "learning_rate": 1e-4}

# (model, lookback) -> dataset -> settings: "model" = config fields, the rest = training/data.
RUNS: dict[tuple[str, int], dict[str, dict[str, Any]]] = {
    ("patchtst", 336): {
        # PatchTST etth1.sh: no --lradj / --patience, so run_longExp.py's defaults type3 and 100.
        "etth1": dict(model=dict(d_model=16, n_heads=4, e_layers=3, d_ff=128, dropout=0.3), batch_size=128,
                      learning_rate=1e-4, max_epochs=100, patience=100, lradj="type3"),
        "ettm1": dict(model=dict(d_model=128, n_heads=16, e_layers=3, d_ff=256, dropout=0.2), batch_size=128,
                      learning_rate=1e-4, max_epochs=100, patience=20, lradj="TST", pct_start=0.4),
        "weather": dict(model=dict(d_model=128, n_heads=16, e_layers=3, d_ff=256, dropout=0.2), batch_size=128,
                        learning_rate=1e-4, max_epochs=100, patience=20, lradj="type3"),
        "exchange_rate": dict(model=dict(d_model=16, n_heads=4, e_layers=3, d_ff=128, dropout=0.3), batch_size=32,
                              learning_rate=1e-4, max_epochs=100, patience=20, lradj="type3"),  # ours
    },
    ("dlinear", 336): {
        "etth1": dict(model={}, batch_size=32, learning_rate=0.005, max_epochs=10, patience=3, lradj="type1"),
        "ettm1": dict(model={}, batch_size=8, learning_rate=1e-4, max_epochs=10, patience=3, lradj="type1"),
        "weather": dict(model={}, batch_size=16, learning_rate=1e-4, max_epochs=10, patience=3, lradj="type1"),
        "exchange_rate": dict(model={}, batch_size=8, learning_rate=5e-4, max_epochs=10, patience=3, lradj="type1"),
    },
    ("patchtst", 96): {
        # Time-Series-Library PatchTST scripts: TSLib defaults d_model 512, d_ff 2048, dropout 0.1.
        "etth1": dict(model=dict(d_model=512, n_heads=2, e_layers=1, d_ff=2048, dropout=0.1), **_TSLIB_TRAIN),
        "ettm1": dict(model=dict(d_model=512, n_heads=2, e_layers=1, d_ff=2048, dropout=0.1), **_TSLIB_TRAIN),
        "weather": dict(model=dict(d_model=512, n_heads=4, e_layers=2, d_ff=2048, dropout=0.1), **_TSLIB_TRAIN),
        "exchange_rate": dict(model=dict(d_model=512, n_heads=2, e_layers=2, d_ff=2048, dropout=0.1), **_TSLIB_TRAIN),
    },
    # Time-Series-Library's DLinear starts every weight at 1 / seq_len (init="average").
    ("dlinear", 96): {name: dict(model=dict(init="average"), **_TSLIB_TRAIN) for name in DATASETS},
    ("informer", 96): {
        name: dict(model=dict(factor=5.0), **{**_TSLIB_TRAIN, "max_epochs": 6}) for name in DATASETS
    },
    ("s_mamba", 96): {
        "etth1": dict(model=dict(d_model=256, d_ff=256, e_layers=2, d_state=2), **{**_TSLIB_TRAIN, "learning_rate": 5e-5}),
        "ettm1": dict(model=dict(d_model=128, d_ff=256, e_layers=2, d_state=2), **{**_TSLIB_TRAIN, "learning_rate": 5e-5}),
        "weather": dict(model=dict(d_model=512, d_ff=512, e_layers=3, d_state=2), **{**_TSLIB_TRAIN, "learning_rate": 5e-5}),
        "exchange_rate": dict(model=dict(d_model=128, d_ff=128, e_layers=2, d_state=2), **_TSLIB_TRAIN),
    },
}  # fmt: skip


def config_name(model: str, dataset: str, lookback: int, horizon: int) -> str:
    """``patchtst_etth1_336_96.yaml``."""
    return f"{model}_{dataset}_{lookback}_{horizon}.yaml"


def table() -> list[tuple[str, str, int, int]]:
    """Every ``(model, dataset, lookback, horizon)`` shipped, in a fixed order."""
    return [
        (model, dataset, lookback, horizon)
        for (model, lookback), per_dataset in RUNS.items()
        for dataset in per_dataset
        for horizon in HORIZONS
    ]


def build(model: str, dataset: str, lookback: int, horizon: int) -> dict[str, Any]:
    """The config (a LightningCLI YAML as a dict) of one table entry."""
    run = RUNS[(model, lookback)][dataset]
    channels = DATASETS[dataset]
    label_len = 48 if model == "informer" else 0
    net = {"seq_len": lookback, "pred_len": horizon, "enc_in": channels, **run["model"]}
    if model == "informer":
        net.update(label_len=label_len, dec_in=channels, c_out=channels, n_time_features=4)
    if model == "s_mamba":
        net["n_time_features"] = 4
    module: dict[str, Any] = {
        "net": {"class_path": MODEL_CLASSES[model], "init_args": {"config": net}},
        "learning_rate": run["learning_rate"],
        "lradj": run["lradj"],
    }
    if "pct_start" in run:
        module["pct_start"] = run["pct_start"]
    monitor = {"monitor": "val/loss", "mode": "min"}
    return {
        "seed_everything": 2021,
        "trainer": {
            "max_epochs": run["max_epochs"],
            "devices": 1,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.EarlyStopping",
                    "init_args": {**monitor, "patience": run["patience"]},
                },
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {**monitor, "save_top_k": 1, "filename": "best"},
                },
            ],
        },
        "model": module,
        "data": {
            "dataset": dataset,
            "features": "M",
            "seq_len": lookback,
            "label_len": label_len,
            "pred_len": horizon,
            "batch_size": run["batch_size"],
            "freq": "h",
        },
    }


def render(model: str, dataset: str, lookback: int, horizon: int) -> str:
    """The YAML text of one entry (header comment + deterministic dump)."""
    header = (
        f"# {model} on {dataset}, look-back {lookback}, horizon {horizon}.\n"
        "# Generated by apps/timeseries/configs/generate.py from its table: edit the table, not this file.\n"
    )
    return header + yaml.safe_dump(build(model, dataset, lookback, horizon), sort_keys=False, width=120)


def generate(out_dir: Path = CONFIG_DIR) -> list[Path]:
    """Write every config to ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for entry in table():
        path = out_dir / config_name(*entry)
        path.write_text(render(*entry))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CONFIG_DIR, help="output folder (default: this folder)")
    args = parser.parse_args(argv)
    paths = generate(args.out)
    print(f"wrote {len(paths)} configs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
