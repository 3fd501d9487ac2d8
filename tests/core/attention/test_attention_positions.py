"""Positional schemes: each against its definition (layer-level packed/decoding tests live in
test_attention_layer.py)."""

from __future__ import annotations

import math

import pytest
import torch

from longseq.core.attention import AttentionSpec
from longseq.core.attention.positions import (
    alibi_slopes,
    create_positions,
    list_positions,
    sinusoid,
    skew,
    t5_bucket,
)
from longseq.kernels.testing import assert_close


def rope_complex(x: torch.Tensor, pos: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoPE by complex multiplication: channel pairs (i, i + D/2) as x_i + 1j x_{i+D/2}, times e^{1j pos w_i}."""
    half = x.shape[-1] // 2
    w = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    z = z * torch.polar(torch.ones_like(w), pos.double()[..., None, None] * w)
    return torch.cat((z.real, z.imag), -1).float()


def test_rope_matches_complex_rotation():
    rope = create_positions("rope", head_dim=8)
    x, pos = torch.randn(2, 5, 3, 8), torch.tensor([[0, 1, 2, 3, 4], [7, 0, 1, 2, 100]])
    assert_close(rope.rotate(x, pos), rope_complex(x, pos), name="rope")


def test_rope_is_relative_and_partial():
    rope = create_positions("rope", head_dim=8, rotary_dim=4)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def dot(m, n):
        return (rope.rotate(q, torch.tensor([[m]])) * rope.rotate(k, torch.tensor([[n]]))).sum()

    assert_close(dot(3, 1), dot(13, 11), name="shift invariance")
    assert torch.equal(rope.rotate(q, torch.tensor([[5]]))[..., 4:], q[..., 4:])  # un-rotated tail
    assert torch.equal(rope.rotate(q, torch.tensor([[0]])), q)


def test_rope_scaling():
    x, pos = torch.randn(1, 6, 2, 8), torch.arange(6)[None] * 3
    linear = create_positions("rope", head_dim=8, scaling="linear", factor=4.0)
    assert_close(linear.rotate(x, pos), create_positions("rope", head_dim=8).rotate(x, pos / 4.0), name="linear")
    plain, ntk = create_positions("rope", head_dim=8), create_positions("rope", head_dim=8, scaling="ntk", factor=4.0)
    assert ntk.inv_freq[0] == plain.inv_freq[0] == 1.0  # highest frequency kept
    assert_close(ntk.inv_freq[-1], plain.inv_freq[-1] / 4.0, name="lowest frequency / factor")
    for bad in (dict(scaling="yarn"), dict(factor=0.5), dict(rotary_dim=3)):
        with pytest.raises(ValueError):
            create_positions("rope", head_dim=8, **bad)


def test_alibi_slopes():
    assert torch.allclose(alibi_slopes(8), 2.0 ** -torch.arange(1, 9, dtype=torch.float32))
    twelve = alibi_slopes(12)
    assert torch.allclose(twelve[:8], alibi_slopes(8))
    assert torch.allclose(twelve[8:], 2.0 ** -(torch.arange(4, dtype=torch.float32) + 0.5))


def t5_bucket_scalar(rel: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128) -> int:
    """Hugging Face T5's ``_relative_position_bucket`` for one value."""
    ret = 0
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if rel > 0 else 0
        n = abs(rel)
    else:
        n = max(-rel, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets(bidirectional):
    rel = torch.arange(-300, 300)
    got = t5_bucket(rel, bidirectional, 32, 128)
    want = torch.tensor([t5_bucket_scalar(int(r), bidirectional) for r in rel])
    assert torch.equal(got, want)


def test_t5_score_mod_adds_the_table():
    t5 = create_positions("t5", num_heads=2, causal=True)
    torch.nn.init.normal_(t5.table)
    mod = t5.terms(torch.zeros(1, 3, 2, 4), AttentionSpec(), 3).score_mod
    s = mod(torch.zeros(()), torch.tensor(0), torch.tensor(1), torch.tensor(2), torch.tensor(0))
    assert s == t5.table[t5_bucket(torch.tensor(-2), False, 32, 128), 1]


@pytest.mark.parametrize("Lq, Lk", [(5, 5), (2, 7), (1, 4)])
def test_music_skew_equals_brute_force(Lq, Lk):
    music = create_positions("music", num_heads=2, head_dim=4, max_distance=3)
    q = torch.randn(2, Lq, 2, 4)
    got = music.relative_logits(q, Lk)
    want = torch.zeros(2, 2, Lq, Lk)
    for b in range(2):
        for h in range(2):
            for r in range(Lq):
                i = r + Lk - Lq
                for j in range(Lk):
                    want[b, h, r, j] = q[b, r, h] @ music.rel[h, max(-3, min(3, j - i)) + 3]
    assert_close(got, want.detach(), name="skewed relative logits")


def test_skew_checks_width():
    with pytest.raises(ValueError, match="relative columns"):
        skew(torch.zeros(3, 5), 4)


def test_absolute_schemes():
    x = torch.zeros(1, 3, 6)
    pos = torch.tensor([[0, 1, 2]])
    sin = create_positions("sinusoidal", dim=6).encode(x, pos)
    assert torch.equal(sin[0, 0], torch.tensor([0.0, 1.0] * 3))
    assert_close(sin[0, 2, :2], torch.tensor([math.sin(2), math.cos(2)]), name="sinusoid")
    assert_close(sinusoid(pos, 6)[0], sin[0], name="table")
    learned = create_positions("learned", dim=6, max_len=3)
    assert_close(learned.encode(x, pos).detach(), learned.table.weight[None].detach(), name="learned")
    with pytest.raises(ValueError, match="max_len=3"):
        learned.encode(x, pos + 1)


def test_registry():
    assert set(list_positions()) >= {"none", "rope", "alibi", "t5", "music", "learned", "sinusoidal"}
    with pytest.raises(ValueError, match="valid: none, rope"):
        create_positions("xpos")
    with pytest.raises(TypeError):
        create_positions("rope", head_dim=8, thetaa=1.0)
    none = create_positions("none", dim=4, num_heads=2, head_dim=2, causal=True)  # context args are dropped
    x = torch.randn(2, 3, 4)
    assert none.encode(x, torch.zeros(2, 3)) is x
