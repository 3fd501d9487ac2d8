"""Generate the shipped forecasting configs from one table: ``<model>_<dataset>_<L>_<H>.yaml``.

Run ``python -m longseq.apps.timeseries.configs.generate`` (or this file) after editing the table;
a test checks that the committed YAMLs equal what this script writes.

Two protocols, as published:

* look-back 336 (PatchTST paper, Table 3; DLinear paper): ``patchtst`` and ``dlinear`` with the
  official scripts' settings (PatchTST ``PatchTST_supervised/scripts/PatchTST/*.sh``; DLinear
  ``LTSF-Linear/scripts/EXP-LongForecasting/Linear/*.sh``);
* look-back 96 (Time-Series-Library / iTransformer tables): ``patchtst``, ``dlinear``, ``informer``
  with Time-Series-Library's scripts (``scripts/long_term_forecast/<Dataset>_script/*.sh``) and its
  ``run.py`` defaults wherever a script passes nothing; ``s_mamba`` with the S-D-Mamba repository's
  ``scripts/multivariate_forecasting/*`` and its ``run.py`` defaults.

The official scripts change settings by horizon, so any setting of an entry (a model field or a
training key) may be :func:`per_h` ``(v96, v192, v336, v720)``; :func:`settings` resolves an entry for
one horizon. Each entry names the script it transcribes. Calendar features use ``freq="h"`` for every
dataset, as both ``run.py`` files default to (4 ``timeF`` columns). Entries marked ``# ours`` are
choices where no official script exists and are flagged as such in docs/timeseries.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CONFIG_DIR", "DATASETS", "HORIZONS", "RUNS", "TRAIN_KEYS", "PerHorizon", "config_name", "generate", "per_h",
    "render", "settings", "table",
]  # fmt: skip

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
#: the training settings of an entry (everything else of an entry sits under ``model``)
TRAIN_KEYS = ("batch_size", "learning_rate", "max_epochs", "patience", "lradj", "pct_start")
_REQUIRED_TRAIN = ("batch_size", "learning_rate", "max_epochs", "patience", "lradj")


class PerHorizon(tuple):
    """One setting's values for the horizons of :data:`HORIZONS`, in that order (see :func:`per_h`)."""


def per_h(*values: Any) -> PerHorizon:
    """A setting that changes with the horizon: ``per_h(v96, v192, v336, v720)``."""
    if len(values) != len(HORIZONS):
        raise ValueError(f"per_h needs one value per horizon {HORIZONS}, got {len(values)}: {values}")
    return PerHorizon(values)


def _at(value: Any, horizon: int) -> Any:
    return value[HORIZONS.index(horizon)] if isinstance(value, PerHorizon) else value


# Time-Series-Library run.py defaults: train_epochs 10, batch_size 32, patience 3, learning_rate 1e-4,
# lradj type1 (the S-D-Mamba run.py has the same five defaults).
_TSLIB = dict(batch_size=32, max_epochs=10, patience=3, lradj="type1", learning_rate=1e-4)
# TSLib models/PatchTST.py: d_model 512, d_ff 2048, dropout 0.1 (run.py defaults, no script changes them);
# its attention and head dropout are that same dropout and its normalisation has no affine weights.
_TSLIB_PATCHTST = dict(d_model=512, d_ff=2048, dropout=0.1, attn_dropout=0.1, head_dropout=0.1, affine=False)
# TSLib Informer: run.py defaults (d_model 512, n_heads 8, d_ff 2048, dropout 0.1) and the flags every TSLib
# Informer script passes (ETT_script/Informer_ETTh1.sh, ECL_script/Informer.sh): e_layers 2, d_layers 1, factor 3.
_TSLIB_INFORMER = dict(d_model=512, n_heads=8, e_layers=2, d_layers=1, d_ff=2048, factor=3.0, dropout=0.1)
# S-D-Mamba model/S_Mamba.py fixes d_conv 2, expand 1; run.py: dropout 0.1, d_state 32 unless a script sets it.
_SMAMBA = dict(d_conv=2, expand=1, dropout=0.1)

# (model, lookback) -> dataset -> settings: "model" = config fields, the rest = training (TRAIN_KEYS).
# Script paths: TSLib = thuml/Time-Series-Library scripts/long_term_forecast/, SDM = wzhwzhwzh0921/S-D-Mamba
# scripts/multivariate_forecasting/, PatchTST = yuqinie98/PatchTST PatchTST_supervised/scripts/PatchTST/.
RUNS: dict[tuple[str, int], dict[str, dict[str, Any]]] = {
    ("patchtst", 336): {
        # PatchTST etth1.sh (same for every horizon): no --lradj / --patience, so run_longExp.py's type3 and 100.
        "etth1": dict(model=dict(d_model=16, n_heads=4, e_layers=3, d_ff=128, dropout=0.3), batch_size=128,
                      learning_rate=1e-4, max_epochs=100, patience=100, lradj="type3"),
        # PatchTST ettm1.sh (same for every horizon).
        "ettm1": dict(model=dict(d_model=128, n_heads=16, e_layers=3, d_ff=256, dropout=0.2), batch_size=128,
                      learning_rate=1e-4, max_epochs=100, patience=20, lradj="TST", pct_start=0.4),
        # PatchTST weather.sh (same for every horizon): no --lradj, so type3.
        "weather": dict(model=dict(d_model=128, n_heads=16, e_layers=3, d_ff=256, dropout=0.2), batch_size=128,
                        learning_rate=1e-4, max_epochs=100, patience=20, lradj="type3"),
        "exchange_rate": dict(model=dict(d_model=16, n_heads=4, e_layers=3, d_ff=128, dropout=0.3), batch_size=32,
                              learning_rate=1e-4, max_epochs=100, patience=20, lradj="type3"),  # ours
    },
    ("dlinear", 336): {  # LTSF-Linear scripts/EXP-LongForecasting/Linear/*.sh
        "etth1": dict(model={}, batch_size=32, learning_rate=0.005, max_epochs=10, patience=3, lradj="type1"),
        "ettm1": dict(model={}, batch_size=8, learning_rate=1e-4, max_epochs=10, patience=3, lradj="type1"),
        "weather": dict(model={}, batch_size=16, learning_rate=1e-4, max_epochs=10, patience=3, lradj="type1"),
        "exchange_rate": dict(model={}, batch_size=8, learning_rate=5e-4, max_epochs=10, patience=3, lradj="type1"),
    },
    ("patchtst", 96): {
        # TSLib ETT_script/PatchTST_ETTh1.sh
        "etth1": dict(model=dict(_TSLIB_PATCHTST, e_layers=1, n_heads=per_h(2, 8, 8, 16)), **_TSLIB),
        # TSLib ETT_script/PatchTST_ETTm1.sh
        "ettm1": dict(model=dict(_TSLIB_PATCHTST, e_layers=per_h(1, 3, 1, 3), n_heads=per_h(2, 2, 4, 4)),
                      **{**_TSLIB, "batch_size": per_h(32, 128, 128, 128)}),
        # TSLib Weather_script/PatchTST.sh
        "weather": dict(model=dict(_TSLIB_PATCHTST, e_layers=2, n_heads=per_h(4, 16, 4, 4)),
                        **{**_TSLIB, "batch_size": per_h(32, 32, 128, 128), "max_epochs": 3}),
        # TSLib Exchange_script/PatchTST.sh: no --n_heads, so run.py's 8
        "exchange_rate": dict(model=dict(_TSLIB_PATCHTST, e_layers=2, n_heads=8),
                              **{**_TSLIB, "max_epochs": per_h(10, 10, 1, 10)}),
    },
    # TSLib ETT_script/DLinear_ETTh1.sh passes no model or training flag DLinear reads (run.py defaults:
    # moving_avg 25, not individual); TSLib has no DLinear script for ETTm1 / Weather / Exchange: the same.
    # TSLib's DLinear starts every weight at 1 / seq_len (init="average").
    ("dlinear", 96): {name: dict(model=dict(init="average", moving_avg=25), **_TSLIB) for name in DATASETS},
    # TSLib ETT_script/Informer_ETTh1.sh's architecture (every horizon alike; no TSLib Informer script for ETTm1 /
    # Weather / Exchange: the same flags), but the Informer paper's factor 5 and 6 epochs (its repository's
    # defaults): the published Informer rows we compare with (Autoformer / DLinear tables) ran that code.
    ("informer", 96): {
        name: dict(model=dict(_TSLIB_INFORMER, factor=5.0), **{**_TSLIB, "max_epochs": 6}) for name in DATASETS
    },
    ("s_mamba", 96): {
        # SDM ETT/S_Mamba_ETTh1.sh
        "etth1": dict(model=dict(_SMAMBA, d_model=256, d_ff=256, e_layers=2, d_state=2),
                      **{**_TSLIB, "learning_rate": per_h(7e-5, 7e-5, 5e-5, 5e-5)}),
        # SDM ETT/S_Mamba_ETTm1.sh
        "ettm1": dict(model=dict(_SMAMBA, d_model=per_h(256, 128, 128, 128), d_ff=per_h(256, 128, 128, 128),
                                 e_layers=2, d_state=2), **{**_TSLIB, "learning_rate": 5e-5}),
        # SDM Weather/S_Mamba.sh
        "weather": dict(model=dict(_SMAMBA, d_model=512, d_ff=512, e_layers=3, d_state=2),
                        **{**_TSLIB, "learning_rate": 5e-5, "max_epochs": 5}),
        # SDM Exchange/S_Mamba.sh: no --d_state, so run.py's 32
        "exchange_rate": dict(model=dict(_SMAMBA, d_model=128, d_ff=128, e_layers=2, d_state=32),
                              **{**_TSLIB, "learning_rate": per_h(1e-4, 1e-4, 5e-5, 5e-5),
                                 "batch_size": per_h(16, 32, 32, 32)}),
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


def settings(model: str, dataset: str, lookback: int, horizon: int) -> dict[str, Any]:
    """The table entry of one run with every :func:`per_h` value taken at ``horizon``.

    Returns ``{"model": {config fields}, <training keys>}``; raises ``KeyError`` for a run not in the
    table and ``ValueError`` for an entry with an unknown or missing training key.
    """
    if (model, lookback) not in RUNS or dataset not in RUNS[(model, lookback)] or horizon not in HORIZONS:
        raise KeyError(
            f"no table entry ({model!r}, {dataset!r}, look-back {lookback}, horizon {horizon}); "
            f"entries: {sorted(RUNS)} x their datasets x horizons {HORIZONS}"
        )
    entry = RUNS[(model, lookback)][dataset]
    unknown = sorted(set(entry) - {"model", *TRAIN_KEYS})
    missing = [key for key in _REQUIRED_TRAIN if key not in entry]
    if unknown or missing or "model" not in entry:
        raise ValueError(
            f"RUNS[{(model, lookback)}][{dataset!r}]: unknown keys {unknown}, missing {missing or ''}"
            f"{' and model' if 'model' not in entry else ''}; expected 'model' and {TRAIN_KEYS}"
        )
    resolved = {key: _at(value, horizon) for key, value in entry.items() if key != "model"}
    resolved["model"] = {key: _at(value, horizon) for key, value in entry["model"].items()}
    return resolved


def build(model: str, dataset: str, lookback: int, horizon: int) -> dict[str, Any]:
    """The config (a LightningCLI YAML as a dict) of one table entry."""
    run = settings(model, dataset, lookback, horizon)
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
