"""Backend selection (auto, names, env override, fallback warnings), input validation, the support
matrix and its copy in docs/attention.md."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from attn_testing import make_qkv, packed_qkv

from longseq.core.attention import (
    ENV_VAR,
    AttentionBackend,
    AttentionSpec,
    attention,
    list_backends,
    register_backend,
    reset_fallback_warnings,
    select_backend,
)
from longseq.core.attention import functional as F_attn
from longseq.core.attention.layer import Attention
from longseq.core.attention.support import (
    DOCS_BEGIN,
    DOCS_END,
    format_support_matrix,
    markdown_support_matrix,
    support_matrix,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "attention.md"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    reset_fallback_warnings()


def test_auto_on_cpu_prefers_sdpa_and_warns_once_naming_the_feature():
    q, k, v = make_qkv(1, 4, 4, 2, 2, 4)
    assert select_backend(AttentionSpec(causal=True), q, k).name == "sdpa"
    with pytest.warns(UserWarning, match="sdpa does not support softcap; using backend 'math'"):
        assert select_backend(AttentionSpec(softcap=2.0), q, k).name == "math"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same fallback again: silent
        assert select_backend(AttentionSpec(softcap=3.0), q, k).name == "math"
    with pytest.warns(UserWarning, match="score_mod"):  # a different reason warns again
        attention(q, k, v, score_mod=lambda s, *_: s)


def test_named_backend_falls_back_or_raises_when_strict():
    q, k, v = make_qkv(1, 4, 4, 2, 2, 4)  # requires grad: flex has no CPU backward
    with pytest.warns(UserWarning, match="flex does not support backward on CPU.*using backend 'sdpa'"):
        out = attention(q, k, v, causal=True, backend="flex")
    assert_close_to_math = attention(q, k, v, causal=True, backend="math")
    torch.testing.assert_close(out, assert_close_to_math)
    with pytest.raises(ValueError, match="'flex' cannot run this call: flex does not support backward"):
        attention(q, k, v, backend="flex", strict=True)


def test_env_override(monkeypatch):
    q, k, v = make_qkv(1, 4, 4, 2, 2, 4)
    monkeypatch.setenv(ENV_VAR, "math")
    assert select_backend(AttentionSpec(), q, k, "sdpa").name == "math"
    assert Attention(8, 2, backend="sdpa").backend == "math"
    monkeypatch.setenv(ENV_VAR, "cudnn")
    with pytest.raises(
        ValueError, match=r"unknown attention backend 'cudnn'; valid: auto, math, sdpa, flex, flash \(from \$LONGSEQ"
    ):
        attention(q, k, v)


def test_unknown_backend_lists_valid_names():
    q, k, v = make_qkv(1, 4, 4, 2, 2, 4)
    with pytest.raises(ValueError, match="unknown attention backend 'fast'; valid: auto, math, sdpa, flex, flash"):
        attention(q, k, v, backend="fast")


def test_auto_order_and_efficiency(monkeypatch):
    """The CUDA order, exercised on CPU: flash (under the Triton interpreter), else sdpa, else flex."""
    q, k, v = make_qkv(1, 4, 4, 2, 2, 4, grad=False)
    monkeypatch.setitem(F_attn.AUTO_ORDER, "cpu", ("flash", "sdpa", "flex", "math"))
    flash_ok = F_attn.get_backend("flash").unavailable(q.device) is None
    if flash_ok:
        assert select_backend(AttentionSpec(window=(1, 1)), q, k).name == "flash"
    with pytest.warns(UserWarning, match="bias"):
        assert select_backend(AttentionSpec(bias=torch.zeros(1, 1, 4, 4)), q, k).name == "sdpa"
    with pytest.warns(UserWarning, match="mask_mod"):  # sdpa would need a dense mask: flex wins
        assert select_backend(AttentionSpec(mask_mod=lambda b, h, i, j: j <= i), q, k).name == "flex"


def test_input_validation():
    q, k, v = make_qkv(2, 4, 5, 4, 2, 8, grad=False)
    bad = [
        (lambda: attention(q[0], k[0], v[0]), ValueError, r"padded \(B, L, H, D\)"),
        (lambda: attention(q, k.double(), v), TypeError, "share a dtype"),
        (lambda: attention(q, k[:, :, :1].expand(2, 5, 3, 8), v[:, :, :1].expand(2, 5, 3, 8)), ValueError, "divide"),
        (lambda: attention(q, k, v[:, :4]), ValueError, "v must have k's shape"),
        (lambda: attention(q, k[..., :4], v[..., :4]), ValueError, "head dim"),
        (lambda: attention(q, k, v, bias=torch.zeros(2, 4, 3, 5)), ValueError, "broadcast to"),
        (lambda: attention(q, k, v, alibi_slopes=torch.ones(3)), ValueError, "alibi_slopes must be fp32"),
        (lambda: attention(q, k, v, alibi_slopes=torch.ones(4, dtype=torch.float64)), ValueError, "fp32"),
        (lambda: attention(q, k, v, kv_seqlens=torch.ones(3, dtype=torch.int32)), ValueError, "kv_seqlens"),
        (lambda: attention(q, k, v, window=(1, 2, 3)), ValueError, "window must be"),
        (lambda: attention(q, k, v, softcap=-1.0), ValueError, "softcap"),
        (lambda: attention(q, k, v, dropout_p=1.0), ValueError, "dropout_p"),
        (lambda: attention(q.int(), k, v), TypeError, "floating"),
    ]
    for call, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            call()
    cu = torch.tensor([0, 2, 4], dtype=torch.int32)
    qp, kp = q[0], k[0, :4]
    with pytest.raises(ValueError, match="give both"):
        attention(qp, kp, kp, cu_seqlens_q=cu)
    with pytest.raises(ValueError, match="int32"):
        attention(qp, kp, kp, cu_seqlens_q=cu.long(), cu_seqlens_k=cu, max_seqlen_q=2, max_seqlen_k=2)
    with pytest.raises(ValueError, match="must end at total tokens 4"):
        attention(
            qp,
            kp,
            kp,
            cu_seqlens_q=cu,
            cu_seqlens_k=torch.tensor([0, 2, 3], dtype=torch.int32),
            max_seqlen_q=2,
            max_seqlen_k=2,
        )
    with pytest.raises(ValueError, match="dense bias needs the padded"):
        AttentionSpec(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=2, max_seqlen_k=2, bias=torch.zeros(1))


def test_register_backend_rejects_clashes_and_unknown_features():
    class Fake(AttentionBackend):
        name = "math"
        features = frozenset()

        def forward(self, q, k, v, spec):
            return q

    with pytest.raises(ValueError, match="already registered"):
        register_backend(Fake)
    Fake.name, Fake.features = "fake", frozenset({"telepathy"})
    with pytest.raises(ValueError, match="unknown features"):
        register_backend(Fake)
    assert "fake" not in list_backends()


def test_support_matrix_on_cpu():
    matrix = support_matrix("cpu")
    assert list(matrix) == ["math", "sdpa", "flex", "flash"]
    assert all(v is True for v in matrix["math"].values())
    assert "softcap" in matrix["sdpa"]["softcap"] and matrix["sdpa"]["window"] is True
    assert "backward on CPU" in matrix["flex"]["backward"] and matrix["flex"]["mask_mod"] is True
    assert matrix["flash"]["bias"] is not True
    text = format_support_matrix(matrix)
    assert text.splitlines()[1].split()[:3] == ["math", "yes", "yes"]
    assert "sdpa: sdpa does not support softcap" in text


def test_docs_show_the_current_matrix():
    text = DOCS.read_text()
    block = text[text.index(DOCS_BEGIN) + len(DOCS_BEGIN) : text.index(DOCS_END)].strip()
    assert block == markdown_support_matrix(), (
        "run: python -m longseq.core.attention.support --write-docs docs/attention.md"
    )


def test_cu_seqlens_shorthand():
    q, k, v, varlen = packed_qkv([3, 4], [3, 4], 2, 1, 4)
    full = attention(q, k, v, causal=True, backend="math", **varlen)
    short = attention(q, k, v, causal=True, backend="math", cu_seqlens=varlen["cu_seqlens_q"], max_seqlen=4)
    assert torch.equal(full, short)
    with pytest.raises(ValueError, match="not both"):
        attention(q, k, v, cu_seqlens=varlen["cu_seqlens_q"], max_seqlen=4, cu_seqlens_q=varlen["cu_seqlens_q"])
