"""The ``Attention`` mixer: packed == per-sequence and cached decoding == full forward for every
positional scheme, plus configuration, registry and input errors."""

from __future__ import annotations

import pytest
import torch

from longseq.core.attention import attention
from longseq.core.attention.layer import Attention, AttentionConfig, KVCache
from longseq.core.attention.masks import prefix_lm_mask
from longseq.core.attention.positions import list_positions
from longseq.core.mixers import MixerProtocol
from longseq.core.packing import PackedBatch, position_ids_from_cu_seqlens
from longseq.core.registry import create_mixer
from longseq.kernels.testing import assert_close

pytestmark = pytest.mark.filterwarnings("ignore:attention.*using backend:UserWarning")

POSITIONS = list_positions()
C = 32


def make_layer(positions: str, **kw) -> Attention:
    pkw = {"max_distance": 5} if positions == "music" else {}
    layer = Attention(C, 4, num_kv_heads=2, positions=positions, positions_kwargs=pkw, **kw)
    for p in layer.positions.parameters():  # learned tables start at zero: make them matter
        torch.nn.init.normal_(p, std=0.5)
    return layer


def grads(layer: Attention, y: torch.Tensor, dy: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
    params = [x, *layer.parameters()]
    return list(torch.autograd.grad(y, params, dy))


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_packed_equals_per_sequence(positions, causal):
    layer = make_layer(positions, causal=causal, qk_norm=True, window=3 if causal else None)
    lens = [6, 1, 9, 3]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    x = torch.randn(cu[-1].item(), C, requires_grad=True)
    dy = torch.randn(cu[-1].item(), C)
    packed = PackedBatch(x, cu, max(lens), position_ids_from_cu_seqlens(cu))
    y = layer(x, packed=packed)
    g_packed = grads(layer, y, dy, x)
    ys = [layer(x[cu[i] : cu[i + 1]][None])[0] for i in range(len(lens))]
    y_seq = torch.cat(ys)
    g_seq = grads(layer, y_seq, dy, x)
    assert_close(y, y_seq, name=f"{positions} output")
    for i, (a, b) in enumerate(zip(g_packed, g_seq)):
        assert_close(a, b, name=f"{positions} grad {i}")


@pytest.mark.parametrize("positions", POSITIONS)
def test_decoding_equals_full_forward(positions):
    layer = make_layer(positions, causal=True, window=(4, 0)).eval()
    B, L, prompt = 2, 9, 4
    x = torch.randn(B, L, C)
    with torch.no_grad():
        full = layer(x)
        cache = layer.allocate_cache(B, 16, x.dtype, x.device)
        outs = [layer(x[:, :prompt], cache=cache)]
        for t in range(prompt, L):
            y_t, cache = layer.step(x[:, t], cache)
            outs.append(y_t[:, None])
    assert cache.seqlens.tolist() == [L, L]
    assert_close(torch.cat(outs, dim=1), full, name=f"{positions} decode")


def test_decoding_with_prefix_lm_mask():
    layer = make_layer("rope", mask_mod=prefix_lm_mask(3)).eval()  # bidirectional prefix, causal after
    x = torch.randn(1, 7, C)
    with torch.no_grad():
        full = layer(x)
        cache = layer.allocate_cache(1, 8, x.dtype, x.device)
        outs = [layer(x[:, :3], cache=cache)] + [layer.step(x[:, t], cache)[0][:, None] for t in range(3, 7)]
    assert_close(torch.cat(outs, 1), full, name="prefix-LM decode")


def test_attn_bias_and_mask_mod_reach_the_scores():
    layer = Attention(C, 4, positions="none", backend="math")
    x = torch.randn(2, 5, C)
    bias = torch.randn(2, 1, 5, 5)
    q, k, v = layer.qkv(x).split(C, -1)
    ref = attention(q.unflatten(-1, (4, 8)), k.unflatten(-1, (4, 8)), v.unflatten(-1, (4, 8)), bias=bias, causal=True)
    got = layer(x, attn_bias=bias, mask_mod=lambda b, h, qi, ki: ki <= qi)
    assert_close(got, layer.out(ref.flatten(-2)), name="bias + mask")


def test_gqa_mqa_shapes_and_qk_norm():
    for kv in (4, 2, 1):
        layer = Attention(C, 4, num_kv_heads=kv, qk_norm=True, head_dim=6)
        assert layer.qkv.out_features == (4 + 2 * kv) * 6
        y = layer(torch.randn(2, 3, C))
        assert y.shape == (2, 3, C)
    y.sum().backward()
    assert layer.q_norm.weight.grad is not None and layer.k_norm.weight.grad.abs().sum() > 0


def test_registry_and_protocol():
    layer = create_mixer("attention", dim=C, num_heads=4, causal=True)
    assert isinstance(layer, Attention) and isinstance(layer, MixerProtocol)
    ps = create_mixer("probsparse_attention", dim=C, num_heads=4)
    assert ps.config.variant == "probsparse"
    assert isinstance(layer.allocate_cache(2, 8, torch.float32, torch.device("cpu")), KVCache)


def test_config_errors():
    bad = [
        (dict(num_kv_heads=3), "num_kv_heads must divide"),
        (dict(positions="xpos"), "unknown positional scheme"),
        (dict(variant="linear"), "unknown attention variant"),
        (dict(window=(-3, 0)), "window left"),
        (dict(variant="probsparse", positions="alibi", window=4), "probsparse variant does not support window"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            AttentionConfig(dim=C, num_heads=4, **kw)
    with pytest.raises(ValueError, match="not divisible"):
        AttentionConfig(dim=30, num_heads=4)
    with pytest.raises(TypeError):
        Attention(C, 4, no_such_option=1)


def test_input_errors():
    layer = Attention(C, 4, causal=True)
    with pytest.raises(ValueError, match=r"\(B, L, C\)"):
        layer(torch.randn(3, C))
    cu = torch.tensor([0, 3], dtype=torch.int32)
    packed = PackedBatch(torch.randn(3, C), cu, 3, position_ids_from_cu_seqlens(cu))
    with pytest.raises(ValueError, match="packed input must be"):
        layer(torch.randn(4, C), packed=packed)
    cache = layer.allocate_cache(1, 4, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="KV cache needs padded"):
        layer(packed.x, packed=packed, cache=cache)
    with pytest.raises(ValueError, match="overflow"):
        layer(torch.randn(1, 5, C), cache=cache)
    with pytest.raises(ValueError, match="one token per row"):
        layer.step(torch.randn(1, 2, C), cache)
    ps = Attention(C, 4, variant="probsparse")
    with pytest.raises(NotImplementedError, match="no KV-cache"):
        ps.step(torch.randn(1, C), ps.allocate_cache(1, 4, torch.float32, torch.device("cpu")))
