"""Forecasting models: shapes for M/S/MS, RevIN, DLinear decomposition, PatchTST patching and channel
independence, Informer distilling, registry, config errors, and a tiny model learning a sine."""

from __future__ import annotations

import math

import pytest
import torch

from longseq.apps.timeseries.models import (
    FORECASTERS,
    DistillingLayer,
    DLinear,
    DLinearConfig,
    Informer,
    InformerConfig,
    PatchTST,
    PatchTSTConfig,
    RevIN,
    SeriesDecomposition,
    SMamba,
    SMambaConfig,
    patch_count,
    patchify,
)
from longseq.core.registry import create_model, list_models

L, H, F = 32, 12, 4


@pytest.fixture(autouse=True)
def _cpu_reference_paths(monkeypatch: pytest.MonkeyPatch):
    """On CPU the models run the kernels' PyTorch references (not Triton's interpreter), on one thread."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(name: str, channels: int, outputs: int | None = None, **extra):
    """A small model of each kind for ``channels`` inputs (``outputs`` only applies to Informer)."""
    common = dict(seq_len=L, pred_len=H, enc_in=channels)
    if name == "dlinear":
        return DLinear(DLinearConfig(**common, moving_avg=5, **extra))
    if name == "patchtst":
        extra = {"e_layers": 2, **extra}
        return PatchTST(PatchTSTConfig(**common, patch_len=8, stride=4, d_model=16, n_heads=2, d_ff=32, **extra))
    if name == "informer":
        c_out = channels if outputs is None else outputs
        return Informer(InformerConfig(**common, label_len=8, dec_in=channels, c_out=c_out, d_model=16, n_heads=2,
                                       d_ff=32, e_layers=2, n_time_features=F, **extra))  # fmt: skip
    return SMamba(SMambaConfig(**common, d_model=16, d_ff=16, n_time_features=F, **extra))


def inputs(model, batch: int = 3):
    x = torch.randn(batch, model.seq_len, model.enc_in)
    return x, torch.rand(batch, model.seq_len, F) - 0.5, torch.rand(batch, model.label_len + model.pred_len, F) - 0.5


@pytest.mark.parametrize("name", sorted(FORECASTERS))
@pytest.mark.parametrize(("features", "channels", "outputs"), [("M", 5, 5), ("S", 1, 1), ("MS", 5, 1)])
def test_forward_shapes(name: str, features: str, channels: int, outputs: int) -> None:
    """M: C in, C out; S: 1 in, 1 out; MS: C in, the target out (Informer's c_out=1; others all C, sliced later)."""
    model = small(name, channels, outputs)
    out = model(*inputs(model))
    expected = outputs if name == "informer" else channels
    assert out.shape == (3, H, expected)
    assert model.n_outputs == expected
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_registry_builds_every_model() -> None:
    names = set(list_models())
    assert set(FORECASTERS) <= names
    model = create_model("patchtst", pred_len=192)
    assert isinstance(model, PatchTST) and model.config.pred_len == 192 and model.config.seq_len == 336


@pytest.mark.parametrize("name", sorted(FORECASTERS))
def test_wrong_input_shape_is_an_error(name: str) -> None:
    model = small(name, 3)
    x, xm, ym = inputs(model)
    with pytest.raises(ValueError, match="expects x of shape"):
        model(x[:, 1:], xm, ym)
    with pytest.raises(ValueError, match="expects x of shape"):
        model(torch.randn(3, L, 4), xm, ym)


def test_models_that_read_marks_require_them() -> None:
    model = small("informer", 3)
    x, xm, ym = inputs(model)
    with pytest.raises(ValueError, match="pass y_mark"):
        model(x, xm, None)
    with pytest.raises(ValueError, match="y_mark must be"):
        model(x, xm, ym[:, 1:])
    assert small("dlinear", 3)(x).shape == (3, H, 3)  # no marks needed


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (DLinearConfig, dict(moving_avg=24), "odd"),
        (PatchTSTConfig, dict(d_model=10, n_heads=4), "divisible"),
        (PatchTSTConfig, dict(seq_len=8, patch_len=32, stride=8), "longer than"),
        (InformerConfig, dict(dec_in=3, enc_in=7), "dec_in"),
        (InformerConfig, dict(c_out=3, enc_in=7), "c_out"),
        (InformerConfig, dict(label_len=100, seq_len=96), "label_len"),
        (SMambaConfig, dict(mixer="hyena"), "mixer"),
        (SMambaConfig, dict(mixer_kwargs={"d_state": 4}), "must not set"),
        (DLinearConfig, dict(seq_len=0), "seq_len"),
    ],
)
def test_bad_configs(cls, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


# ---------------------------------------------------------------- RevIN


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("subtract_last", [True, False])
def test_revin_round_trip(affine: bool, subtract_last: bool) -> None:
    revin = RevIN(4, affine=affine, subtract_last=subtract_last)
    if affine:  # a non-trivial affine map must be undone too
        with torch.no_grad():
            revin.weight.copy_(torch.tensor([0.5, 2.0, -1.5, 1.0]))
            revin.bias.copy_(torch.tensor([0.1, -0.3, 2.0, 0.0]))
    x = torch.randn(5, 40, 4, dtype=torch.float64) * 7 + 3
    revin = revin.double()
    z, stats = revin.normalize(x)
    torch.testing.assert_close(revin.denormalize(z, stats), x)
    if not affine and not subtract_last:  # per window and channel: mean 0, population std 1
        torch.testing.assert_close(z.mean(1), torch.zeros(5, 4, dtype=torch.float64))
        torch.testing.assert_close(z.std(1, unbiased=False), torch.ones(5, 4, dtype=torch.float64), atol=1e-5, rtol=0)


def test_revin_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match="C = 4"):
        RevIN(4).normalize(torch.randn(2, 10, 3))


# ---------------------------------------------------------------- DLinear


def test_decomposition_sums_to_input_and_trend_is_moving_average() -> None:
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    seasonal, trend = SeriesDecomposition(5)(x)
    torch.testing.assert_close(seasonal + trend, x)
    # interior point: plain mean of 5 neighbours; first point: edge value repeated twice
    torch.testing.assert_close(trend[:, 10], x[:, 8:13].mean(1))
    torch.testing.assert_close(trend[:, 0], (2 * x[:, 0] + x[:, 0:3].sum(1)) / 5)


def test_dlinear_individual_has_per_channel_weights() -> None:
    shared, individual = small("dlinear", 4), small("dlinear", 4, individual=True)
    assert len(shared.seasonal) == 1 and len(individual.seasonal) == 4
    avg = DLinear(DLinearConfig(seq_len=L, pred_len=H, enc_in=2, init="average"))
    assert torch.all(avg.seasonal[0].weight == 1.0 / L)


# ---------------------------------------------------------------- PatchTST


@pytest.mark.parametrize(
    ("seq_len", "patch_len", "stride", "pad_end", "count"),
    [
        (336, 16, 8, True, 42),
        (512, 16, 8, True, 64),
        (96, 16, 8, True, 12),
        (336, 16, 8, False, 41),
        (17, 16, 8, False, 1),
    ],
)
def test_patch_count(seq_len, patch_len, stride, pad_end, count) -> None:
    assert patch_count(seq_len, patch_len, stride, pad_end) == count
    x = torch.arange(seq_len, dtype=torch.float32).view(1, 1, seq_len)
    patches = patchify(x, patch_len, stride, pad_end)
    assert patches.shape == (1, 1, count, patch_len)
    if count > 1:
        assert patches[0, 0, 1, 0] == stride  # second patch starts `stride` steps in
    if pad_end:  # the last patch ends with the repeated last value
        assert patches[0, 0, -1, -1] == seq_len - 1


def test_patchtst_channel_independence() -> None:
    """Changing one channel's input changes only that channel's forecast (eval: BatchNorm uses running stats)."""
    model = small("patchtst", 4).eval()
    x = torch.randn(2, L, 4)
    x2 = x.clone()
    x2[:, :, 1] = torch.randn(2, L) * 3
    y, y2 = model(x), model(x2)
    assert not torch.allclose(y[..., 1], y2[..., 1])
    torch.testing.assert_close(y[..., [0, 2, 3]], y2[..., [0, 2, 3]])


def test_patchtst_any_attention_backend() -> None:
    cfg = dict(seq_len=L, pred_len=H, enc_in=2, patch_len=8, stride=4, d_model=16, n_heads=2, e_layers=1, d_ff=16)
    math_model = PatchTST(PatchTSTConfig(**cfg, attn_backend="math")).eval()
    sdpa_model = PatchTST(PatchTSTConfig(**cfg, attn_backend="sdpa")).eval()
    sdpa_model.load_state_dict(math_model.state_dict())
    x = torch.randn(3, L, 2)
    torch.testing.assert_close(math_model(x), sdpa_model(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- Informer


@pytest.mark.parametrize(("length", "halved"), [(96, 48), (97, 49), (48, 24), (1, 1)])
def test_distilling_halves_length(length: int, halved: int) -> None:
    layer = DistillingLayer(8)
    assert layer(torch.randn(2, length, 8)).shape == (2, halved, 8)


def test_informer_encoder_lengths_follow_distilling() -> None:
    cfg = InformerConfig(
        seq_len=96, pred_len=24, enc_in=3, dec_in=3, c_out=3, d_model=16, n_heads=2, d_ff=16, e_layers=3
    )
    model = Informer(cfg)
    assert cfg.encoder_lengths() == [96, 48, 24]
    memory = model.encode(torch.randn(2, 96, 3), torch.randn(2, 96, 4))
    assert memory.shape == (2, 24, 16)
    undistilled = InformerConfig(**{**cfg.to_dict(), "distil": False})
    assert Informer(undistilled).encode(torch.randn(2, 96, 3), torch.randn(2, 96, 4)).shape == (2, 96, 16)


def test_informer_decoder_input_is_start_tokens_then_zeros() -> None:
    model = small("informer", 3)
    x = torch.randn(2, L, 3)
    dec = model.decoder_input(x)
    assert dec.shape == (2, 8 + H, 3)
    torch.testing.assert_close(dec[:, :8], x[:, -8:])
    assert torch.all(dec[:, 8:] == 0)


# ---------------------------------------------------------------- S-Mamba


@pytest.mark.parametrize("mixer", ["mamba", "mamba2"])
def test_smamba_mixers(mixer: str) -> None:
    extra = {"mixer_kwargs": {"headdim": 8}} if mixer == "mamba2" else {}
    model = small("s_mamba", 3, mixer=mixer, **extra)
    assert type(model.layers[0].forward_mixer).__name__.lower() == mixer
    x, xm, ym = inputs(model)
    assert model(x, xm).shape == (3, H, 3)
    without = small("s_mamba", 3, use_time_features=False)
    assert not without.uses_x_mark and without(x).shape == (3, H, 3)


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("name", ["dlinear", "patchtst"])
def test_tiny_model_learns_a_sine(name: str) -> None:
    """Trained on windows of a noiseless sine, the forecast error falls far below the series' variance (0.5)."""
    t = torch.arange(600, dtype=torch.float32)
    series = torch.sin(2 * math.pi * t / 24) + 0.5 * torch.sin(2 * math.pi * t / 7)  # variance 0.625
    windows = series.unfold(0, L + H, 9)  # (N, L + H): 62 windows
    x, y = windows[:, :L, None], windows[:, L:, None]
    model = small(name, 1, dropout=0.0, e_layers=1) if name == "patchtst" else small(name, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(model(x), y).item()
    assert mse < 0.01, f"{name} did not fit the sine: mse {mse:.4f}"
