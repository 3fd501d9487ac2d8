"""Fused ToMe kernels vs their reference: identical merge plans, weighted merge within the tolerance rule,
tie-breaking, size conservation, and the wiring into ``longseq.core.reduction.merge``."""

from __future__ import annotations

import pytest
import torch

from longseq.kernels._common import interpreting
from longseq.kernels.testing import assert_close, compile_backend
from longseq.kernels.token_merge import (
    MergePlan,
    bipartite_match,
    bipartite_match_ref,
    merge_weighted,
    merge_weighted_ref,
    plan_from_merge_map,
)

# (L, P): odd and even lengths, with and without prefix tokens, up to a second a-tile (n_a > 64) of the kernels.
MATCH_SHAPES = [(1, 0), (2, 1), (5, 3), (8, 0), (17, 1), (33, 2), (150, 1)]
DTYPES = [torch.float32, torch.bfloat16] if interpreting() else [torch.float32, torch.float16, torch.bfloat16]


def _r_values(L: int, P: int) -> list[int]:
    """0, 1, a middle value, the maximum (L - P) // 2 and one past it (clipped)."""
    half = (L - P) // 2
    return sorted({0, 1, max(1, half // 2), half, half + 3})


def _assert_same_plan(plan: MergePlan, ref: MergePlan) -> None:
    assert plan.out_len == ref.out_len
    for name in ("merge_map", "indptr", "indices"):
        got, want = getattr(plan, name), getattr(ref, name)
        assert got.dtype == want.dtype, name
        assert torch.equal(got, want), f"{name} differs:\n{got}\n{want}"


def _assert_valid_plan(plan: MergePlan, metric: torch.Tensor, r: int, P: int, tol: float) -> None:
    """A correct ToMe plan up to score rounding ``tol`` (for large random inputs, where near-ties within
    rounding can flip a decision): order and layout exact, every choice within ``tol`` of the best (fp64 scores)."""
    B, L, _ = metric.shape
    n_a, n_b = (L - P + 1) // 2, (L - P) // 2
    n_unm = n_a - r
    mm = plan.merge_map
    ar = torch.arange(L, device=mm.device)
    assert torch.equal(mm[:, :P], ar[:P].expand(B, -1))
    assert torch.equal(mm[:, P + 1 :: 2], (P + n_unm + ar[:n_b]).expand(B, -1))
    target = mm[:, P::2]  # (B, n_a)
    src = target >= P + n_unm
    assert torch.equal(src.sum(1), torch.full((B,), r, device=mm.device))
    kept = target.masked_select(~src).view(B, n_unm)
    assert torch.equal(kept, (P + ar[:n_unm]).expand(B, -1))  # kept a tokens in input order
    _assert_same_plan(plan, plan_from_merge_map(mm, L - r))
    if r == 0:
        return
    m = metric.double()
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    scores = m[:, P::2] @ m[:, P + 1 :: 2].transpose(-1, -2)  # (B, n_a, n_b)
    best = scores.max(-1).values  # (B, n_a)
    chosen = scores.gather(2, (target - P - n_unm).clamp(0, n_b - 1)[..., None])[..., 0]
    assert bool((chosen >= best - tol)[src].all()), "a source merged into a b token that is not its best match"
    lowest_src = best.masked_fill(~src, float("inf")).min(1).values
    highest_kept = best.masked_fill(src, float("-inf")).max(1).values
    assert bool((lowest_src >= highest_kept - tol).all()), "a kept a token scores above a merged one"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("L", "P"), MATCH_SHAPES, ids=str)
def test_token_merge_match_equals_reference(L, P, dtype, device):
    """Random metrics (no ties): the kernel takes exactly the reference's decisions for every r."""
    B, C = 3, 24
    metric = torch.randn(B, L, C, device=device).to(dtype)
    for r in _r_values(L, P):
        plan = bipartite_match(metric, r, P)
        _assert_same_plan(plan, bipartite_match_ref(metric, r, P))
        _assert_valid_plan(plan, metric, min(r, (L - P) // 2), P, tol=0.0)


def test_token_merge_match_strided_and_wide_metric(device):
    """A non-contiguous metric (a head-mean of keys) and C past one channel tile (C = 200 > 64)."""
    k = torch.randn(2, 4, 41, 200, device=device)  # (B, H, L, C)
    metric = k.transpose(1, 2)[:, :, 1]  # (B, L, C) view with strides
    _assert_same_plan(bipartite_match(metric, 13, 1), bipartite_match_ref(metric, 13, 1))


@pytest.mark.parametrize("L", [45, 161])  # 161: ties across the kernels' b-tiles of 64
def test_token_merge_ties_break_like_reference(L, device):
    """Unit basis vectors make every score exactly 0 or 1: many tied maxima and tied ranks, broken the same way
    (first b token among equals; lower a index first)."""
    B, C = 4, 4
    metric = torch.nn.functional.one_hot(torch.randint(0, C, (B, L), device=device), C).float()
    for r in (1, 5, 11, 22):
        _assert_same_plan(bipartite_match(metric, r, 1), bipartite_match_ref(metric, r, 1))


@pytest.mark.parametrize("sizes_dtype", [None, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_token_merge_merge_matches_reference(dtype, sizes_dtype, device):
    B, L, D, P, r = 3, 37, 96, 1, 17
    plan = bipartite_match_ref(torch.randn(B, L, 16, device=device), r, P)
    x = torch.randn(B, L, D, device=device).to(dtype)
    sizes = None if sizes_dtype is None else torch.randint(1, 600, (B, L, 1), device=device).to(sizes_dtype)
    out, out_sizes = merge_weighted(x, plan, sizes)
    assert out.shape == (B, L - r, D) and out.dtype == dtype
    assert out_sizes.shape == (B, L - r, 1) and out_sizes.dtype == torch.float32
    ref, ref_sizes = merge_weighted_ref(x, plan.merge_map, plan.out_len, sizes)
    lowp = (
        None if dtype == torch.float32 else merge_weighted_ref(x, plan.merge_map, plan.out_len, sizes, upcast=False)[0]
    )
    assert_close(out, ref, lowp, name="x'")
    assert torch.equal(out_sizes, ref_sizes)  # integer sizes: the fp32 sums are exact
    total = torch.full((B, 1), float(L), device=device) if sizes is None else sizes.float().sum(1)
    assert torch.equal(out_sizes.sum(1), total)


def test_token_merge_merge_any_grouping(device):
    """The merge kernel follows any plan: random groups of many tokens (not only ToMe's <= 1 + r per output)."""
    B, L, out_len, D = 2, 50, 7, 40
    merge_map = torch.cat([torch.arange(out_len), torch.randint(0, out_len, (L - out_len,))])
    merge_map = torch.stack([merge_map[torch.randperm(L)] for _ in range(B)]).to(device)
    plan = plan_from_merge_map(merge_map, out_len)
    x = torch.randn(B, L, D, device=device)
    sizes = torch.rand(B, L, 1, device=device) + 0.1
    out, out_sizes = merge_weighted(x[:, :, ::1].transpose(1, 2).contiguous().transpose(1, 2), plan, sizes)
    ref, ref_sizes = merge_weighted_ref(x, merge_map, out_len, sizes)
    assert_close(out, ref, name="x'")
    assert_close(out_sizes, ref_sizes, name="sizes'")


def test_token_merge_identical_tokens_merge_exactly(device):
    """Pairs (a, b) with a == b: ToMe merges exactly those pairs and the average is exact."""
    B, n, D = 2, 12, 32
    pairs = torch.randn(B, n, 1, D, device=device).expand(-1, -1, 2, -1).reshape(B, 2 * n, D)
    x = torch.cat([torch.randn(B, 1, D, device=device), pairs], dim=1)  # prefix + n duplicate pairs
    plan = bipartite_match(x, n, 1)
    out, sizes = merge_weighted(x, plan)
    torch.testing.assert_close(out, torch.cat([x[:, :1], x[:, 2::2]], dim=1), rtol=0, atol=0)
    assert torch.equal(sizes[:, 1:], torch.full((B, n, 1), 2.0, device=device))


def test_token_merge_writes_every_output(device, monkeypatch):
    """Poison every buffer the launchers allocate: anything the kernels forget stays NaN / int-min."""
    from longseq.kernels.testing import poison
    from longseq.kernels.token_merge import triton as tri

    real_empty = torch.empty
    monkeypatch.setattr(tri.torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    metric = torch.randn(2, 70, 8, device=device)
    plan = bipartite_match(metric, 20, 2)
    _assert_same_plan(plan, bipartite_match_ref(metric, 20, 2))
    out, sizes = merge_weighted(torch.randn(2, 70, 300, device=device), plan, torch.ones(2, 70, 1, device=device))
    assert not out.isnan().any() and not sizes.isnan().any()


def test_token_merge_gradients_use_reference(device):
    """The merge kernel has no backward: with autograd recording, the differentiable reference runs."""
    x = torch.randn(2, 11, 8, device=device, requires_grad=True)
    sizes = (torch.rand(2, 11, 1, device=device) + 0.5).requires_grad_()
    plan = bipartite_match(x, 4, 1)
    out, out_sizes = merge_weighted(x, plan, sizes)
    (out.sum() + out_sizes.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and sizes.grad is not None
    with torch.no_grad():
        fused, _ = merge_weighted(x, plan, sizes)
    assert_close(fused, out.detach(), name="x' (no grad)")


def test_token_merge_runs_the_triton_path(device, monkeypatch):
    """Proof that the tests exercise Triton (the interpreter on CPU), not the reference fallback."""
    import longseq.kernels.token_merge as mod

    def _fail(*args, **kwargs):
        raise AssertionError("the reference fallback ran instead of the Triton kernel")

    monkeypatch.setattr(mod, "bipartite_match_ref", _fail)
    monkeypatch.setattr(mod, "merge_weighted_ref", _fail)
    x = torch.randn(2, 9, 16, device=device)
    out, sizes = merge_weighted(x, bipartite_match(x, 3, 1))
    assert out.shape == (2, 6, 16) and not out.isnan().any()


def test_token_merge_cpu_without_interpreter_uses_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(2, 9, 16)
    plan = bipartite_match(x, 3, 1)
    _assert_same_plan(plan, bipartite_match_ref(x, 3, 1))
    out, _ = merge_weighted(x, plan)
    assert_close(out, merge_weighted_ref(x, plan.merge_map, plan.out_len)[0], name="x'")


def test_token_merge_core_uses_the_kernels(device, monkeypatch):
    """``longseq.core.reduction`` ToMe runs the kernels (same result as its PyTorch path) and keeps training."""
    from longseq.core.reduction import TokenMerging, bipartite_soft_matching

    x = torch.randn(3, 30, 24, device=device)
    sizes = torch.randint(1, 5, (3, 30, 1), device=device).float()
    merge = bipartite_soft_matching(x, 7)
    assert merge.plan is not None
    fused = TokenMerging(7)(x, sizes=sizes)
    monkeypatch.setenv("LONGSEQ_TOME_KERNELS", "0")
    assert bipartite_soft_matching(x, 7).plan is None
    plain = TokenMerging(7)(x, sizes=sizes)
    assert torch.equal(fused.merge_map, plain.merge_map) and torch.equal(fused.sizes, plain.sizes)
    assert_close(fused.x, plain.x, name="x'")
    monkeypatch.delenv("LONGSEQ_TOME_KERNELS")
    xg = x.clone().requires_grad_()
    TokenMerging(7)(xg).x.square().sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: bipartite_match(torch.randn(2, 5, 3, dtype=torch.float64), 1), TypeError, "metric must have dtype"),
        (lambda: bipartite_match(torch.randn(5, 3), 1), ValueError, r"metric must be \(B, L, C\)"),
        (lambda: bipartite_match(torch.randn(2, 5, 0), 1), ValueError, "L, C >= 1"),
        (lambda: bipartite_match(torch.randn(2, 5, 3), -1), ValueError, "r must be an int >= 0, got -1"),
        (lambda: bipartite_match(torch.randn(2, 5, 3), 1, 5), ValueError, r"num_prefix_tokens must be in \[0, L=5\)"),
        (
            lambda: merge_weighted(torch.randn(2, 6, 3), bipartite_match_ref(torch.randn(2, 5, 3), 1)),
            ValueError,
            r"plan.merge_map must be torch.int64 \(2, 6\)",
        ),
        (
            lambda: merge_weighted(
                torch.randn(2, 5, 3), bipartite_match_ref(torch.randn(2, 5, 3), 1), torch.ones(2, 5)
            ),
            ValueError,
            r"sizes must be \(B, L, 1\) = \(2, 5, 1\), got \(2, 5\)",
        ),
        (
            lambda: merge_weighted(
                torch.ones(2, 5, 3, dtype=torch.int32), bipartite_match_ref(torch.randn(2, 5, 3), 1)
            ),
            TypeError,
            "x must have dtype",
        ),
        (lambda: merge_weighted(torch.randn(2, 5, 3), "plan"), TypeError, "plan must be a MergePlan"),
    ],
)
def test_token_merge_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_token_merge_opcheck(device):
    """torch.library's consistency checks of both custom ops (schema, fake implementations)."""
    metric = torch.randn(2, 13, 16, device=device)
    torch.library.opcheck(torch.ops.longseq.tome_bipartite_match.default, (metric, 4, 1))
    plan = bipartite_match(metric, 4, 1)
    x = torch.randn(2, 13, 20, device=device)
    for sizes in (None, torch.rand(2, 13, device=device) + 0.5):
        torch.library.opcheck(torch.ops.longseq.tome_merge_weighted.default, (x, plan.indptr, plan.indices, sizes))


@pytest.mark.slow
def test_token_merge_torch_compile_fullgraph(device):
    """Matching and merge compile without graph breaks (through the custom ops) and match eager."""
    torch._dynamo.reset()
    metric, x = torch.randn(2, 21, 16, device=device), torch.randn(2, 21, 32, device=device)

    def f(m, t):
        plan = bipartite_match(m, 6, 1)
        out, sizes = merge_weighted(t, plan)
        return out * 2, sizes, plan.merge_map

    got = torch.compile(f, fullgraph=True, backend=compile_backend())(metric, x)
    want = f(metric, x)
    assert torch.equal(got[2], want[2]) and torch.equal(got[1], want[1])
    assert_close(got[0], want[0], name="x'")


@pytest.mark.gpu
@pytest.mark.parametrize("r", [1, 13, 16, 98])
def test_token_merge_gpu_vit_b_shapes(r):
    """ViT-B/16 at 224 px in bf16: B = 256, L = 197 (CLS + 196 patches), metric C = 64, x D = 768."""
    B, L, C, D = 256, 197, 64, 768
    metric = torch.randn(B, L, C, device="cuda", dtype=torch.bfloat16)
    plan = bipartite_match(metric, r, 1)
    _assert_valid_plan(plan, metric, min(r, (L - 1) // 2), 1, tol=1e-5)
    x = torch.randn(B, L, D, device="cuda", dtype=torch.bfloat16)
    sizes = torch.randint(1, 20, (B, L, 1), device="cuda").float()
    out, out_sizes = merge_weighted(x, plan, sizes)
    ref, ref_sizes = merge_weighted_ref(x, plan.merge_map, plan.out_len, sizes)
    lowp = merge_weighted_ref(x, plan.merge_map, plan.out_len, sizes, upcast=False)[0]
    assert_close(out, ref, lowp, name="x'")
    assert torch.equal(out_sizes, ref_sizes)
