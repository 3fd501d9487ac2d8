"""ForecastModule (metrics, schedules, checks, checkpoints), the shipped configs and the CLI."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from longseq.apps.timeseries.checkpoint import CHECKPOINT_KEY, from_pretrained
from longseq.apps.timeseries.configs import generate as gen
from longseq.apps.timeseries.data import ForecastDataModule
from longseq.apps.timeseries.models import FORECASTERS, DLinear, DLinearConfig
from longseq.apps.timeseries.module import ForecastModule
from longseq.apps.timeseries.schedules import build_scheduler, epoch_factor

CONFIG_DIR = gen.CONFIG_DIR


pytestmark = pytest.mark.usefixtures("cpu_quiet")


def write_csv(path: Path, rows: int = 300, channels: int = 2, start: str = "2021-01-01T00:00", step_h: int = 1) -> Path:
    """A small hourly CSV: ``date, x0.., OT`` with sines plus noise (seeded)."""
    rng = np.random.default_rng(0)
    t = np.arange(rows)
    stamps = np.datetime64(start) + t * np.timedelta64(step_h, "h")
    cols = [
        np.sin(2 * np.pi * t / (12 + 5 * k)) * (k + 1) + 0.1 * rng.standard_normal(rows) + k for k in range(channels)
    ]
    cols.append(np.sin(2 * np.pi * t / 24) + 0.05 * rng.standard_normal(rows) + 10)
    names = [f"x{k}" for k in range(channels)] + ["OT"]
    with path.open("w") as f:
        f.write("date," + ",".join(names) + "\n")
        for i in range(rows):
            stamp = str(stamps[i]).replace("T", " ")
            f.write(stamp + "," + ",".join(f"{c[i]:.5f}" for c in cols) + "\n")
    return path


def trainer(**kwargs) -> Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)  # fmt: skip
    return Trainer(**{**defaults, **kwargs})


# ---------------------------------------------------------------- schedules


def test_epoch_schedules_match_reference_formulas() -> None:
    # reference: after epoch e (1-based) lr = lr0 * 0.5 ** (e - 1) (type1), lr0 * 0.9 ** (e - 3) for e >= 3 (type3)
    assert [epoch_factor("type1", i) for i in range(5)] == [1, 1, 0.5, 0.25, 0.125]
    assert [epoch_factor("type3", i) for i in range(7)] == pytest.approx([1, 1, 1, 1, 0.9, 0.81, 0.729])
    assert epoch_factor("constant", 50) == 1
    with pytest.raises(ValueError, match="per-epoch"):
        epoch_factor("TST", 0)


def test_tst_is_one_cycle_peaking_at_pct_start() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = build_scheduler(opt, "TST", total_steps=100, pct_start=0.4)
    assert sched["interval"] == "step"
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    assert lrs[0] == pytest.approx(1e-3 / 25)
    assert int(np.argmax(lrs)) in (39, 40) and max(lrs) == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        build_scheduler(opt, "cosine", total_steps=10)


# ---------------------------------------------------------------- the module


def small_setup(tmp_path: Path, features: str = "M", batch_size: int = 7, **model_kw):
    csv = write_csv(tmp_path / "series.csv")
    dm = ForecastDataModule(str(csv), features=features, seq_len=24, label_len=0, pred_len=8, batch_size=batch_size)
    dm.setup()
    net = DLinear(DLinearConfig(seq_len=24, pred_len=8, enc_in=dm.n_channels, moving_avg=5, **model_kw))
    return dm, net


@pytest.mark.parametrize("features", ["M", "MS"])
def test_test_metrics_are_the_mean_over_every_window_step_and_channel(tmp_path: Path, features: str) -> None:
    dm, net = small_setup(tmp_path, features)
    module = ForecastModule(net, features=features)
    n_test = len(dm.datasets["test"])
    assert n_test % dm.batch_size != 0  # a partial last batch must count by its size
    result = trainer().test(module, datamodule=dm, verbose=False)[0]
    net.eval()
    sq, ab, count = 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(n_test):  # window by window, independently of the loader
            item = dm.datasets["test"][i]
            pred = net(item["x"][None])[0]
            truth = item["y"][-8:]
            if features == "MS":
                pred, truth = pred[:, -1:], truth[:, -1:]
            sq += float(((pred - truth) ** 2).sum())
            ab += float((pred - truth).abs().sum())
            count += truth.numel()
    assert result["test/mse"] == pytest.approx(sq / count, rel=1e-5)
    assert result["test/mae"] == pytest.approx(ab / count, rel=1e-5)


def test_module_checks_the_model_against_the_data(tmp_path: Path) -> None:
    dm, _ = small_setup(tmp_path)
    wrong = DLinear(DLinearConfig(seq_len=48, pred_len=8, enc_in=3, moving_avg=5))
    with pytest.raises(ValueError, match="seq_len"):
        trainer().validate(ForecastModule(wrong), datamodule=dm, verbose=False)
    with pytest.raises(ValueError, match="features 'MS' differ"):
        trainer().validate(ForecastModule(DLinear(DLinearConfig(seq_len=24, pred_len=8, enc_in=3)), features="MS"),
                           datamodule=dm, verbose=False)  # fmt: skip
    with pytest.raises(ValueError, match="lradj"):
        ForecastModule(wrong, lradj="cosine")


def test_training_lowers_validation_loss_and_checkpoint_round_trips(tmp_path: Path) -> None:
    dm, net = small_setup(tmp_path, batch_size=16)
    module = ForecastModule(net, learning_rate=5e-3, lradj="constant")
    t = trainer(max_epochs=3)
    before = t.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    t.fit(module, datamodule=dm)
    after = t.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    assert after < 0.5 * before
    ckpt = tmp_path / "model.ckpt"
    t.save_checkpoint(ckpt)
    blob = torch.load(ckpt, weights_only=True)  # plain data only
    assert blob[CHECKPOINT_KEY]["model"] == "dlinear"
    loaded, info = from_pretrained(ckpt)
    assert info is not None and info.columns == ["x0", "x1", "OT"] and info.freq == "h"
    assert info.mean == pytest.approx(list(dm.scaler.mean))
    x = torch.randn(4, 24, 3)
    net.eval()
    torch.testing.assert_close(loaded(x), net(x))


# ---------------------------------------------------------------- shipped configs


def test_committed_configs_equal_the_generator(tmp_path: Path) -> None:
    written = {p.name: p.read_text() for p in gen.generate(tmp_path)}
    committed = {p.name: p.read_text() for p in CONFIG_DIR.glob("*.yaml")}
    assert sorted(committed) == sorted(written), "run python -m longseq.apps.timeseries.configs.generate"
    stale = [name for name in written if committed[name] != written[name]]
    assert not stale, f"stale configs (regenerate): {stale}"


def test_config_table_covers_every_model_dataset_and_horizon() -> None:
    entries = gen.table()
    assert {m for m, *_ in entries} == set(FORECASTERS)
    assert {d for _, d, *_ in entries} == set(gen.DATASETS)
    assert {h for *_, h in entries} == set(gen.HORIZONS)
    assert {(m, L) for m, _, L, _ in entries} >= {("patchtst", 336), ("patchtst", 96), ("dlinear", 336)}


class _ParseOnly:
    """One LightningCLI parser reused to parse every YAML (nothing instantiated)."""

    parser = None

    @classmethod
    def get(cls):
        if cls.parser is None:
            from longseq.apps.timeseries.cli import ForecastCLI

            class NoInstantiate(ForecastCLI):
                def instantiate_classes(self) -> None:
                    pass

            first = sorted(CONFIG_DIR.glob("*.yaml"))[0]
            cls.parser = NoInstantiate(
                ForecastModule, ForecastDataModule, args=["--config", str(first)], run=False
            ).parser
        return cls.parser


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_parses_and_validates(path: Path) -> None:
    """Types through the CLI parser, then each model config's and data module's own validation."""
    cfg = _ParseOnly.get().parse_args(["--config", str(path)])
    net = cfg.model.net
    cls = next(c for c in FORECASTERS.values() if f"{c.__module__.rsplit('.', 1)[0]}.{c.__name__}" == net.class_path)
    config = cls.config_class(**vars(net.init_args.config))
    data = vars(cfg.data)
    dm = ForecastDataModule(**data)
    assert (config.seq_len, config.pred_len) == (dm.seq_len, dm.pred_len)
    assert config.enc_in == gen.DATASETS[dm.dataset]
    assert getattr(config, "label_len", 0) == dm.label_len
    assert cfg.model.features == dm.features  # linked
    assert cfg.seed_everything == 2021


# ---------------------------------------------------------------- CLI smoke runs on the real data

SMOKE = [
    "dlinear_etth1_336_96",
    "patchtst_ettm1_336_96",
    "informer_weather_96_96",
    "s_mamba_exchange_rate_96_96",
    "patchtst_etth1_96_96",
]


@pytest.mark.parametrize("name", SMOKE)
def test_cli_fast_dev_run(name: str, shared_data_root: Path, tmp_path: Path, monkeypatch) -> None:
    from longseq.apps.timeseries.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LONGSEQ_DATA", str(shared_data_root))
    path = CONFIG_DIR / f"{name}.yaml"
    # batch 4 keeps the fast_dev_run step small on CPU; the rest is the shipped config
    main(["fit", "--config", str(path), "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
          "--data.batch_size=4"])  # fmt: skip


def test_cli_test_subcommand_reports_metrics(tmp_path: Path, monkeypatch, capsys) -> None:
    """``test`` through LightningCLI on a user's CSV with the module's metrics."""
    from longseq.apps.timeseries.cli import main

    csv = write_csv(tmp_path / "s.csv")
    monkeypatch.chdir(tmp_path)
    main(["test", "--model.net=longseq.apps.timeseries.models.DLinear", "--model.net.config.seq_len=24",
          "--model.net.config.pred_len=8", "--model.net.config.enc_in=3", f"--data.dataset={csv}",
          "--data.seq_len=24", "--data.label_len=0", "--data.pred_len=8", "--trainer.accelerator=cpu",
          "--trainer.logger=false"])  # fmt: skip
    out = capsys.readouterr().out
    values = {name: re.search(name + r"\D*?([0-9]+\.[0-9]+)", out) for name in ("test/mse", "test/mae")}
    assert all(values.values()), out
    mse, mae = (float(m.group(1)) for m in values.values())
    assert 0 < mse < 10 and 0 < mae < 10 and math.isfinite(mse)
