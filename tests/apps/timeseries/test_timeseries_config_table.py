"""The per-horizon config table of ``configs/generate.py`` (``per_h`` / ``settings`` / ``build``)."""

from __future__ import annotations

import pytest

from longseq.apps.timeseries.configs import generate as gen

_ENTRY = dict(
    model=dict(d_model=16, n_heads=gen.per_h(1, 2, 4, 8), e_layers=2),
    batch_size=gen.per_h(8, 16, 32, 64),
    learning_rate=1e-3,
    max_epochs=gen.per_h(1, 2, 3, 4),
    patience=3,
    lradj="type1",
)


@pytest.fixture
def toy_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(gen.RUNS, ("patchtst", 48), {"etth1": _ENTRY})


def test_per_h_needs_one_value_per_horizon() -> None:
    assert gen.per_h(1, 2, 3, 4) == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="one value per horizon"):
        gen.per_h(1, 2, 3)


@pytest.mark.usefixtures("toy_table")
def test_settings_take_each_per_h_value_at_its_horizon() -> None:
    for i, horizon in enumerate(gen.HORIZONS):
        run = gen.settings("patchtst", "etth1", 48, horizon)
        assert run["model"] == {"d_model": 16, "n_heads": 2**i, "e_layers": 2}
        assert (run["batch_size"], run["max_epochs"], run["learning_rate"]) == (8 * 2**i, i + 1, 1e-3)
        cfg = gen.build("patchtst", "etth1", 48, horizon)  # the YAML carries the resolved values
        assert cfg["model"]["net"]["init_args"]["config"]["n_heads"] == 2**i
        assert cfg["data"]["batch_size"] == 8 * 2**i
        assert cfg["trainer"]["max_epochs"] == i + 1
    assert ("patchtst", "etth1", 48, 720) in gen.table()


def test_settings_reject_unknown_runs_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyError, match="no table entry"):
        gen.settings("patchtst", "etth1", 96, 100)
    with pytest.raises(KeyError, match="no table entry"):
        gen.settings("patchtst", "traffic", 96, 96)
    monkeypatch.setitem(gen.RUNS, ("patchtst", 48), {"etth1": {**_ENTRY, "batchsize": 4}})
    with pytest.raises(ValueError, match="unknown keys \\['batchsize'\\]"):
        gen.settings("patchtst", "etth1", 48, 96)
    monkeypatch.setitem(gen.RUNS, ("patchtst", 48), {"etth1": {k: v for k, v in _ENTRY.items() if k != "patience"}})
    with pytest.raises(ValueError, match="missing \\['patience'\\]"):
        gen.settings("patchtst", "etth1", 48, 96)


def test_shipped_table_changes_settings_by_horizon_as_the_scripts_do() -> None:
    """Spot checks of the transcription (TSLib PatchTST_ETTh1.sh heads, S-D-Mamba ETTh1 learning rates)."""
    heads = [gen.settings("patchtst", "etth1", 96, h)["model"]["n_heads"] for h in gen.HORIZONS]
    assert heads == [2, 8, 8, 16]
    rates = [gen.settings("s_mamba", "etth1", 96, h)["learning_rate"] for h in gen.HORIZONS]
    assert rates == [7e-5, 7e-5, 5e-5, 5e-5]
    for (model, lookback), per_dataset in gen.RUNS.items():
        for dataset in per_dataset:
            for horizon in gen.HORIZONS:  # every entry resolves, with no per_h left unresolved
                run = gen.settings(model, dataset, lookback, horizon)
                values = [*run.values(), *run["model"].values()]
                assert not any(isinstance(v, gen.PerHorizon) for v in values), (model, dataset, lookback)
