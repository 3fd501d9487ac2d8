"""core.pooling: sequence poolings vs hand computations (masks, sizes), packed == padded == alone,
token pooling (Funnel, HVT stages), dynamic token pooling (boundaries, segment means, upsampling, gradients)."""

from __future__ import annotations

import pytest
import torch

from longseq.core.packing import pack, packed_to_pad
from longseq.core.pooling import (
    POOL_KINDS,
    DynamicTokenPooling,
    FunnelQueryPool,
    HierarchicalStages,
    create_pooling,
    list_poolings,
    pool_sequences,
    token_pool,
    upsample,
)

G = torch.Generator().manual_seed(0)


def _rand(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.float64)


def test_registry():
    assert list_poolings() == sorted(POOL_KINDS)
    assert create_pooling("attention", dim=8, num_heads=2).attn.num_heads == 2
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        create_pooling("median")
    with pytest.raises(ValueError, match="needs dim"):
        create_pooling("attention")


def test_pooling_values_by_hand():
    x = torch.tensor([[[1.0, -1.0], [2.0, 5.0], [4.0, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, True, False]])
    sizes = torch.tensor([[[1.0], [3.0], [1.0], [1.0]]])
    assert create_pooling("max")(x, mask=mask).tolist() == [[4.0, 5.0]]
    assert pool_sequences(x, "max", mask=mask).tolist() == [[4.0, 5.0]]
    assert create_pooling("max", num_prefix_tokens=2)(x, mask=mask).tolist() == [[4.0, 0.0]]
    mean = create_pooling("mean")(x, mask=mask, sizes=sizes)
    torch.testing.assert_close(mean, torch.tensor([[(1 + 6 + 4) / 5, (-1 + 15) / 5]]))
    assert create_pooling("cls")(x, mask=mask).tolist() == [[1.0, -1.0]]
    assert create_pooling("last")(x, mask=mask).tolist() == [[4.0, 0.0]]
    # attention pooling with sizes equals attention pooling over duplicated tokens
    pool = create_pooling("attention", dim=2).double()
    dup = x[:, [0, 1, 1, 1, 2]].double()
    torch.testing.assert_close(pool(x.double(), mask=mask, sizes=sizes.double()), pool(dup))
    # no content token: zeros for max
    assert create_pooling("max", num_prefix_tokens=3)(x, mask=mask).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("kind", POOL_KINDS)
@pytest.mark.parametrize("P", [0, 1])
def test_pooling_packed_equals_padded_and_alone(kind, P):
    extra = {"num_heads": 2} if kind == "attention" else {}
    pool = create_pooling(kind, dim=6, num_prefix_tokens=P, **extra).double()
    seqs = [_rand(n + P, 6) for n in (4, 1, 5)]
    sizes = [torch.rand(s.shape[0], 1, generator=G, dtype=torch.float64) + 0.5 for s in seqs]
    batch = pack(seqs)
    xp = batch.x.clone().requires_grad_()
    out_p = pool(xp, packed=batch, sizes=torch.cat(sizes))
    padded, mask = packed_to_pad(batch, max_len=8)
    sz, _ = packed_to_pad(torch.cat(sizes), batch.cu_seqlens, max_len=8, pad_value=1.0)
    xd = padded.clone().requires_grad_()
    out_d = pool(xd, mask=mask, sizes=sz)
    torch.testing.assert_close(out_p, out_d)
    alone = torch.cat([pool(s[None], sizes=z[None]) for s, z in zip(seqs, sizes)])
    torch.testing.assert_close(out_p, alone)
    g = torch.randn_like(out_p)
    gp, gd = torch.autograd.grad((out_p * g).sum(), xp), torch.autograd.grad((out_d * g).sum(), xd)
    torch.testing.assert_close(gp[0], gd[0][mask])


@pytest.mark.parametrize("mode", ["mean", "max"])
@pytest.mark.parametrize("P", [0, 1])
def test_token_pool_by_hand_and_packed(mode, P):
    x = _rand(2, P + 7, 3)
    out = token_pool(x, 3, mode=mode, num_prefix_tokens=P)
    assert out.x.shape == (2, P + 3, 3)  # ceil(7 / 3) windows
    reduce = (lambda t: t.mean(0)) if mode == "mean" else (lambda t: t.amax(0))
    for w, (a, e) in enumerate([(0, 3), (3, 6), (6, 7)]):
        torch.testing.assert_close(out.x[:, P + w], torch.stack([reduce(x[b, P + a : P + e]) for b in range(2)]))
    assert torch.equal(out.x[:, :P], x[:, :P])
    assert out.sizes[0, :, 0].tolist() == [1.0] * P + [3.0, 3.0, 1.0]
    assert out.merge_map[0].tolist() == list(range(P)) + [P] * 3 + [P + 1] * 3 + [P + 2]
    seqs = [_rand(n, 3) for n in (P + 7, P, P + 2)]
    batch = pack(seqs)
    packed = token_pool(batch.x, 3, mode=mode, num_prefix_tokens=P, packed=batch)
    alone = torch.cat([token_pool(s[None], 3, mode=mode, num_prefix_tokens=P).x[0] for s in seqs])
    torch.testing.assert_close(packed.x, alone)
    padded, mask = packed_to_pad(batch)
    masked = token_pool(padded, 3, mode=mode, num_prefix_tokens=P, mask=mask)
    torch.testing.assert_close(masked.x[masked.mask], packed.x)


def test_funnel_query_pool_lengths_and_packed():
    torch.manual_seed(0)
    layer = FunnelQueryPool(8, 2, stride=2, num_prefix_tokens=1, backend="math").double()
    x = _rand(2, 1 + 9, 8)
    out = layer(x)
    assert out.x.shape == (2, 1 + 5, 8) and out.merge_map.shape == (2, 10)
    q = layer.q(token_pool(x, 2, num_prefix_tokens=1).x).view(2, 6, 2, 4).transpose(1, 2)
    k, v = layer.kv(x).view(2, 10, 2, 2, 4).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1) @ v  # (B, H, L', Dh)
    expected = token_pool(x, 2, num_prefix_tokens=1).x + layer.proj(ref.transpose(1, 2).reshape(2, 6, 8))
    torch.testing.assert_close(out.x, expected)
    seqs = [_rand(n, 8) for n in (4, 10, 1)]
    batch = pack(seqs)
    packed = layer(batch.x, packed=batch)
    torch.testing.assert_close(packed.x, torch.cat([layer(s[None]).x[0] for s in seqs]))
    padded, mask = packed_to_pad(batch)
    masked = layer(padded, mask=mask)
    torch.testing.assert_close(masked.x[masked.mask], packed.x)


def test_hierarchical_stages():
    torch.manual_seed(0)
    blocks = [[torch.nn.Linear(4, 4).double()], [torch.nn.Linear(4, 4).double()], [torch.nn.Identity()]]
    stages = HierarchicalStages(blocks, stride=2, mode="max", num_prefix_tokens=1)
    x = _rand(2, 1 + 8, 4)
    out = stages(x)
    h = blocks[0][0](x)
    h = blocks[1][0](token_pool(h, 2, mode="max", num_prefix_tokens=1).x)
    h = token_pool(h, 2, mode="max", num_prefix_tokens=1).x
    torch.testing.assert_close(out.x, h)
    assert out.x.shape == (2, 1 + 2, 4)
    assert out.merge_map[0].tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert out.sizes[0, :, 0].tolist() == [1.0, 4.0, 4.0]

    class PackedLinear(torch.nn.Linear):
        def forward(self, x, packed=None):
            return super().forward(x)

    torch.manual_seed(0)
    pstages = HierarchicalStages([[PackedLinear(4, 4).double()], [PackedLinear(4, 4).double()]], num_prefix_tokens=1)
    seqs = [_rand(n, 4) for n in (9, 4, 1)]
    batch = pack(seqs)
    packed = pstages(batch.x, packed=batch)
    torch.testing.assert_close(packed.x, torch.cat([pstages(s[None]).x[0] for s in seqs]))
    assert packed.packed.seqlens.tolist() == [5, 3, 1]


def _boundary_layer(P=0):
    torch.manual_seed(0)
    return DynamicTokenPooling(6, hidden=8, num_prefix_tokens=P).double()


@pytest.mark.parametrize("P", [0, 1])
def test_dynamic_pooling_eval_hard_segments_and_upsample(P):
    layer = _boundary_layer(P).eval()
    x = _rand(3, P + 12, 6)
    out = layer(x)
    again = layer(x)
    assert torch.equal(out.x, again.x)  # deterministic
    logits = layer.boundary_logits(x)
    for b in range(3):
        starts = [P] + [t for t in range(P + 1, P + 12) if torch.sigmoid(logits[b, t]) > 0.5]
        ends = starts[1:] + [P + 12]
        assert set(out.boundaries[b].nonzero().flatten().tolist()) == set(starts)
        n = P + len(starts)
        assert int(out.mask[b].sum()) == n
        torch.testing.assert_close(out.x[b, :P], x[b, :P])
        for i, (a, e) in enumerate(zip(starts, ends)):
            torch.testing.assert_close(out.x[b, P + i], x[b, a:e].mean(0))
            assert out.sizes[b, P + i, 0] == e - a
        up = upsample(out.x, out)[b]
        for a, e in zip(starts, ends):
            torch.testing.assert_close(up[a:e], x[b, a:e].mean(0).expand(e - a, -1))
    torch.testing.assert_close(out.sizes.sum(1), torch.full((3, 1), float(P + 12), dtype=torch.float64))


def test_dynamic_pooling_packed_equals_per_sample():
    layer = _boundary_layer(1).eval()
    seqs = [_rand(n, 6) for n in (7, 1, 12)]
    batch = pack(seqs)
    out = layer(batch.x, packed=batch)
    alone = [layer(s[None]) for s in seqs]
    torch.testing.assert_close(out.x, torch.cat([a.x[0][a.mask[0]] for a in alone]))
    torch.testing.assert_close(upsample(out.x, out), torch.cat([upsample(a.x, a)[0] for a in alone]))
    padded, mask = packed_to_pad(batch)
    masked = layer(padded, mask=mask)
    torch.testing.assert_close(masked.x[masked.mask], out.x)
    assert bool((upsample(masked.x, masked)[~mask] == 0).all())


def test_dynamic_pooling_training_gradients_reach_predictor():
    layer = _boundary_layer(1).train()
    x = _rand(2, 1 + 16, 6).requires_grad_()
    torch.manual_seed(3)
    out = layer(x)
    assert set(out.boundaries.detach().unique().tolist()) <= {0.0, 1.0}
    y = upsample(out.x * torch.linspace(0.5, 1.5, 6, dtype=torch.float64), out)
    loss = (y * _rand(*y.shape)).sum() + layer.regularization_loss()
    loss.backward()
    grads = [p.grad for p in layer.predictor.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    layer.zero_grad()
    layer(x)
    layer.regularization_loss().backward()  # the binomial prior alone also trains the predictor
    assert layer.predictor[-1].bias.grad.abs() > 0
