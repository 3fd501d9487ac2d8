"""ToMe patched into timm ViTs: exact at r = 0, token counts, sizes, merge maps, pooling, state_dict, errors."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.models.vision_transformer import Attention, Block

from longseq.core.reduction import TokenMerging, unmerge
from longseq.core.reduction.timm import (
    ToMeAttention,
    ToMeBlock,
    apply_token_reduction,
    remove_token_reduction,
)

IMG = 64  # 64 px / 16 px patches = 4 x 4 = 16 patch tokens


def _vit(name: str = "vit_tiny_patch16_224", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs.setdefault("num_classes", 10)
    return timm.create_model(name, pretrained=False, img_size=IMG, **kwargs).eval()


def _images(B: int = 2) -> torch.Tensor:
    return torch.randn(B, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vit_tiny_patch16_224", {}),
        ("deit_tiny_distilled_patch16_224", {}),
        ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}),
        ("vit_tiny_patch16_224", {"init_values": 0.1, "reg_tokens": 2}),
    ],
)
@pytest.mark.parametrize("fused", [True, False])
def test_r0_reproduces_unpatched_exactly(name, kwargs, fused):
    model = _vit(name, **kwargs)
    for blk in model.blocks:
        blk.attn.fused_attn = fused
    x = _images()
    with torch.no_grad():
        ref_feat = model.forward_features(x)
        ref = model(x)
        apply_token_reduction(model, r=0)
        feat = model.forward_features(x)
        out = model(x)
    assert torch.equal(feat, ref_feat)
    assert torch.equal(out, ref)
    state = model._tome_state
    B, L = feat.shape[:2]
    assert torch.equal(state.merge_map, torch.arange(L).expand(B, L))
    assert torch.equal(state.sizes, torch.ones(B, L, 1))


@pytest.mark.parametrize("fused", [True, False])
def test_tome_attention_without_sizes_equals_timm_attention(fused):
    attn = _vit().blocks[0].attn
    attn.fused_attn = fused
    x = torch.randn(2, 7, attn.qkv.in_features)
    ref = attn(x)
    attn.__class__ = ToMeAttention
    out, metric = attn(x)
    assert torch.equal(out, ref)
    assert metric.shape == (2, 7, attn.head_dim)
    # all-one sizes add log(1) = 0 to the logits
    out_ones, _ = attn(x, sizes=torch.ones(2, 7, 1))
    torch.testing.assert_close(out_ones, ref)


@pytest.mark.parametrize("fused", [True, False])
def test_prop_attn_matches_duplicated_keys(fused):
    """A key of size s attends like s copies of that key: the definition of proportional attention."""
    attn = _vit().blocks[0].attn
    attn.fused_attn = fused
    attn.__class__ = ToMeAttention
    x = torch.randn(1, 5, attn.qkv.in_features)
    sizes = torch.tensor([1.0, 3.0, 1.0, 2.0, 1.0]).view(1, 5, 1)
    out, _ = attn(x, sizes=sizes)
    # duplicate token 1 twice more and token 3 once more; the query rows of the originals are unchanged
    dup = x[:, [0, 1, 2, 3, 4, 1, 1, 3]]
    ref, _ = attn(dup)
    torch.testing.assert_close(out, ref[:, :5], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prop_attn", [True, False])
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_r_positive_reduces_tokens(name, prop_attn):
    model = _vit(name, depth=4)
    x = _images(3)
    with torch.no_grad():
        L = model.forward_features(x).shape[1]
        apply_token_reduction(model, r=3, prop_attn=prop_attn)
        feat = model.forward_features(x)
        logits = model.forward_head(feat)
    P = model.num_prefix_tokens
    expected = L
    for _ in model.blocks:
        expected -= min(3, (expected - P) // 2)
    assert feat.shape == (3, expected, model.embed_dim)
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()
    state = model._tome_state
    assert state.merged
    assert state.sizes.shape == (3, expected, 1)
    torch.testing.assert_close(state.sizes.sum(dim=1), torch.full((3, 1), float(L)))
    assert torch.equal(state.sizes[:, :P], torch.ones(3, P, 1))  # prefix tokens never merge
    assert state.merge_map.shape == (3, L) and state.merge_map.dtype == torch.int64
    assert int(state.merge_map.min()) == 0 and int(state.merge_map.max()) == expected - 1
    # every final token's size counts the input tokens the composed map sends to it
    counts = torch.zeros(3, expected).scatter_add(1, state.merge_map, torch.ones(3, L))
    torch.testing.assert_close(counts.unsqueeze(-1), state.sizes)
    assert unmerge(feat, state.merge_map).shape == (3, L, model.embed_dim)


def _reference_features(model, images, r, prop_attn):
    """ToMe over the unpatched model's modules, written out: math attention, TokenMerging between attn and MLP."""
    x = model.norm_pre(model._pos_embed(model.patch_embed(images)))
    sizes = None
    for blk in model.blocks:
        attn, (B, L, C) = blk.attn, x.shape
        qkv = attn.qkv(blk.norm1(x)).reshape(B, L, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        logits = q @ k.transpose(-1, -2) * attn.scale
        if prop_attn and sizes is not None:
            logits = logits + sizes.log()[:, None, :, 0][:, :, None, :]
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, L, C)
        x = x + blk.ls1(attn.proj(out))
        red = TokenMerging(r, model.num_prefix_tokens)(x, sizes=sizes, metric=k.mean(1))
        x, sizes = red.x, red.sizes
        x = x + blk.ls2(blk.mlp(blk.norm2(x)))
    return model.norm(x), sizes


@pytest.mark.parametrize("prop_attn", [True, False])
def test_matches_written_out_reference(prop_attn):
    model = _vit(depth=3, init_values=0.5)
    x = _images()
    with torch.no_grad():
        ref, ref_sizes = _reference_features(model, x, 3, prop_attn)
        feat = apply_token_reduction(model, r=3, prop_attn=prop_attn).forward_features(x)
    assert feat.shape == ref.shape == (2, 17 - 9, model.embed_dim)
    torch.testing.assert_close(feat, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model._tome_state.sizes, ref_sizes)


def test_r_clipped_keeps_prefix_and_half():
    model = _vit(depth=3)
    with torch.no_grad():
        feat = apply_token_reduction(model, r=1000).forward_features(_images(1))
    # 16 patches + CLS: 16 -> 8 -> 4 -> 2 patch tokens
    assert feat.shape[1] == 1 + 2


def test_avg_pool_is_size_weighted():
    model = _vit(class_token=False, global_pool="avg", depth=2)
    x = _images()
    with torch.no_grad():
        apply_token_reduction(model, r=4)
        feat = model.forward_features(x)
        pooled = model.forward_head(feat, pre_logits=True)
        logits = model(x)
    sizes = model._tome_state.sizes
    assert model.num_prefix_tokens == 0 and sizes.shape[1] == 16 - 8
    expected = model.fc_norm((feat * sizes).sum(1) / sizes.sum(1))
    torch.testing.assert_close(pooled, expected)
    # the weighted mean of the merged tokens equals the plain mean over the unmerged positions
    torch.testing.assert_close((feat * sizes).sum(1) / sizes.sum(1), unmerge(feat, model._tome_state.merge_map).mean(1))
    assert logits.shape == (2, 10)


def test_state_dict_unchanged_and_loadable_both_ways():
    ref = _vit(depth=2, init_values=0.1)
    sd = ref.state_dict()
    patched = apply_token_reduction(copy.deepcopy(ref), r=2)
    psd = patched.state_dict()
    assert list(psd) == list(sd)
    assert all(torch.equal(psd[k], sd[k]) for k in sd)
    # unpatched weights -> patched model, and patched weights -> unpatched model
    other = apply_token_reduction(_vit(depth=2, init_values=0.1), r=2)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(sd)
    fresh = _vit(depth=2, init_values=0.1)
    fresh.load_state_dict(apply_token_reduction(copy.deepcopy(ref), r=2).state_dict())
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(other(x), patched(x), rtol=0, atol=0)
        assert torch.equal(fresh(x), ref(x))


def test_remove_and_reapply():
    model = _vit(depth=2)
    x = _images()
    with torch.no_grad():
        ref = model(x)
        apply_token_reduction(model, r=4)
        assert isinstance(model.blocks[0], ToMeBlock)
        reduced = model(x)
        apply_token_reduction(model, r=0)  # re-apply updates r
        assert torch.equal(model(x), ref)
        remove_token_reduction(model)
    assert type(model.blocks[0]) is Block and type(model.blocks[0].attn) is Attention
    assert not hasattr(model, "_tome_state") and type(model).__name__ == "VisionTransformer"
    assert not torch.equal(reduced, ref)
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    with pytest.raises(ValueError, match="not patched"):
        remove_token_reduction(model)


def test_forward_intermediates_and_grad_checkpointing():
    model = _vit(depth=3)
    x = _images()
    with torch.no_grad():
        ref = model.forward_intermediates(x, output_fmt="NLC")
        apply_token_reduction(model, r=0)
        out = model.forward_intermediates(x, output_fmt="NLC")
        assert all(torch.equal(a, b) for a, b in zip(out[1], ref[1]))
        apply_token_reduction(model, r=2)
        final, inter = model.forward_intermediates(x, output_fmt="NLC", norm=True)
        assert [t.shape[1] for t in inter] == [14, 12, 10]  # prefix tokens stripped: 16 - 2, - 2, - 2
        assert model._tome_state.merge_map.shape == (2, 17)  # a fresh state, not composed onto an old one
        with pytest.raises(NotImplementedError, match="NLC"):
            model.forward_intermediates(x)
    model.set_grad_checkpointing(True)
    model.train()
    with pytest.raises(NotImplementedError, match="grad_checkpointing"):
        model(x)


def test_training_backward_with_drop_path():
    model = _vit(depth=2, drop_path_rate=0.1, init_values=0.1).train()
    apply_token_reduction(model, r=3)
    model(_images()).sum().backward()
    assert all(p.grad is not None for p in model.blocks.parameters())


def test_bad_inputs():
    model = _vit(depth=1)
    with pytest.raises(NotImplementedError, match="'tome'"):
        apply_token_reduction(model, method="dynamicvit")
    with pytest.raises(ValueError, match="r must be"):
        apply_token_reduction(model, r=-1)
    with pytest.raises(ValueError, match="r must be"):
        apply_token_reduction(model, r=1.5)
    with pytest.raises(TypeError, match="VisionTransformer"):
        apply_token_reduction(torch.nn.Linear(2, 2))
    parallel = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=IMG, depth=1, class_token=True)
    parallel.blocks[0].__class__ = type("OtherBlock", (Block,), {})
    with pytest.raises(TypeError, match=r"blocks\[0\].*OtherBlock"):
        apply_token_reduction(parallel)
    apply_token_reduction(model, r=2)
    with pytest.raises(ValueError, match="attn_mask"):
        model.forward_features(_images(), is_causal=True)
