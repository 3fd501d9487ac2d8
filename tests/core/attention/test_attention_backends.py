"""Every backend against ``math`` on every feature it claims: outputs and gradients in fp32 on CPU
(``flex`` forward only: no CPU backward; ``flash`` through the Triton interpreter, a few tiny cases)."""

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

SHAPES = [(2, 17, 17, 4, 2, 16), (1, 1, 13, 2, 1, 8), (2, 9, 5, 2, 2, 8)]  # (B, Lq, Lk, H, H_kv, D)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("feature", [f for f in PADDED if claims("sdpa", f)])
def test_sdpa_padded(feature, shape):
    B, Lq, Lk, H, H_kv, D = shape
    kw, extra = padded_case(feature, B, Lq, Lk, H)
    check_against_math(get_backend("sdpa"), *make_qkv(B, Lq, Lk, H, H_kv, D), AttentionSpec(**kw), extra=extra)


@pytest.mark.parametrize("feature", [f for f in PACKED if claims("sdpa", f)])
def test_sdpa_packed(feature):
    q, k, v, varlen = packed_qkv(*LENS, 4, 2, 8)
    spec = AttentionSpec(**varlen, **packed_case(feature, len(LENS[0]), 4))
    check_against_math(get_backend("sdpa"), q, k, v, spec)


def test_sdpa_declines_what_it_cannot_express():
    q, k, v = make_qkv(1, 3, 3, 1, 1, 4)
    sdpa = get_backend("sdpa")
    assert "softcap" in sdpa.supports(AttentionSpec(softcap=1.0), q, k)
    assert "score_mod" in sdpa.supports(AttentionSpec(score_mod=lambda s, *_: s), q, k)
    assert sdpa.efficient(AttentionSpec(causal=True), q, k)
    assert not sdpa.efficient(AttentionSpec(window=(1, 1)), q, k)


def test_claims_cover_the_cases():
    """The grids above exercise every feature a backend claims (so a new claim needs a new case)."""
    exercised = {"causal", "window", "alibi", "bias", "kv_seqlens", "mask_mod", "softcap", "score_mod", "varlen", "gqa"}
    for name in ("sdpa", "flex", "flash"):
        untested = get_backend(name).features - exercised - {"backward", "dropout"}
        assert not untested, f"{name} claims {untested} without a comparison case"


@pytest.mark.parametrize("feature", [f for f in PADDED if claims("flex", f) and f not in ("plain", "causal", "window")])
def test_flex_padded_forward(feature):
    B, Lq, Lk, H, H_kv, D = 2, 9, 13, 4, 2, 8
    kw, extra = padded_case(feature, B, Lq, Lk, H)
    check_against_math(get_backend("flex"), *make_qkv(B, Lq, Lk, H, H_kv, D), AttentionSpec(**kw), grads=False)


@pytest.mark.parametrize("feature", [f for f in PACKED if claims("flex", f) and f not in ("varlen", "varlen_causal")])
def test_flex_packed_forward(feature):
    q, k, v, varlen = packed_qkv(*LENS, 4, 2, 8)
    spec = AttentionSpec(**varlen, **packed_case(feature, len(LENS[0]), 4))
    check_against_math(get_backend("flex"), q, k, v, spec, grads=False)


def test_flex_declines_cpu_backward_and_dropout():
    q, k, v = make_qkv(1, 3, 3, 1, 1, 4)
    flex = get_backend("flex")
    assert "backward on CPU" in flex.supports(AttentionSpec(), q, k)
    with torch.no_grad():
        assert flex.supports(AttentionSpec(), q, k) is None
        assert "dropout" in flex.supports(AttentionSpec(dropout_p=0.1), q, k)


def _flash_or_skip():
    flash = get_backend("flash")
    q = torch.zeros(1, 1, 1, 4)
    reason = flash.unavailable(q.device)
    if reason is not None:
        pytest.skip(reason)
    return flash


@pytest.mark.parametrize(
    "feature, shape",
    [("causal_window", (2, 9, 13, 4, 2, 8)), ("alibi", (1, 7, 7, 2, 1, 16)), ("softcap", (1, 5, 9, 2, 2, 8))],
)
def test_flash_interpreted(feature, shape):
    flash = _flash_or_skip()
    B, Lq, Lk, H, H_kv, D = shape
    kw, extra = padded_case(feature, B, Lq, Lk, H)
    check_against_math(flash, *make_qkv(B, Lq, Lk, H, H_kv, D), AttentionSpec(**kw), extra=extra)


def test_flash_interpreted_kv_cache():
    flash = _flash_or_skip()
    kw, _ = padded_case("kv_seqlens", 2, 3, 11, 4)
    check_against_math(flash, *make_qkv(2, 3, 11, 4, 2, 8), AttentionSpec(**kw), grads=False)
    with torch.enable_grad():
        q, k, _ = make_qkv(2, 3, 11, 4, 2, 8)
        assert "backward with kv_seqlens" in flash.supports(AttentionSpec(**kw), q, k)


def test_flash_interpreted_packed():
    flash = _flash_or_skip()
    q, k, v, varlen = packed_qkv(*LENS, 4, 2, 8)
    check_against_math(flash, q, k, v, AttentionSpec(**varlen, causal=True, window=(2, 0)))


def test_flash_declines_masks_and_biases():
    flash = get_backend("flash")
    q, k, v = make_qkv(1, 3, 3, 1, 1, 4)
    for kw, feature in (
        (dict(bias=torch.zeros(1, 1, 3, 3)), "bias"),
        (dict(mask_mod=lambda *a: a[3] >= 0), "mask_mod"),
    ):
        reason = flash.supports(AttentionSpec(**kw), q, k)
        assert reason is not None and (feature in reason or "flash" in reason)


def test_sdpa_dropout_is_unbiased():
    torch.manual_seed(3)
    q, k, v = (t.expand(4000, -1, -1, -1) for t in make_qkv(1, 4, 4, 2, 1, 4, grad=False))  # 4000 draws at once
    sdpa = get_backend("sdpa")
    exact = sdpa.forward(q[:1], k[:1], v[:1], AttentionSpec(causal=True))
    spec = AttentionSpec(causal=True, dropout_p=0.5)
    assert sdpa.supports(spec, q, k) is None
    samples = sdpa.forward(q, k, v, spec)
    assert not torch.equal(samples[0], samples[1])
    torch.testing.assert_close(samples.mean(0, keepdim=True), exact, atol=0.1, rtol=0)
