"""EViT (attentive pruning + fusion) and LTP (learned thresholds): selection vs brute force, fused token,
sizes, prefix tokens, packed == per sample, soft/hard modes, gradients, timm wrapper."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from longseq.core.packing import pack
from longseq.core.reduction import (
    AttentiveTokenPruning,
    LearnedTokenPruning,
    apply_token_reduction,
    attention_received,
    cls_attention,
    evit_num_kept,
    ltp_regularization_loss,
    remove_token_reduction,
    unmerge,
)
from longseq.core.reduction.timm import EViTBlock

G = torch.Generator().manual_seed(0)


def _rand(*shape, dtype=torch.float64):
    return torch.randn(*shape, generator=G, dtype=dtype)


@pytest.mark.parametrize("L,P,rate", [(9, 1, 0.5), (17, 1, 0.7), (12, 3, 0.25), (6, 0, 0.9), (5, 1, 1.0)])
def test_evit_matches_brute_force(L, P, rate):
    B, D = 3, 4
    x, sizes = _rand(B, L, D), torch.rand(B, L, 1, generator=G, dtype=torch.float64) + 0.5
    scores = torch.rand(B, L, generator=G, dtype=torch.float64)
    out = AttentiveTokenPruning(rate, P)(x, attn=scores, sizes=sizes)
    n = L - P
    k = math.ceil(rate * n - 1e-9)
    for b in range(B):
        ranked = sorted(range(P, L), key=lambda j: -float(scores[b, j]))
        top, rest = sorted(ranked[:k]), ranked[k:]
        rows = [x[b, j] for j in [*range(P), *top]]
        szs = [sizes[b, j] for j in [*range(P), *top]]
        if rest:
            w = torch.stack([scores[b, j] for j in rest])
            rows.append(sum(w[i] * x[b, j] for i, j in enumerate(rest)) / w.sum())
            szs.append(sum(sizes[b, j] for j in rest))
        torch.testing.assert_close(out.x[b], torch.stack(rows))
        torch.testing.assert_close(out.sizes[b], torch.stack(szs))
        expected_map = torch.full((L,), P + k, dtype=torch.long)
        for slot, j in enumerate([*range(P), *top]):
            expected_map[j] = slot
        assert torch.equal(out.merge_map[b], expected_map)
    torch.testing.assert_close(out.sizes.sum(1), sizes.sum(1))  # sizes add up to the input's
    assert torch.equal(out.x[:, :P], x[:, :P])  # prefix untouched
    if k == n:
        assert out.x is x


def test_evit_without_fusion_and_unmerge():
    x, scores = _rand(2, 11, 4), torch.rand(2, 11, generator=G)
    out = AttentiveTokenPruning(0.4, 1, fuse=False)(x, attn=scores)
    assert out.merge_map is None and out.keep_index.shape == (2, 1 + 4)
    assert torch.equal(out.x, x.gather(1, out.keep_index[..., None].expand(-1, -1, 4)))
    fused = AttentiveTokenPruning(0.4, 1)(x, attn=scores)
    back = unmerge(fused.x, fused.merge_map)  # every pruned position shows the fused token
    kept = fused.merge_map < fused.x.shape[1] - 1
    torch.testing.assert_close(back[kept], x[kept])
    assert torch.equal(kept.sum(1), torch.tensor([5, 5]))


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("P", [0, 1, 2])
def test_evit_packed_equals_per_sample(fuse, P):
    layer = AttentiveTokenPruning(0.6, P, fuse=fuse)
    seqs = [_rand(n, 5) for n in (P, P + 1, 9, 4 + P, 13)]
    scores = [torch.rand(s.shape[0], generator=G, dtype=torch.float64) for s in seqs]
    batch = pack(seqs)
    out = layer(batch.x, attn=torch.cat(scores), packed=batch)
    starts = out.packed.cu_seqlens.tolist()
    in_starts = batch.cu_seqlens.tolist()
    for i, (s, a) in enumerate(zip(seqs, scores)):
        alone = layer(s[None], attn=a[None])
        torch.testing.assert_close(out.x[starts[i] : starts[i + 1]], alone.x[0])
        torch.testing.assert_close(out.sizes[starts[i] : starts[i + 1]], alone.sizes[0])
        if fuse:
            local = out.merge_map[in_starts[i] : in_starts[i + 1]] - starts[i]
            assert torch.equal(local, alone.merge_map[0])
    if not fuse:
        torch.testing.assert_close(out.x, batch.x[out.keep_index])
    assert out.packed.position_ids.tolist()[: starts[1]] == list(range(starts[1]))


def test_cls_attention_and_attention_received_vs_dense():
    B, L, H, D = 2, 7, 3, 4
    q, k = _rand(B, L, H, D), _rand(B, L, H, D)
    probs = (torch.einsum("bihd,bjhd->bhij", q, k) / D**0.5).softmax(-1)  # (B, H, L, L)
    torch.testing.assert_close(cls_attention(q, k), probs[:, :, 0].mean(1).float())
    torch.testing.assert_close(attention_received(q, k), probs.mean(dim=(1, 2)).float())
    sizes = torch.rand(B, L, 1, generator=G, dtype=torch.float64) + 0.5
    s = torch.einsum("bhd,blhd->bhl", q[:, 0], k) / D**0.5 + sizes[..., 0].log()[:, None]
    torch.testing.assert_close(cls_attention(q, k, sizes=sizes), s.softmax(-1).mean(1).float())
    # packed: each sequence alone
    lengths = [3, 7, 1]
    qs, ks = [_rand(n, H, D) for n in lengths], [_rand(n, H, D) for n in lengths]
    bq, bk = pack(qs), pack(ks)
    cls_p = cls_attention(bq.x, bk.x, cu_seqlens=bq.cu_seqlens)
    rec_p = attention_received(bq.x, bk.x, cu_seqlens=bq.cu_seqlens)
    cls_a = torch.cat([cls_attention(a[None], b[None])[0] for a, b in zip(qs, ks)])
    rec_a = torch.cat([attention_received(a[None], b[None])[0] for a, b in zip(qs, ks)])
    torch.testing.assert_close(cls_p, cls_a)
    torch.testing.assert_close(rec_p, rec_a)
    # padded with a mask equals the sequence alone
    padded = torch.zeros(1, 5, H, D, dtype=torch.float64)
    padded[0, :3] = qs[0]
    kpad = torch.zeros_like(padded)
    kpad[0, :3] = ks[0]
    mask = torch.tensor([[True, True, True, False, False]])
    got = attention_received(padded, kpad, mask=mask)
    torch.testing.assert_close(got[0, :3], rec_a[:3])
    assert bool((got[0, 3:] == 0).all())


def test_evit_num_kept():
    assert evit_num_kept(196, 0.7) == 138
    assert evit_num_kept(10, 0.7) == 7  # no float slack error: 0.7 * 10 = 7.000000000000001
    assert evit_num_kept(5, 1.0) == 5
    with pytest.raises(ValueError, match="keep_rate"):
        AttentiveTokenPruning(0.0)
    with pytest.raises(ValueError, match="scores must have shape"):
        AttentiveTokenPruning(0.5)(torch.randn(2, 5, 3), attn=torch.rand(2, 4))


# ------------------------------------------------------------------ LTP


def test_ltp_soft_mask_and_gradients():
    layer = LearnedTokenPruning(1, init_threshold=0.1, temperature=0.05).train()
    x = _rand(2, 6, 3).float().requires_grad_()
    s = torch.rand(2, 6, generator=G)
    out = layer(x, attn=s)
    m = torch.sigmoid((s - 0.1) / 0.05)
    m[:, 0] = 1.0
    torch.testing.assert_close(out.x, x * m[..., None])
    assert out.x.shape == x.shape and torch.equal(out.x[:, 0], x[:, 0])
    reg = layer.regularization_loss()
    torch.testing.assert_close(reg, m[:, 1:].sum(1).mean())
    (out.x.sum() + reg).backward()
    assert layer.threshold.grad is not None and layer.threshold.grad.abs() > 0
    two = torch.nn.ModuleList([layer, LearnedTokenPruning(1)])
    two[1](x.detach(), attn=s)
    torch.testing.assert_close(ltp_regularization_loss(two), (reg + two[1].regularization_loss()) / 2)


def test_ltp_hard_pruning_in_eval_padded_and_packed():
    layer = LearnedTokenPruning(1, init_threshold=0.5).eval()
    x = _rand(3, 8, 4)
    s = torch.rand(3, 8, generator=G, dtype=torch.float64)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[2, 6:] = False
    out = layer(x, attn=s, mask=mask)
    again = layer(x, attn=s, mask=mask)
    assert torch.equal(out.x, again.x) and torch.equal(out.keep_index, again.keep_index)  # deterministic
    for b in range(3):
        keep = [0] + [j for j in range(1, 8) if mask[b, j] and s[b, j] >= 0.5]
        n = len(keep)
        assert out.keep_index[b, :n].tolist() == keep and bool((out.keep_index[b, n:] == -1).all())
        assert out.mask[b].sum() == n
        torch.testing.assert_close(out.x[b, :n], x[b, keep])
        assert bool((out.sizes[b, n:] == 0).all()) and bool((out.sizes[b, :n] == 1).all())
    seqs = [x[0], x[1], x[2, :6]]
    batch = pack(seqs)
    packed = layer(batch.x, attn=torch.cat([s[0], s[1], s[2, :6]]), packed=batch)
    for b in range(3):
        a, e = packed.packed.cu_seqlens[b : b + 2].tolist()
        torch.testing.assert_close(packed.x[a:e], out.x[b, : out.mask[b].sum()])
        alone = layer(seqs[b][None], attn=s[b, : seqs[b].shape[0]][None])
        torch.testing.assert_close(alone.x[0], packed.x[a:e])


def test_ltp_packed_soft_equals_padded():
    layer = LearnedTokenPruning(1, init_threshold=0.3, temperature=0.1).train()
    seqs = [_rand(n, 3) for n in (4, 1, 6)]
    scores = [torch.rand(s.shape[0], generator=G, dtype=torch.float64) for s in seqs]
    batch = pack(seqs)
    out = layer(batch.x, attn=torch.cat(scores), packed=batch)
    reg = layer.regularization_loss()
    alone = [layer(s[None], attn=a[None]) for s, a in zip(seqs, scores)]
    torch.testing.assert_close(out.x, torch.cat([o.x[0] for o in alone]))
    regs = []
    for s, a in zip(seqs, scores):
        layer(s[None], attn=a[None])
        regs.append(layer.regularization_loss())
    torch.testing.assert_close(reg, torch.stack(regs).mean())


# ------------------------------------------------------------------ timm wrapper

IMG = 64


def _vit(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("depth", 4)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=IMG, num_classes=10, **kwargs).eval()


def _images(B=2):
    return torch.randn(B, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"reg_tokens": 2, "init_values": 0.1}])
def test_evit_keep_rate_one_reproduces_timm(fused, kwargs):
    model = _vit(**kwargs)
    for blk in model.blocks:
        blk.attn.fused_attn = fused
    x = _images()
    with torch.no_grad():
        ref = model(x)
        apply_token_reduction(model, "evit", keep_rate=1.0, layers=(0, 2))
        assert isinstance(model.blocks[2], EViTBlock)
        out = model(x)
    assert torch.equal(out, ref)


def test_evit_token_counts_per_layer_and_state():
    model = _vit(depth=6)
    x = _images(3)
    counts = []
    with torch.no_grad():
        apply_token_reduction(model, "evit", keep_rate=0.7, layers=(1, 3))
        hooks = [b.register_forward_hook(lambda m, i, o: counts.append(o.shape[1])) for b in model.blocks]
        feat = model.forward_features(x)
        logits = model.forward_head(feat)
    for h in hooks:
        h.remove()
    # 16 patches + CLS: block 1 keeps ceil(0.7 * 16) = 12 + fused = 13; block 3 keeps ceil(0.7 * 13) = 10 + fused
    assert counts == [17, 1 + 13, 1 + 13, 1 + 11, 1 + 11, 1 + 11]
    assert feat.shape == (3, 12, model.embed_dim) and logits.shape == (3, 10)
    state = model._tome_state
    assert state.merged and state.merge_map.shape == (3, 17)
    torch.testing.assert_close(state.sizes.sum(1), torch.full((3, 1), 17.0))
    fresh = torch.zeros(3, 12).scatter_add(1, state.merge_map, torch.ones(3, 17))
    torch.testing.assert_close(fresh[..., None], state.sizes)


def test_evit_block_matches_written_out_reference():
    """The pruning block equals timm's attention + EViT selection on the explicit CLS attention row."""
    model = _vit(depth=1)
    blk = model.blocks[0]
    x = torch.randn(2, 17, model.embed_dim)
    with torch.no_grad():
        attn, h = blk.attn, blk.norm1(x)
        qkv = attn.qkv(h).reshape(2, 17, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, _ = qkv.unbind(0)
        cls = ((q @ k.transpose(-1, -2)) * attn.scale).softmax(-1)[:, :, 0].mean(1)  # (B, L)
        y = x + attn(h)
        red = AttentiveTokenPruning(0.5, 1)(y, attn=cls)
        ref = red.x + blk.mlp(blk.norm2(red.x))
        apply_token_reduction(model, "evit", keep_rate=0.5, layers=(0,))
        out = model.blocks[0](x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_evit_switch_methods_and_errors():
    model = _vit()
    x = _images()
    with torch.no_grad():
        ref = model(x)
        apply_token_reduction(model, "evit", keep_rate=0.5)
        apply_token_reduction(model, "tome", r=0)  # re-patching switches the method
        assert torch.equal(model(x), ref)
        remove_token_reduction(model)
        assert torch.equal(model(x), ref)
    with pytest.raises(ValueError, match="keep_rate"):
        apply_token_reduction(model, "evit", keep_rate=1.5)
    with pytest.raises(ValueError, match="layers"):
        apply_token_reduction(model, "evit", layers=(7,))
    with pytest.raises(ValueError, match="class token"):
        apply_token_reduction(_vit(class_token=False, global_pool="avg"), "evit")
    train = _vit(drop_path_rate=0.1).train()
    apply_token_reduction(train, "evit", keep_rate=0.5)
    train(_images()).sum().backward()
    assert all(p.grad is not None for p in train.blocks.parameters())
