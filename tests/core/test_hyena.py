"""Hyena mixer: against an independent dense-matrix reference, causality, packing, bidirectional,
decoding, filter, registry and backbone integration.

Most tests run the long convolutions on the torch.fft path (the ``torch_fft`` fixture): the kernels have
their own tests in ``tests/kernels/test_fftconv.py``; ``test_hyena_kernel_path_matches_torch_path``
runs the mixer through the Triton kernels (the interpreter on CPU) once.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from longseq.core.backbone import BackboneConfig, SequenceBackbone
from longseq.core.mixers import MixerProtocol
from longseq.core.mixers._hyena_filter import HyenaFilter, positional_features
from longseq.core.mixers.hyena import HyenaConfig, HyenaOperator
from longseq.core.packing import PackedBatch, cu_seqlens_from_lengths, position_ids_from_cu_seqlens
from longseq.core.registry import create_mixer, create_model, list_mixers
from longseq.kernels.testing import assert_close

SMALL = {"filter_order": 16, "max_len": 64}


@pytest.fixture
def torch_fft(monkeypatch):
    """Long convolutions by torch.fft (what plain CPU tensors use outside the Triton interpreter)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")


def _mixer(dim=8, **kw) -> HyenaOperator:
    return HyenaOperator(dim, **{**SMALL, **kw})


def _dense_filter(causal: torch.Tensor, anti: torch.Tensor | None) -> torch.Tensor:
    """``(D, L, L)`` matrices ``M[t, s] = h[t - s]`` (s <= t) and ``g[s - t]`` (s > t)."""
    L = causal.shape[-1]
    lag = torch.arange(L)[:, None] - torch.arange(L)[None, :]  # t - s
    M = torch.where(lag >= 0, causal[:, lag.clamp(min=0)], 0.0)
    if anti is not None:
        M = M + torch.where(lag < 0, anti[:, (-lag).clamp(min=0)], 0.0)
    return M


def _reference(m: HyenaOperator, x: torch.Tensor) -> torch.Tensor:
    """The operator written out with dense convolution matrices (Safari's conv1d padding for the short filter)."""
    cfg = m.config
    B, L, _ = x.shape
    u = F.linear(x, m.in_proj.weight, m.in_proj.bias).transpose(1, 2)  # (B, C, L)
    W = cfg.short_filter_order
    u = F.conv1d(u, m.short_filter.weight, m.short_filter.bias, padding=W - 1, groups=u.shape[1])[..., :L]
    *xs, v = u.split(cfg.dim, dim=1)
    h = m.filters(L)  # (directions, N - 1, D, L)
    skip = m.skip.repeat(1, cfg.num_heads)
    for o, x_i in enumerate(reversed(xs[1:])):
        w = v * x_i
        M = _dense_filter(h[0, o], h[1, o] if cfg.bidirectional else None)
        v = torch.einsum("dts,bds->bdt", M, w) + skip[o][:, None] * w
    return F.linear((v * xs[0]).transpose(1, 2), m.out_proj.weight, m.out_proj.bias)


def _packed(lengths: list[int], dim: int) -> PackedBatch:
    cu = cu_seqlens_from_lengths(torch.tensor(lengths))
    x = torch.randn(int(cu[-1]), dim)
    return PackedBatch(x, cu, max(lengths), position_ids_from_cu_seqlens(cu))


@pytest.mark.parametrize(
    "options",
    [{}, {"order": 3}, {"num_heads": 2}, {"bidirectional": True}, {"short_filter_order": 1, "bias": False}],
    ids=str,
)
def test_hyena_matches_dense_reference(options, torch_fft):
    m = _mixer(**options)
    x = torch.randn(2, 19, 8)
    assert_close(m(x), _reference(m, x), name="y")


def test_hyena_is_causal(torch_fft):
    """The output at t does not depend on any input after t (up to FFT round-off)."""
    m = _mixer()
    x = torch.randn(1, 12, 8, requires_grad=True)
    y = m(x)
    for t in (0, 5, 10):
        (g,) = torch.autograd.grad(y[0, t].sum(), x, retain_graph=True)
        assert g[0, t + 1 :].abs().max() <= 1e-6 * g.abs().max(), f"output {t} reads the future"
        assert g[0, t].abs().sum() > 0


def test_hyena_bidirectional_sees_both_directions(torch_fft):
    m = _mixer(bidirectional=True)
    x = torch.randn(1, 12, 8, requires_grad=True)
    (g,) = torch.autograd.grad(m(x)[0, 5].sum(), x)
    assert g[0, :5].abs().sum() > 0 and g[0, 6:].abs().sum() > 0


@pytest.mark.parametrize("options", [{}, {"bidirectional": True}, {"order": 3, "num_heads": 2}], ids=str)
def test_hyena_packed_matches_per_sequence(options, torch_fft):
    """Packed output and the gradients of input and parameters equal running each sequence alone."""
    m = _mixer(**options)
    pb = _packed([5, 1, 13, 7], 8)
    x = pb.x.clone().requires_grad_()
    y = m(x, packed=pb)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *m.parameters()], dy)
    bounds = pb.cu_seqlens.tolist()
    xs = x.detach().clone().requires_grad_()
    ys = torch.cat([m(xs[None, s:e])[0] for s, e in zip(bounds[:-1], bounds[1:])])
    ref = torch.autograd.grad(ys, [xs, *m.parameters()], dy)
    assert_close(y, ys, name="y")
    for i, (a, b) in enumerate(zip(grads, ref)):
        assert_close(a, b, name=f"grad {i}")


@pytest.mark.parametrize("order", [2, 3])
def test_hyena_decoding_matches_full_forward(order, torch_fft):
    """Prefill, a second prefill chunk, then single steps reproduce the full forward."""
    m = _mixer(order=order).eval()
    x = torch.randn(2, 16, 8)
    full = m(x)
    cache = m.allocate_cache(2, 20, torch.float32, torch.device("cpu"))
    parts = [m(x[:, :6], cache=cache), m(x[:, 6:9], cache=cache)]
    for t in range(9, 16):
        y_t, cache = m.step(x[:, t], cache)
        parts.append(y_t[:, None])
    assert cache.seqlen == 16
    assert_close(torch.cat(parts, dim=1), full, name="decoded")


def test_hyena_decoding_errors():
    m = _mixer()
    with pytest.raises(ValueError, match="exceeds the Hyena filter length max_len=64"):
        m.allocate_cache(1, 65, torch.float32, torch.device("cpu"))
    cache = m.allocate_cache(1, 2, torch.float32, torch.device("cpu"))
    for _ in range(2):
        m.step(torch.randn(1, 8), cache)
    with pytest.raises(ValueError, match="cache is full"):
        m.step(torch.randn(1, 8), cache)
    with pytest.raises(ValueError, match="cannot decode"):
        _mixer(bidirectional=True).allocate_cache(1, 4, torch.float32, torch.device("cpu"))


def test_hyena_rejects_bad_input_and_config():
    m = _mixer()
    with pytest.raises(ValueError, match="exceeds the Hyena filter length"):
        m(torch.randn(1, 65, 8))
    with pytest.raises(ValueError, match=r"input must be \(B, L, D\) with D = 8"):
        m(torch.randn(1, 5, 7))
    for kw, match in [
        ({"order": 1}, "order must be >= 2"),
        ({"num_heads": 3}, "divisible by num_heads"),
        ({"emb_dim": 4}, "emb_dim must be odd"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"max_len": 0}, "max_len must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            HyenaConfig(dim=8, **kw)


def test_hyena_filter_is_length_independent_and_decays():
    """filter(L) is the first L taps of filter(max_len) (decoding relies on it); the window decays."""
    f = HyenaFilter(6, 50, width=8)
    assert_close(f(17), f(50)[:, :17], name="prefix")
    window = torch.exp(-f.t[:, 0] * f.deltas.abs())  # (channels, L)
    assert bool((window[:, 1:] <= window[:, :-1]).all()) and window[-1, -1] < window[0, -1]
    z, t = positional_features(50, 5)
    assert z.shape == (50, 5) and t[0, 0] == 0 and t[-1, 0] == 1
    assert_close(z[:, 2], torch.cos(2 * torch.pi * torch.arange(50) / 50 * 1.0), eps=1e-6, name="band 1")
    with pytest.raises(ValueError, match=r"filter length must be in \[1, max_len=50\]"):
        f(51)


def test_hyena_filter_precision_under_autocast():
    """filter_fp32: the filters are fp32 under bf16 autocast too; off (the reference behaviour) they
    follow autocast and differ from the fp32 ones."""
    ref = HyenaFilter(6, 4096, width=16, fp32=True)
    follows = HyenaFilter(6, 4096, width=16)
    follows.load_state_dict(ref.state_dict())
    exact = ref(4096)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, coarse = ref(4096), follows(4096)
    assert got.dtype == torch.float32 and torch.equal(got, exact)
    assert torch.equal(follows(4096), exact)  # outside autocast both are fp32
    assert float((coarse.float() - exact).abs().max()) > 1e-3  # bf16 matmuls inside


def test_hyena_dropout_trains_and_is_identity_in_eval(torch_fft):
    m = _mixer(dropout=0.5)
    x = torch.randn(2, 10, 8)
    assert not torch.equal(m.train()(x), m(x))  # two different masks
    assert torch.equal(m.eval()(x), m(x))


def test_hyena_registered_and_follows_the_protocol():
    assert "hyena" in list_mixers()
    m = create_mixer("hyena", dim=16, max_len=32)
    assert isinstance(m, HyenaOperator) and isinstance(m, MixerProtocol)


def test_hyena_from_backbone_config_string(torch_fft):
    """``"hyena*2"`` in a backbone config; a Hyena language model decodes like its full forward."""
    cfg = BackboneConfig(vocab_size=16, dim=16, depth=2, mixer_pattern="hyena*2", mixer_kwargs={"hyena": SMALL})
    feats = SequenceBackbone(cfg).forward_features(torch.randint(0, 16, (2, 9)))
    assert feats.shape == (2, 9, 16)
    lm = create_model("transformer_lm_tiny", mixer_pattern="hyena", mixer_kwargs={"hyena": SMALL}).eval()
    ids = torch.randint(0, 256, (2, 10))
    full = lm(ids)
    cache = lm.allocate_cache(2, 10)
    logits = [lm(ids[:, :6], cache=cache)]
    for t in range(6, 10):
        step, cache = lm.step(ids[:, t], cache)
        logits.append(step[:, None])
    assert_close(torch.cat(logits, dim=1), full, name="logits")


def test_hyena_kernel_path_matches_torch_path(monkeypatch):
    """The mixer on the Triton kernels (interpreter on CPU) equals the torch.fft path, gradients included."""
    m = HyenaOperator(8, **SMALL)
    pb = _packed([6, 11], 8)
    x = pb.x
    results = []
    for interpret in ("1", "0"):
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        xi = x.clone().requires_grad_()
        y = m(xi, packed=pb.with_x(xi))
        results.append((y, *torch.autograd.grad(y.square().sum(), [xi, m.filter.out.weight, m.skip])))
    for name, a, b in zip(("y", "dx", "dfilter", "dskip"), *results):
        assert_close(a, b, name=name)
