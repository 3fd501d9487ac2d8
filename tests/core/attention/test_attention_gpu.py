"""GPU checks (``make gpu-test``): every backend against ``math`` in bf16 on every feature it claims,
outputs and gradients under the tolerance rule; flex with every mask pattern, forward and backward;
KV-cache decoding and ``torch.compile`` on CUDA."""

from __future__ import annotations

import pytest
import torch
from attn_testing import (
    LENS,
    PACKED,
    PADDED,
    check_against_math,
    claims,
    make_qkv,
    packed_case,
    packed_qkv,
    padded_case,
)

from longseq.core.attention import AttentionSpec, get_backend
from longseq.core.attention import masks as M
from longseq.core.attention.layer import Attention
from longseq.kernels.testing import assert_close

pytestmark = pytest.mark.gpu

DEV = "cuda"
BF16 = torch.bfloat16
SHAPES = [(2, 131, 131, 8, 2, 64), (1, 67, 200, 4, 1, 64), (3, 1, 257, 4, 4, 128)]  # (B, Lq, Lk, H, H_kv, D)
BACKENDS = ["sdpa", "flex", "flash"]


def _fresh_compile() -> None:
    torch._dynamo.reset()  # each case brings new mod functions: keep flex under the recompile limit


def _available(name: str) -> None:
    reason = get_backend(name).unavailable(torch.device(DEV))
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend, feature", [(b, f) for b in BACKENDS for f in PADDED if claims(b, f)])
def test_padded_bf16(backend, feature, shape):
    _available(backend)
    _fresh_compile()
    B, Lq, Lk, H, H_kv, D = shape
    kw, extra = padded_case(feature, B, Lq, Lk, H, device=DEV)
    q, k, v = make_qkv(B, Lq, Lk, H, H_kv, D, dtype=BF16, device=DEV)
    grads = not (backend == "flash" and feature == "kv_seqlens")  # flash_attn_with_kvcache is forward-only
    check_against_math(get_backend(backend), q, k, v, AttentionSpec(**kw), extra=extra, grads=grads)


@pytest.mark.parametrize("backend, feature", [(b, f) for b in BACKENDS for f in PACKED if claims(b, f)])
def test_packed_bf16(backend, feature):
    _available(backend)
    _fresh_compile()
    lens_q, lens_k = [n * 37 for n in LENS[0]], [n * 37 for n in LENS[1]]
    q, k, v, varlen = packed_qkv(lens_q, lens_k, 8, 2, 64, dtype=BF16, device=DEV)
    kw = packed_case(feature, len(lens_q), 8, device=DEV)
    check_against_math(get_backend(backend), q, k, v, AttentionSpec(**varlen, **kw))


PATTERNS = {
    "longformer": lambda L: M.longformer_mask(16, M.global_tokens(L, [0, 5], device=DEV)),
    "bigbird": lambda L: M.bigbird_mask(L, block_size=32, num_random_blocks=2, seed=0, device=DEV),
    "dilated": lambda L: M.dilated_mask([(64, 4), (16, 1)]),
    "prefix_lm": lambda L: M.prefix_lm_mask(torch.tensor([40, 3], device=DEV)),
    "sliding": lambda L: M.sliding_window_mask(31, 0),
}


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_flex_mask_patterns_fwd_bwd(pattern):
    _fresh_compile()
    L = 300
    q, k, v = make_qkv(2, L, L, 4, 2, 64, dtype=BF16, device=DEV)
    causal = pattern in ("dilated", "sliding")
    check_against_math(get_backend("flex"), q, k, v, AttentionSpec(mask_mod=PATTERNS[pattern](L), causal=causal))


@pytest.mark.parametrize("backend", ["sdpa", "flash", "auto"])
def test_decoding_matches_full_forward_bf16(backend):
    if backend != "auto":
        _available(backend)
    torch.manual_seed(0)
    layer = Attention(256, 4, num_kv_heads=2, causal=True, window=(64, 0), backend=backend).to(DEV).eval()
    ref_layer = Attention(256, 4, num_kv_heads=2, causal=True, window=(64, 0), backend="math").to(DEV).eval()
    ref_layer.load_state_dict(layer.state_dict())
    x = torch.randn(2, 150, 256, device=DEV)
    with torch.no_grad():
        ref = ref_layer(x)  # fp32
        lowp = ref_layer.to(BF16)(x.to(BF16))
        layer = layer.to(BF16)
        cache = layer.allocate_cache(2, 160, BF16, torch.device(DEV))
        outs = [layer(x[:, :100].to(BF16), cache=cache)]
        outs += [layer.step(x[:, t].to(BF16), cache)[0][:, None] for t in range(100, 150)]
    assert_close(torch.cat(outs, 1), ref, lowp, name=f"{backend} decode")


def test_compile_flex_fwd_bwd_on_cuda():
    _fresh_compile()
    layer = Attention(128, 4, causal=True, positions="t5", backend="flex", strict_backend=True).to(DEV)
    torch.nn.init.normal_(layer.positions.table)
    x = torch.randn(2, 200, 128, device=DEV, requires_grad=True)
    eager = layer(x)
    g_eager = torch.autograd.grad(eager.sum(), [x, layer.positions.table])
    out = torch.compile(layer, fullgraph=True)(x)
    g = torch.autograd.grad(out.sum(), [x, layer.positions.table])
    assert_close(out, eager, name="compiled flex output")
    for a, b in zip(g, g_eager):
        assert_close(a, b, name="compiled flex grad")
