"""Informer's ProbSparse attention against a dense reference built from its chosen queries."""

from __future__ import annotations

import math

import pytest
import torch
from attn_testing import make_qkv

from longseq.core.attention import AttentionSpec, attention_ref
from longseq.core.attention.layer import Attention
from longseq.core.attention.probsparse import probsparse_attention, probsparse_counts
from longseq.core.packing import PackedBatch, position_ids_from_cu_seqlens
from longseq.kernels.testing import assert_close


def dense_probsparse(q, k, v, top: torch.Tensor, causal: bool) -> torch.Tensor:
    """Full attention on the rows in ``top`` (B, H, u), uniform attention over the allowed keys elsewhere."""
    full = attention_ref(q, k, v, AttentionSpec(causal=causal))  # (B, L, H, D)
    B, L, H, D = full.shape
    vh = v.float().repeat_interleave(H // v.shape[2], dim=2)  # (B, Lk, H, D)
    out = torch.empty_like(full)
    for b in range(B):
        for h in range(H):
            active = set(top[b, h].tolist())
            for i in range(L):
                if i in active:
                    out[b, i, h] = full[b, i, h]
                else:
                    n = i + 1 if causal else vh.shape[1]
                    out[b, i, h] = vh[b, :n, h].mean(0)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_all_queries_active_equals_full_attention(causal):
    q, k, v = make_qkv(2, 11, 11, 4, 2, 8)
    dy = torch.randn(q.shape)
    out = probsparse_attention(q, k, v, causal=causal, factor=100.0)  # u = L
    ref = attention_ref(q, k, v, AttentionSpec(causal=causal))
    assert_close(out, ref, name="u = L output")
    g = torch.autograd.grad(out, (q, k, v), dy)
    g_ref = torch.autograd.grad(ref, (q, k, v), dy)
    for name, a, b in zip("qkv", g, g_ref):
        assert_close(a, b, name=f"u = L d{name}")


@pytest.mark.parametrize("causal", [False, True])
def test_lazy_queries_get_mean_of_values(causal):
    q, k, v = make_qkv(2, 40, 40, 2, 1, 8)
    gen = torch.Generator().manual_seed(0)
    out, (top,) = probsparse_attention(q, k, v, causal=causal, factor=1.0, generator=gen, return_index=True)
    u, _ = probsparse_counts(40, 40, 1.0)
    assert top.shape == (2, 2, u) and u < 40
    assert_close(out, dense_probsparse(q, k, v, top, causal), name="probsparse vs dense")


def test_selection_prefers_peaked_queries():
    # Zero queries score every key 0 (M = max - mean = 0); query 3 scores keys unevenly (M > 0).
    L, D = 30, 8
    k = torch.randn(1, L, 1, D)
    q = torch.zeros(1, L, 1, D)
    q[0, 3, 0] = 10 * k[0, 5, 0]
    gen = torch.Generator().manual_seed(1)
    _, (top,) = probsparse_attention(q, k, k.clone(), factor=1.0, generator=gen, return_index=True)
    assert top.shape[-1] < L and 3 in top[0, 0].tolist()


def test_counts_are_logarithmic():
    u, U = probsparse_counts(4096, 4096, 5.0)
    assert u == U == math.ceil(5 * math.log(4096))
    assert probsparse_counts(3, 3, 5.0) == (3, 3)


def test_reproducible_with_generator():
    q, k, v = make_qkv(1, 50, 50, 2, 2, 4, grad=False)
    a = probsparse_attention(q, k, v, factor=1.0, generator=torch.Generator().manual_seed(5))
    b = probsparse_attention(q, k, v, factor=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_packed_runs_each_sequence_alone():
    lens = [7, 1, 12]
    cu = torch.tensor([0, 7, 8, 20], dtype=torch.int32)
    q, k, v = (torch.randn(20, 2, 4) for _ in range(3))
    out, tops = probsparse_attention(q, k, v, causal=True, factor=1.0, cu_seqlens=cu, return_index=True)
    for i, top in enumerate(tops):
        s = slice(int(cu[i]), int(cu[i + 1]))
        ref = dense_probsparse(q[s][None], k[s][None], v[s][None], top, True)[0]
        assert_close(out[s], ref, name=f"sequence {i} (len {lens[i]})")


def test_module_variant_packed_equals_per_sequence():
    layer = Attention(16, 2, variant="probsparse", factor=100.0, causal=True)  # u = L: deterministic
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    x = torch.randn(12, 16)
    y = layer(x, packed=PackedBatch(x, cu, 7, position_ids_from_cu_seqlens(cu)))
    y_seq = torch.cat([layer(x[:5][None])[0], layer(x[5:][None])[0]])
    assert_close(y, y_seq, name="probsparse layer packed")
    full = Attention(16, 2, causal=True)
    full.load_state_dict(layer.state_dict())
    assert_close(y[:5], full(x[:5][None])[0], name="probsparse layer with u = L vs full layer")


def test_errors():
    q, k, v = make_qkv(1, 4, 5, 2, 2, 4, grad=False)
    with pytest.raises(ValueError, match="Lq == Lk"):
        probsparse_attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="factor"):
        probsparse_attention(q, k, v, factor=0)
    with pytest.raises(ValueError, match="padded"):
        probsparse_attention(q[0], k[0], v[0])
