"""Mamba and Mamba-2 mixers: decoding equals the full forward, packed equals per sequence (outputs and
gradients), initialisation, the registry and the backbone config string."""

from __future__ import annotations

import math

import pytest
import torch

from longseq.core.mixers.mamba import Mamba, MambaConfig
from longseq.core.mixers.mamba2 import Mamba2, Mamba2Config
from longseq.core.packing import PackedBatch, position_ids_from_cu_seqlens
from longseq.core.registry import create_mixer, list_mixers
from longseq.kernels.testing import assert_close

DIM = 8
# Small but complete: grouped B/C and several heads per group for Mamba-2.
KWARGS = {
    "mamba": {"d_state": 4, "d_conv": 4},
    "mamba2": {"d_state": 8, "headdim": 4, "ngroups": 2, "chunk_size": 16},
}


def _mixer(name: str, **overrides) -> torch.nn.Module:
    return create_mixer(name, dim=DIM, **(KWARGS[name] | overrides)).to(device=_device())


def _device() -> torch.device:
    from longseq.kernels.testing import kernel_device

    return kernel_device()


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_registered_and_built_by_name(name):
    assert name in list_mixers()
    m = _mixer(name)
    assert isinstance(m, Mamba if name == "mamba" else Mamba2)
    y = m(torch.randn(2, 5, DIM, device=_device()))
    assert y.shape == (2, 5, DIM) and not y.isnan().any()


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_step_by_step_equals_full_forward(name):
    """Prefill 5 tokens through forward(cache=...), then step token by token: the outputs are the
    full forward's, and a second chunked prefill continues from the cache exactly."""
    m = _mixer(name)
    x = torch.randn(2, 13, DIM, device=_device())
    with torch.no_grad():
        full = m(x)
        cache = m.allocate_cache(2, 13, torch.float32, x.device)
        outs = [m(x[:, :5], cache=cache)]
        outs.append(m(x[:, 5:7], cache=cache))  # continue a prefill from the cache
        for t in range(7, 13):
            y_t, cache = m.step(x[:, t], cache)
            outs.append(y_t[:, None])
    assert cache.seqlen == 13
    assert_close(torch.cat(outs, dim=1), full, name=f"{name} prefill + steps")


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_packed_equals_per_sequence(name):
    """Packed (T, D) input restarts the state at each sequence: outputs and every gradient equal
    running the sequences alone."""
    m = _mixer(name)
    lengths = [6, 1, 11]
    seqs = [torch.randn(n, DIM, device=_device(), requires_grad=True) for n in lengths]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=_device())
    x = torch.cat(seqs)
    packed = PackedBatch(x, cu, max(lengths), position_ids_from_cu_seqlens(cu))
    y_packed = m(x, packed=packed)
    assert y_packed.shape == x.shape
    params = [p for p in m.parameters() if p.requires_grad]
    dy = torch.randn_like(y_packed)
    g_packed = torch.autograd.grad(y_packed, [*seqs, *params], dy)
    y_alone = torch.cat([m(s[None])[0] for s in seqs])
    g_alone = torch.autograd.grad(y_alone, [*seqs, *params], dy)
    assert_close(y_packed, y_alone, name="y")
    names = [f"x{i}" for i in range(len(seqs))] + [n for n, p in m.named_parameters() if p.requires_grad]
    for n, gp, ga in zip(names, g_packed, g_alone):
        assert_close(gp, ga, name=n)


def test_mamba_initialisation():
    cfg = MambaConfig(dim=32, d_state=6, dt_min=0.01, dt_max=0.05)
    m = Mamba(32, d_state=6, dt_min=0.01, dt_max=0.05)
    assert cfg.dt_rank == 2 and m.dt_proj.weight.shape == (64, 2)
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.01 - 1e-6 and dt.max() <= 0.05 + 1e-6
    assert torch.equal(-torch.exp(m.A_log), -torch.arange(1.0, 7.0).repeat(64, 1))
    assert torch.equal(m.D, torch.ones(64))
    assert m.dt_proj.weight.abs().max() <= 2**-0.5
    assert m.A_log._no_weight_decay and m.D._no_weight_decay


def test_mamba2_initialisation():
    m = Mamba2(16, d_state=8, headdim=8, ngroups=2, A_init_range=(2.0, 4.0), dt_min=0.002, dt_max=0.02)
    assert m.config.nheads == 4 and m.in_proj.out_features == 32 + (32 + 2 * 2 * 8) + 4
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert dt.min() >= 0.002 - 1e-6 and dt.max() <= 0.02 + 1e-6
    A = torch.exp(m.A_log)
    assert A.min() >= 2.0 and A.max() <= 4.0
    assert torch.equal(m.D, torch.ones(4))
    assert Mamba2(16, headdim=8, D_has_hdim=True).D.shape == (32,)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (MambaConfig, {"dim": 8, "d_conv": 9}, r"d_conv must be in \[1, 8\]"),
        (MambaConfig, {"dim": 8, "dt_init": "zeros"}, "dt_init must be"),
        (MambaConfig, {"dim": 8, "dt_rank": 0}, "dt_rank must be"),
        (Mamba2Config, {"dim": 10, "headdim": 8}, "must be a multiple of headdim 8"),
        (Mamba2Config, {"dim": 16, "headdim": 8, "ngroups": 3}, "ngroups 3 must divide"),
        (Mamba2Config, {"dim": 16, "headdim": 8, "chunk_size": 100}, "chunk_size must be one of"),
    ],
)
def test_bad_config(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_bad_input(name):
    m = _mixer(name)
    dev = _device()
    with pytest.raises(ValueError, match=r"input must be \(B, L, D\) with D = 8"):
        m(torch.randn(2, 3, 5, device=dev))
    cu = torch.tensor([0, 3], dtype=torch.int32, device=dev)
    packed = PackedBatch(torch.randn(3, DIM, device=dev), cu, 3, position_ids_from_cu_seqlens(cu))
    with pytest.raises(ValueError, match="a decoding cache needs padded"):
        m(packed.x, packed=packed, cache=m.allocate_cache(1, 3, torch.float32, dev))
    with pytest.raises(ValueError, match=r"step takes x_t of shape \(B, D=8\)"):
        m.step(torch.randn(2, 1, DIM, device=dev), m.allocate_cache(2, 3, torch.float32, dev))


def test_mamba2_norm_groups_and_D_per_channel():
    """ngroups=1 (fused norm weight) and per-channel D run and decode consistently."""
    m = _mixer("mamba2", ngroups=1, D_has_hdim=True)
    x = torch.randn(1, 6, DIM, device=_device())
    with torch.no_grad():
        full = m(x)
        cache = m.allocate_cache(1, 6, torch.float32, x.device)
        steps = [m.step(x[:, t], cache)[0] for t in range(6)]
    assert_close(torch.stack(steps, dim=1), full, name="steps")


@pytest.mark.parametrize("pattern", ["mamba", "mamba2*2,mamba"])
def test_usable_from_backbone_config_string(pattern):
    """SequenceBackbone builds the mixers from the pattern string and trains (gradients everywhere)."""
    from longseq.core.backbone import BackboneConfig, SequenceBackbone, parse_mixer_pattern

    names = parse_mixer_pattern(pattern)
    cfg = BackboneConfig(
        dim=DIM, depth=len(names), mixer_pattern=pattern, vocab_size=11,
        mixer_kwargs={k: v for k, v in KWARGS.items() if k in names}, mlp_ratio=1.0,
    )  # fmt: skip
    model = SequenceBackbone(cfg).to(_device())
    ids = torch.randint(0, 11, (2, 7), device=_device())
    feats = model.forward_features(ids)
    feats.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_language_model_decoding_matches_forward():
    """A hybrid LM ("mamba2,mamba") through the generation protocol: prefill + steps give the full
    forward's next-token logits (the cache defaults to the parameters' dtype and device)."""
    from longseq.core.backbone import BackboneConfig
    from longseq.core.models import LanguageModel

    cfg = BackboneConfig(
        vocab_size=11, dim=DIM, depth=2, mixer_pattern="mamba2,mamba", mixer_kwargs=KWARGS, mlp_ratio=1.0
    )
    lm = LanguageModel(cfg).to(_device())
    ids = torch.randint(0, 11, (2, 9), device=_device())
    with torch.no_grad():
        full = lm(ids)  # (B, L, V)
        cache = lm.allocate_cache(2, 9)
        logits = [lm(ids[:, :4], cache=cache)]
        for t in range(4, 9):
            step_logits, cache = lm.step(ids[:, t], cache)
            logits.append(step_logits[:, None])
    assert_close(torch.cat(logits, dim=1), full, name="logits")


def test_mamba_bf16_forward_backward():
    """A bf16 layer (as under mixed precision) runs forward and backward without NaN and stays near fp32."""
    m = _mixer("mamba")
    x = torch.randn(2, 9, DIM, device=_device())
    ref = m(x)
    m16 = m.to(torch.bfloat16)
    x16 = x.bfloat16().requires_grad_()
    y = m16(x16)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and not x16.grad.isnan().any()
    assert (y.float() - ref).abs().max() <= 0.05 * max(1.0, ref.abs().max().item())
    assert math.isfinite(m16.A_log.grad.float().sum().item())


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_mixers_gpu_bf16_decode_and_packing(name):
    """Benchmark-like widths on the GPU in bf16: prefill + steps track the full forward, and packed
    rows equal the sequences alone (outputs within bf16 rounding)."""
    kwargs = {"mamba": {"d_state": 16}, "mamba2": {"d_state": 64, "headdim": 64, "chunk_size": 64}}[name]
    m = create_mixer(name, dim=256, **kwargs).cuda().to(torch.bfloat16)
    x = torch.randn(2, 300, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        full = m(x).float()
        cache = m.allocate_cache(2, 300, torch.bfloat16, x.device)
        outs = [m(x[:, :257], cache=cache).float()]
        for t in range(257, 300):
            outs.append(m.step(x[:, t], cache)[0].float()[:, None])
        tol = 0.05 * full.abs().max().item()
        assert (torch.cat(outs, dim=1) - full).abs().max().item() <= tol
        lengths = [100, 1, 199]
        cu = torch.tensor([0, 100, 101, 300], dtype=torch.int32, device="cuda")
        xp = x[0]
        packed = PackedBatch(xp, cu, max(lengths), position_ids_from_cu_seqlens(cu))
        y_packed = m(xp, packed=packed).float()
        y_alone = torch.cat([m(xp[s:e][None])[0].float() for s, e in zip(cu[:-1].tolist(), cu[1:].tolist())])
        assert (y_packed - y_alone).abs().max().item() <= tol
