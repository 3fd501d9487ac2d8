"""Block and SequenceBackbone: packed == each sequence alone (forward and gradients), config and
pattern validation, timm-style interface, gradient checkpointing, decoding through the blocks."""

from __future__ import annotations

import copy

import pytest
import torch
from toy_mixer import CumMeanMixer, toy_mixer_registered

from longseq.core.backbone import BackboneConfig, SequenceBackbone, parse_mixer_pattern, resolve_indices
from longseq.core.block import Block, DropPath
from longseq.core.mlp import create_mlp
from longseq.core.packing import pack, unpack
from longseq.core.registry import create_mixer, list_mixers
from longseq.kernels.testing import assert_close

DIM = 16
LENGTHS = [5, 1, 9, 3]


@pytest.fixture(autouse=True, scope="module")
def _toy():
    with toy_mixer_registered():
        yield


def _mixers():
    """The mixers every packed/cached test runs with: the toy one, and attention once registered."""
    return ["toy_cummean", pytest.param("attention", marks=_needs_attention())]


def _needs_attention():
    try:
        ok = "attention" in list_mixers()
    except Exception:  # the attention package is mid-edit
        ok = False
    return pytest.mark.skipif(not ok, reason="the 'attention' mixer is not registered yet")


def _mixer_kwargs(name, causal=True):
    return {"attention": {"num_heads": 2, "causal": causal}} if name == "attention" else {}


def _run(module, seqs, weights, packed):
    """Output and gradients (every parameter, then the input) of ``sum(module(x) * weights)``, with
    the sequences packed into one batch or run one at a time as batches of one."""
    module.zero_grad()
    if packed:
        batch = pack(seqs)
        x = batch.x.clone().requires_grad_()
        out = module(x, packed=batch)
        x_grads = [x]
    else:
        x_grads = [s.clone().requires_grad_() for s in seqs]
        out = torch.cat([module(x[None])[0] for x in x_grads])
    (out.float() * weights).sum().backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads["input"] = torch.cat([x.grad for x in x_grads])
    return out.detach(), grads


def assert_packed_matches_alone(module, seqs, dtype=torch.float32, what="module"):
    """The packing guarantee: ``module`` on packed ``seqs`` in ``dtype`` matches each sequence run alone
    (output and every gradient), under the tolerance rule: the fp32 run alone is the reference and the
    ``dtype`` run alone gives the low-precision error allowed (twice over)."""
    ref_module = copy.deepcopy(module).float()
    module = module.to(dtype)
    low_seqs = [s.to(dtype) for s in seqs]
    with torch.no_grad():  # weights of the loss, shaped like the output
        batch = pack(low_seqs)
        weights = torch.randn_like(module(batch.x, packed=batch).float())
    ref_out, ref_grads = _run(ref_module, [s.float() for s in seqs], weights, packed=False)
    low = _run(module, low_seqs, weights, packed=False) if dtype != torch.float32 else None
    out, grads = _run(module, low_seqs, weights, packed=True)
    assert_close(out, ref_out, None if low is None else low[0], name=f"{what} output")
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        if ref_grads[name] is None:
            assert g is None, f"{what}: {name} gets a gradient only when packed"
            continue
        assert_close(g, ref_grads[name], None if low is None else low[1][name], name=f"{what} grad {name}")


# ------------------------------------------------------------------ Block


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mixer", _mixers())
@pytest.mark.parametrize(("mlp", "norm"), [("swiglu", "rmsnorm"), ("gelu", "layernorm"), ("none", "rmsnorm")])
def test_block_packed_equals_each_sequence_alone(mixer, mlp, norm, dtype):
    block = Block(DIM, create_mixer(mixer, dim=DIM, **_mixer_kwargs(mixer).get(mixer, {})), create_mlp(mlp, DIM), norm)
    seqs = [torch.randn(n, DIM) for n in LENGTHS]
    assert_packed_matches_alone(block, seqs, dtype, f"Block({mixer}, {mlp}, {norm})")


def test_packed_check_catches_a_leaking_mixer():
    """The comparison above is not vacuous: a mixer that ignores the boundaries fails it."""
    block = Block(DIM, CumMeanMixer(DIM, leak=True), create_mlp("gelu", DIM), "layernorm")
    seqs = [torch.randn(n, DIM) for n in LENGTHS]
    with pytest.raises(AssertionError, match="output"):
        assert_packed_matches_alone(block, seqs, what="leaky block")


def test_drop_path_drops_whole_sequences():
    dp = DropPath(0.5).train()
    batch = pack([torch.ones(n, 4) for n in [3, 4, 2, 5, 6, 1, 7, 2]])
    y = dp(batch.x, batch)
    for s in unpack(y, batch.cu_seqlens):
        assert bool((s == 0).all()) or bool((s == 2).all()), "one decision per sequence, survivors scaled by 2"
    z = dp(torch.ones(64, 3, 4))
    assert set(z.flatten().tolist()) <= {0.0, 2.0} and all(len(set(r.flatten().tolist())) == 1 for r in z)
    assert 0 < int((z[:, 0, 0] == 0).sum()) < 64
    assert torch.equal(dp.eval()(batch.x, batch), batch.x)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropPath(1.0)


@pytest.mark.parametrize("mixer", _mixers())
def test_block_step_matches_forward(mixer):
    block = Block(DIM, create_mixer(mixer, dim=DIM, **_mixer_kwargs(mixer).get(mixer, {})), create_mlp("swiglu", DIM))
    x = torch.randn(2, 7, DIM)
    full = block(x)
    cache = block.allocate_cache(2, 7, dtype=x.dtype, device=x.device)
    steps = [block(x[:, :3], cache=cache)]
    for t in range(3, 7):
        y, cache = block.step(x[:, t], cache)
        steps.append(y[:, None])
    assert_close(torch.cat(steps, 1), full, name="prefill + steps")


# ------------------------------------------------------------------ patterns and config


@pytest.mark.parametrize(
    ("pattern", "depth", "expected"),
    [
        ("attention", 3, ["attention"] * 3),
        ("mamba2*3,attention", 8, ["mamba2"] * 3 + ["attention"] + ["mamba2"] * 3 + ["attention"]),
        (" hyena * 2 , attention ", 3, ["hyena", "hyena", "attention"]),
        ("a,b*2", None, ["a", "b", "b"]),
    ],
)
def test_parse_mixer_pattern(pattern, depth, expected):
    assert parse_mixer_pattern(pattern, depth) == expected


@pytest.mark.parametrize(
    ("pattern", "depth", "msg"),
    [
        ("mamba2*3,attention", 6, "4 layers per repeat, which does not divide depth 6"),
        ("mamba2*0", 2, "NAME\\*COUNT"),
        ("mamba2,,attention", 2, "item ''"),
        ("2mamba", 2, "item '2mamba'"),
        ("attention*x", 2, "item 'attention\\*x'"),
        ("", 2, "item ''"),
    ],
)
def test_parse_mixer_pattern_errors(pattern, depth, msg):
    with pytest.raises(ValueError, match=msg):
        parse_mixer_pattern(pattern, depth)


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"mixer_pattern": "nosuchmixer"}, "unknown mixers \\['nosuchmixer'\\]"),
        ({"mixer_pattern": "toy_cummean*2", "depth": 3}, "does not divide depth 3"),
        ({"vocab_size": 8, "input_dim": 3}, "not both"),
        ({"mlp": "relu"}, "mlp must be one of"),
        ({"norm": "batchnorm"}, "norm must be one of"),
        ({"pool": "max"}, "pool must be one of"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"depth": 0}, "depth must be >= 1"),
        ({"mixer_kwargs": {"atention": {}}}, "mixer_kwargs has entries \\['atention'\\]"),
    ],
)
def test_backbone_config_validation(kwargs, msg):
    base = {"mixer_pattern": "toy_cummean", "dim": DIM, "depth": 2}
    with pytest.raises(ValueError, match=msg):
        BackboneConfig(**{**base, **kwargs})


def test_config_replace_merges_mixer_kwargs():
    cfg = BackboneConfig(mixer_pattern="toy_cummean", mixer_kwargs={"toy_cummean": {"leak": False}})
    new = cfg.replace(depth=2, mixer_kwargs={"toy_cummean": {"leak": True}})
    assert new.depth == 2 and new.mixer_kwargs == {"toy_cummean": {"leak": True}}
    assert cfg.mixer_kwargs == {"toy_cummean": {"leak": False}}
    with pytest.raises(ValueError, match="unknown mixers"):
        cfg.replace(mixer_pattern="nope")


# ------------------------------------------------------------------ backbone


def _backbone(mixer="toy_cummean", **kw):
    """A 2-block backbone; LayerNorm by default because RMSNorm's kernel runs in Triton's (slow) CPU
    interpreter during tests; the tests that name ``norm="rmsnorm"`` cover it."""
    kw.setdefault("norm", "layernorm")
    cfg = BackboneConfig(
        dim=DIM, depth=2, mixer_pattern=mixer, mixer_kwargs=_mixer_kwargs(mixer, kw.pop("causal", True)), **kw
    )
    return SequenceBackbone(cfg)


@pytest.mark.parametrize("mixer", _mixers())
@pytest.mark.parametrize(
    ("kw", "dtype"),
    [
        ({"input_dim": 3, "num_classes": 0, "pool": "none", "norm": "rmsnorm"}, torch.float32),
        ({"input_dim": 3, "num_classes": 2, "pool": "none", "num_prefix_tokens": 2}, torch.float32),
        ({"input_dim": 3, "num_classes": 2, "pool": "none", "num_prefix_tokens": 2}, torch.bfloat16),
        ({"num_classes": 0, "pool": "none", "mlp": "gelu"}, torch.float32),
    ],
    ids=["features", "prefix-tokens", "prefix-tokens-bf16", "identity-embed"],
)
def test_backbone_packed_equals_each_sequence_alone(mixer, kw, dtype):
    model = _backbone(mixer, **kw)
    width = kw.get("input_dim") or DIM
    seqs = [torch.randn(n, width) for n in LENGTHS]
    assert_packed_matches_alone(model, seqs, dtype, f"backbone {mixer} {kw}")


@pytest.mark.parametrize("pool", ["mean", "cls", "last", "attention"])
def test_backbone_pooled_head_packed_equals_alone(pool):
    model = _backbone(vocab_size=11, num_classes=3, pool=pool, num_prefix_tokens=1)
    ids = [torch.randint(0, 11, (n,)) for n in LENGTHS]
    batch = pack(ids)
    out = model(batch)  # (N, 3)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alone = torch.cat([model(s[None]) for s in ids])
    (alone * w).sum().backward()
    assert_close(out, alone, name=f"{pool} logits")
    for i, (g, p) in enumerate(zip(grads, model.parameters())):
        assert_close(g, p.grad, name=f"{pool} grad {i}")


def test_backbone_padded_mask_and_input_errors():
    model = _backbone(vocab_size=11, num_classes=3, pool="mean")
    ids = torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = model(ids, mask=mask)
    assert_close(out[1], model(ids[1:, :4])[0], name="masked mean (causal mixer)")
    with pytest.raises(ValueError, match="integer ids \\(B, L\\)"):
        model(torch.randn(2, 6))
    with pytest.raises(ValueError, match="integer ids \\(T,\\)"):
        model(ids, packed=pack([ids[0]]))
    with pytest.raises(ValueError, match="not both"):
        model(pack([ids[0]]), packed=pack([ids[0]]))
    with pytest.raises(ValueError, match="continuous input must be \\(B, L, 3\\)"):
        _backbone(input_dim=3)(torch.randn(2, 6, 4))


def test_gradient_checkpointing_gives_identical_grads():
    model = _backbone(input_dim=3, num_classes=2, pool="mean", drop_path_rate=0.0)
    x = torch.randn(2, 9, 3)
    model(x).square().sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    batch = pack(list(x))
    model(x).square().sum().backward()
    for r, p in zip(ref, model.parameters()):
        assert torch.equal(r, p.grad)
    model(batch).sum().backward()  # packed input passes through checkpoint too


def test_forward_intermediates_and_pruning():
    model = _backbone(input_dim=3, num_classes=2, pool="cls", num_prefix_tokens=2)
    model.blocks.extend([model.blocks[0], model.blocks[1]])  # 4 blocks
    x = torch.randn(2, 7, 3)
    final, inter = model.forward_intermediates(x)
    assert final.shape == (2, 9, DIM) and len(inter) == 4 and all(t.shape == (2, 7, DIM) for t in inter)
    assert torch.equal(final, model.forward_features(x))
    assert len(model.forward_intermediates(x, 2, intermediates_only=True)) == 2
    normed = model.forward_intermediates(x, [-1], norm=True, intermediates_only=True)[0]
    assert_close(normed, final[:, 2:], name="last intermediate, normed")
    ((tok, prefix),) = model.forward_intermediates(x, [1], return_prefix_tokens=True, intermediates_only=True)
    assert tok.shape == (2, 7, DIM) and prefix.shape == (2, 2, DIM)
    batch = pack([torch.randn(n, 3) for n in LENGTHS])
    ((ptok, pprefix),) = model.forward_intermediates(batch, [0], return_prefix_tokens=True, intermediates_only=True)
    assert ptok.shape == (sum(LENGTHS), DIM) and pprefix.shape == (len(LENGTHS), 2, DIM)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, [4])
    assert resolve_indices(4, [-1, 0, 3]) == [0, 3]
    kept = model.prune_intermediate_layers([1], prune_norm=True)
    assert kept == [1] and len(model.blocks) == 2 and isinstance(model.get_classifier(), torch.nn.Identity)


def test_reset_classifier_and_timm_attributes():
    model = _backbone(vocab_size=11, num_prefix_tokens=1)
    assert model.num_prefix_tokens == 1 and model.num_features == DIM and model.no_weight_decay() == {"prefix_tokens"}
    ids = torch.randint(0, 11, (2, 5))
    assert model(ids).shape == (2, DIM)  # num_classes=0: pooled features
    model.reset_classifier(4, pool="attention")
    assert model(ids).shape == (2, 4) and model.get_classifier().out_features == 4
    model.reset_classifier(5, pool="none")
    assert model(ids).shape == (2, 5, 5)  # per token, prefix removed
    assert model.forward_head(model.forward_features(ids), pre_logits=True).shape == (2, 5, DIM)


@pytest.mark.parametrize("mixer", _mixers())
def test_backbone_step_matches_forward_features(mixer):
    model = _backbone(mixer, vocab_size=11, num_prefix_tokens=1).eval()
    ids = torch.randint(0, 11, (3, 8))
    full = model.forward_features(ids)
    cache = model.allocate_cache(3, 8)
    outs = [model.forward_features(ids[:, :2], cache=cache)]
    for t in range(2, 8):
        h, cache = model.step(ids[:, t], cache)
        outs.append(h[:, None])
    assert_close(torch.cat(outs, 1), full, name="prefill + steps")


@pytest.mark.gpu
def test_backbone_packed_equals_alone_on_gpu_bf16():
    """On CUDA in bf16 (flash/SDPA attention backends): packed output and input gradients match each
    sequence run alone in fp32, within twice the error of running each alone in bf16."""
    dev = torch.device("cuda")
    cfg = BackboneConfig(
        input_dim=32,
        dim=128,
        depth=2,
        pool="none",
        mixer_pattern="attention",
        mixer_kwargs={"attention": {"num_heads": 2, "causal": True}},
    )
    model = SequenceBackbone(cfg).to(dev)
    seqs = [torch.randn(n, 32, device=dev) for n in (1, 17, 113, 300)]
    w = [torch.randn(n, 128, device=dev) for n in (1, 17, 113, 300)]

    def alone(dtype):
        m = model.to(dtype)
        outs, grads = [], []
        for s, wi in zip(seqs, w):
            x = s.detach().to(dtype).requires_grad_()
            y = m(x[None])[0]
            (y.float() * wi).sum().backward()
            outs.append(y.detach())
            grads.append(x.grad)
        return torch.cat(outs), torch.cat(grads)

    ref_out, ref_grad = alone(torch.float32)
    low_out, low_grad = alone(torch.bfloat16)
    batch = pack([s.bfloat16() for s in seqs])
    x = batch.x.clone().requires_grad_()
    y = model.bfloat16()(x, packed=batch)
    (y.float() * torch.cat(w)).sum().backward()
    assert_close(y, ref_out, low_out, name="packed bf16 output")
    assert_close(x.grad, ref_grad, low_grad, name="packed bf16 input grad")
