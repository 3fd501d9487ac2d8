"""Token merging (ToMe): matching vs a loop reference, sizes, prefix tokens, unmerge, proportional attention."""

from __future__ import annotations

import pytest
import torch

from longseq.core.attention import attention
from longseq.core.reduction import (
    TokenMerging,
    bipartite_soft_matching,
    compose_merge_maps,
    merge_wavg,
    proportional_attention_bias,
    proportional_attention_score_mod,
    unmerge,
)


def _reference_tome(x, sizes, r, P):
    """ToMe written per row with Python loops: returns (x', sizes') in the order [prefix, unmerged a, b]."""
    outs, out_sizes = [], []
    for xb, sb in zip(x, sizes):
        a_idx = list(range(P, xb.shape[0], 2))
        b_idx = list(range(P + 1, xb.shape[0], 2))
        r_b = min(r, len(b_idx))
        m = xb / xb.norm(dim=-1, keepdim=True)
        sim = [[float(m[i] @ m[j]) for j in b_idx] for i in a_idx]
        best = [max(range(len(b_idx)), key=row.__getitem__) if b_idx else 0 for row in sim]
        score = [row[best[n]] if b_idx else 0.0 for n, row in enumerate(sim)]
        merged = sorted(range(len(a_idx)), key=lambda n: -score[n])[:r_b]
        acc = {j: (xb[bi] * sb[bi], sb[bi].clone()) for j, bi in enumerate(b_idx)}
        for n in merged:
            vx, vs = acc[best[n]]
            acc[best[n]] = (vx + xb[a_idx[n]] * sb[a_idx[n]], vs + sb[a_idx[n]])
        kept = [n for n in range(len(a_idx)) if n not in merged]
        rows = [xb[i] for i in range(P)] + [xb[a_idx[n]] for n in kept] + [acc[j][0] / acc[j][1] for j in acc]
        szs = [sb[i] for i in range(P)] + [sb[a_idx[n]] for n in kept] + [acc[j][1] for j in acc]
        outs.append(torch.stack(rows))
        out_sizes.append(torch.stack(szs))
    return torch.stack(outs), torch.stack(out_sizes)


def _with_duplicates(B, P, n_dup, n_rand, D=32, dtype=torch.float32):
    """(B, P + 2 * (n_dup + n_rand), D): prefix, then ``n_dup`` pairs (a, b) with a == b, then random pairs."""
    prefix = torch.randn(B, P, D, dtype=dtype)
    dup = torch.randn(B, n_dup, 1, D, dtype=dtype).expand(-1, -1, 2, -1).reshape(B, 2 * n_dup, D)
    rand = torch.randn(B, 2 * n_rand, D, dtype=dtype)
    return torch.cat([prefix, dup, rand], dim=1)


@pytest.mark.parametrize("L,P", [(L, P) for L in (1, 2, 5, 8, 17) for P in (0, 1, 3) if P < L])
@pytest.mark.parametrize("r", [0, 1, 3, 100])
def test_matches_reference_shapes_and_sizes(L, P, r):
    B, D = 2, 8
    x = torch.randn(B, L, D, dtype=torch.float64)
    sizes = torch.rand(B, L, 1, dtype=torch.float64) + 0.5
    out = TokenMerging(r, num_prefix_tokens=P)(x, sizes=sizes)
    r_eff = min(r, (L - P) // 2)
    assert out.x.shape == (B, L - r_eff, D)
    assert out.sizes.shape == (B, L - r_eff, 1)
    assert out.merge_map.shape == (B, L) and out.merge_map.dtype == torch.int64
    assert out.keep_index is None
    torch.testing.assert_close(out.sizes.sum(1), sizes.sum(1))
    ref_x, ref_sizes = _reference_tome(x, sizes, r, P)
    torch.testing.assert_close(out.x, ref_x)
    torch.testing.assert_close(out.sizes, ref_sizes)
    # every input token maps to the output holding it: re-merging by the map gives the same sizes
    counts = torch.zeros(B, L - r_eff, 1, dtype=x.dtype).scatter_add(1, out.merge_map[..., None], sizes)
    torch.testing.assert_close(counts, out.sizes)


def test_unit_sizes_sum_to_length():
    x = torch.randn(3, 21, 16)
    out = TokenMerging(6, num_prefix_tokens=1)(x)
    assert out.x.shape == (3, 15, 16)
    assert torch.equal(out.sizes.sum(1), torch.full((3, 1), 21.0))


def test_prefix_tokens_untouched():
    P = 2
    x = _with_duplicates(2, P, n_dup=0, n_rand=5)
    x[:, 0] = x[:, 2]  # a prefix token identical to a non-prefix one is still not merged
    out = TokenMerging(5, num_prefix_tokens=P)(x)
    assert torch.equal(out.x[:, :P], x[:, :P])
    assert torch.equal(out.sizes[:, :P], torch.ones(2, P, 1))
    assert torch.equal(out.merge_map[:, :P], torch.arange(P).expand(2, -1))
    assert (out.merge_map[:, P:] >= P).all()


def test_identical_tokens_merge_exactly():
    x = _with_duplicates(2, 1, n_dup=6, n_rand=0)
    out = TokenMerging(6)(x)
    unique = torch.cat([x[:, :1], x[:, 2::2]], dim=1)  # prefix, then b tokens
    torch.testing.assert_close(out.x, unique, rtol=0, atol=0)
    assert torch.equal(out.sizes[:, 1:], torch.full((2, 6, 1), 2.0))
    torch.testing.assert_close(unmerge(out.x, out.merge_map), x, rtol=0, atol=0)


def test_unmerge_roundtrip_partial_duplicates():
    x = _with_duplicates(3, 1, n_dup=4, n_rand=3)
    out = TokenMerging(4)(x)
    assert torch.equal(out.sizes.sum(1), torch.full((3, 1), 15.0))
    assert int((out.sizes == 2).sum()) == 3 * 4
    torch.testing.assert_close(unmerge(out.x, out.merge_map), x, rtol=0, atol=0)


def test_compose_two_layers():
    x = torch.randn(2, 19, 8)
    first = TokenMerging(5)(x)
    second = TokenMerging(4)(first.x, sizes=first.sizes)
    total = compose_merge_maps(first.merge_map, second.merge_map)
    assert torch.equal(total, second.merge_map.gather(1, first.merge_map))
    # merging the input directly by the composed map equals the two steps
    sums = torch.zeros(2, 10, 8).scatter_add(1, total[..., None].expand(-1, -1, 8), x)
    counts = torch.zeros(2, 10, 1).scatter_add(1, total[..., None], torch.ones(2, 19, 1))
    torch.testing.assert_close(counts, second.sizes)
    torch.testing.assert_close(sums / counts, second.x)
    torch.testing.assert_close(unmerge(second.x, total), unmerge(unmerge(second.x, second.merge_map), first.merge_map))


@pytest.mark.parametrize("backend", ["math", "sdpa", "math-score_mod"])
def test_proportional_attention_equals_duplicated(backend):
    B, H, Dh, D, Lq = 2, 2, 8, 32, 5
    x = _with_duplicates(B, 1, n_dup=5, n_rand=2, D=D)
    out = TokenMerging(5)(x)
    torch.testing.assert_close(unmerge(out.x, out.merge_map), x, rtol=0, atol=0)  # the merge is exact
    wk, wv = torch.randn(D, H * Dh), torch.randn(D, H * Dh)
    q = torch.randn(B, Lq, H, Dh)

    def kv(t):
        return (t @ wk).view(*t.shape[:2], H, Dh), (t @ wv).view(*t.shape[:2], H, Dh)

    k, v = kv(x)
    km, vm = kv(out.x)
    expected = attention(q, k, v, backend="math", strict=True)
    if backend == "math-score_mod":
        mod = proportional_attention_score_mod(out.sizes)
        got = attention(q, km, vm, score_mod=mod, backend="math", strict=True)
    else:
        bias = proportional_attention_bias(out.sizes)
        assert bias.shape == (B, 1, 1, out.x.shape[1])
        got = attention(q, km, vm, bias=bias, backend=backend, strict=True)
    torch.testing.assert_close(got, expected)
    # without the bias the answers differ, so the test can fail
    plain = attention(q, km, vm, backend="math", strict=True)
    assert not torch.allclose(plain, expected, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_accumulates_in_fp32(dtype):
    x = torch.randn(2, 33, 16)
    sizes = torch.randint(1, 1000, (2, 33, 1)).float()  # past 256: not exact in bf16
    ref = TokenMerging(12)(x, sizes=sizes)
    low = TokenMerging(12)(x.to(dtype), sizes=sizes, metric=x)
    assert low.x.dtype == dtype and low.sizes.dtype == torch.float32
    assert torch.equal(low.merge_map, ref.merge_map)
    assert torch.equal(low.sizes, ref.sizes)
    # only the input rounding and the final rounding: within a few ulps of the low-precision dtype
    lowp_ref = merge_wavg(bipartite_soft_matching(x, 12), x.to(dtype).float(), sizes)[0]
    torch.testing.assert_close(low.x.float(), lowp_ref, rtol=torch.finfo(dtype).eps, atol=1e-6)


def test_gradients_flow():
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    sizes = (torch.rand(2, 9, 1, dtype=torch.float64) + 0.5).requires_grad_()
    merge = bipartite_soft_matching(x.detach(), 3)
    torch.autograd.gradcheck(lambda a, s: merge_wavg(merge, a, s), (x, sizes))
    out = TokenMerging(3)(x)
    out.x.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_eval_deterministic():
    layer = TokenMerging(7, num_prefix_tokens=1).eval()
    x = torch.randn(3, 30, 16)
    x[:, 5] = x[:, 7]  # a tie in scores is broken the same way every call
    x[:, 9] = x[:, 7]
    a, b = layer(x), layer(x.clone())
    assert torch.equal(a.x, b.x) and torch.equal(a.sizes, b.sizes) and torch.equal(a.merge_map, b.merge_map)


def test_metric_drives_matching():
    x = torch.randn(1, 5, 4)
    metric = torch.tensor([[[1.0, 1, 1], [0, 0, 1], [1, 0, 0], [2, 0, 0], [0, 1, 0]]])
    out = TokenMerging(1)(x, metric=metric)
    # a = {1, 3}, b = {2, 4}; only a-token 3 has a similar b-token (2), so it merges there
    assert out.merge_map[0].tolist() == [0, 1, 2, 2, 3]
    torch.testing.assert_close(out.x[0], torch.stack([x[0, 0], x[0, 1], (x[0, 2] + x[0, 3]) / 2, x[0, 4]]))
    assert out.sizes[0, :, 0].tolist() == [1.0, 1.0, 2.0, 1.0]


def test_bad_inputs():
    x = torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match="r must be >= 0, got -1"):
        TokenMerging(-1)
    with pytest.raises(ValueError, match="r must be >= 0, got -2"):
        bipartite_soft_matching(x, -2)
    with pytest.raises(ValueError, match=r"metric must be \(B, L, C\) with \(B, L\) = \(2, 6\), got \(2, 5, 4\)"):
        TokenMerging(1)(x, metric=torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"num_prefix_tokens must be in \[0, L=6\), got 6"):
        TokenMerging(1, num_prefix_tokens=6)(x)
    with pytest.raises(ValueError, match="num_prefix_tokens must be >= 0, got -1"):
        TokenMerging(1, num_prefix_tokens=-1)
    with pytest.raises(ValueError, match=r"x must be padded \(B, L, D\), got shape \(6, 4\)"):
        TokenMerging(1)(x[0])
    with pytest.raises(
        ValueError, match=r"sizes must be floating \(B, L, 1\) = \(2, 6, 1\), got torch.float32 \(2, 6\)"
    ):
        TokenMerging(1)(x, sizes=torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"sizes must be floating .* got torch.int64"):
        TokenMerging(1)(x, sizes=torch.ones(2, 6, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"merge_map must be int64 \(B=2, L\), got torch.int32 \(2, 6\)"):
        unmerge(x, torch.zeros(2, 6, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"second must be int64 \(B=2, L\), got torch.int64 \(3, 6\)"):
        compose_merge_maps(torch.zeros(2, 6, dtype=torch.long), torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"first must be int64 \(B, L\), got torch.int64 \(6,\)"):
        compose_merge_maps(torch.zeros(6, dtype=torch.long), torch.zeros(3, 6, dtype=torch.long))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    x = torch.randn(4, 197, 64)
    cpu = TokenMerging(16)(x)
    gpu = TokenMerging(16)(x.cuda())
    assert torch.equal(gpu.merge_map.cpu(), cpu.merge_map)
    torch.testing.assert_close(gpu.x.cpu(), cpu.x)
    torch.testing.assert_close(gpu.sizes.cpu(), cpu.sizes)


@pytest.mark.gpu
@pytest.mark.parametrize("how", ["bias", "score_mod"])
def test_cuda_flex_proportional_attention(how):
    B, H, Dh, D = 2, 2, 16, 32
    x = _with_duplicates(B, 1, n_dup=40, n_rand=24, D=D).cuda()
    out = TokenMerging(40)(x)
    wk, wv = torch.randn(D, H * Dh, device="cuda"), torch.randn(D, H * Dh, device="cuda")
    q = torch.randn(B, 33, H, Dh, device="cuda")
    k, v = (x @ wk).view(B, -1, H, Dh), (x @ wv).view(B, -1, H, Dh)
    km, vm = (out.x @ wk).view(B, -1, H, Dh), (out.x @ wv).view(B, -1, H, Dh)
    expected = attention(q, k, v, backend="math", strict=True)
    extra = {"bias": proportional_attention_bias(out.sizes)}
    if how == "score_mod":
        extra = {"score_mod": proportional_attention_score_mod(out.sizes)}
    got = attention(q, km, vm, backend="flex", strict=True, **extra)
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)
