"""The ``math`` backend is the spec: check it against explicit loops, and its edge cases."""

from __future__ import annotations

import pytest
import torch
from attn_testing import make_qkv, naive_attention, packed_qkv

from longseq.core.attention import AttentionSpec, attention_ref
from longseq.kernels.testing import assert_close

CASES = [
    # (B, Lq, Lk, H, H_kv, D, spec kwargs)
    (2, 5, 5, 2, 2, 4, dict()),
    (2, 5, 5, 2, 1, 4, dict(causal=True)),
    (1, 3, 7, 4, 2, 8, dict(causal=True)),  # bottom-right causal, Lq < Lk
    (1, 7, 3, 2, 2, 4, dict(causal=True)),  # Lq > Lk: the first rows see nothing
    (2, 6, 6, 2, 2, 4, dict(window=(2, 1))),
    (1, 4, 9, 2, 1, 4, dict(causal=True, window=(3, -1), softcap=0.7)),
    (2, 5, 6, 4, 2, 4, dict(alibi=True, window=(-1, 1), scale=0.3)),
    (2, 5, 5, 2, 2, 4, dict(bias=True, causal=True)),
]


@pytest.mark.parametrize("B, Lq, Lk, H, H_kv, D, kw", CASES)
def test_math_matches_loops(B, Lq, Lk, H, H_kv, D, kw):
    q, k, v = make_qkv(B, Lq, Lk, H, H_kv, D, grad=False)
    alibi = torch.rand(H) if kw.pop("alibi", False) else None
    bias = torch.randn(B, H, Lq, Lk) if kw.pop("bias", False) else None
    spec = AttentionSpec(alibi_slopes=alibi, bias=bias, **kw)
    expected = naive_attention(q, k, v, alibi=alibi, bias=bias, **kw)
    assert_close(attention_ref(q, k, v, spec), expected.float(), name="math vs loops")


def test_kv_seqlens_matches_loops():
    q, k, v = make_qkv(3, 2, 6, 2, 1, 4, grad=False)
    kv_len = torch.tensor([6, 2, 4], dtype=torch.int32)
    spec = AttentionSpec(causal=True, kv_seqlens=kv_len)
    expected = naive_attention(q, k, v, causal=True, kv_len=kv_len)
    assert_close(attention_ref(q, k, v, spec), expected.float(), name="math kv_seqlens vs loops")


def test_packed_is_each_sequence_alone():
    lens_q, lens_k = [3, 0, 5, 1], [4, 2, 5, 3]
    q, k, v, varlen = packed_qkv(lens_q, lens_k, 2, 1, 4)
    spec = AttentionSpec(causal=True, window=(2, 0), **varlen)
    out = attention_ref(q, k, v, spec)
    cq, ck = varlen["cu_seqlens_q"].tolist(), varlen["cu_seqlens_k"].tolist()
    for i in range(len(lens_q)):
        qi, ki, vi = (t[None] for t in (q[cq[i] : cq[i + 1]], k[ck[i] : ck[i + 1]], v[ck[i] : ck[i + 1]]))
        expected = naive_attention(qi, ki, vi, causal=True, window=(2, 0))[0]
        assert_close(out[cq[i] : cq[i + 1]], expected.float(), name=f"sequence {i}")


def test_empty_rows_are_zero_with_finite_grads():
    q, k, v = make_qkv(1, 4, 2, 2, 2, 4)
    spec = AttentionSpec(causal=True)  # rows 0 and 1 sit before the first key
    out = attention_ref(q, k, v, spec)
    assert out[:, :2].abs().max() == 0
    assert out[:, 2:].abs().max() > 0
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert q.grad[:, :2].abs().max() == 0


def test_minus_inf_bias_row_is_zero():
    q, k, v = make_qkv(1, 3, 3, 1, 1, 4, grad=False)
    bias = torch.zeros(1, 1, 3, 3)
    bias[..., 1, :] = float("-inf")
    out = attention_ref(q, k, v, AttentionSpec(bias=bias))
    assert torch.isfinite(out).all() and out[0, 1].abs().max() == 0


def test_low_precision_path_runs_in_dtype():
    q, k, v = make_qkv(1, 5, 5, 2, 2, 8, dtype=torch.bfloat16, grad=False)
    spec = AttentionSpec(causal=True)
    lowp, ref = attention_ref(q, k, v, spec, upcast=False), attention_ref(q, k, v, spec)
    assert lowp.dtype == torch.bfloat16 and ref.dtype == torch.float32
    err = (lowp.float() - ref).abs().max()
    assert 0 < err < 5e-2


def test_dropout_is_unbiased():
    torch.manual_seed(1)
    q, k, v = (t.expand(4000, -1, -1, -1) for t in make_qkv(1, 4, 4, 1, 1, 4, grad=False))  # 4000 draws at once
    exact = attention_ref(q[:1], k[:1], v[:1], AttentionSpec())
    samples = attention_ref(q, k, v, AttentionSpec(dropout_p=0.5))
    assert not torch.equal(samples[0], samples[1])
    assert_close(samples.mean(0, keepdim=True), exact, eps=0.1, name="mean of dropout samples")
