"""Mask patterns: each against an explicit definition, and ``flex`` against ``math`` on them."""

from __future__ import annotations

import pytest
import torch
from attn_testing import check_against_math, make_qkv

from longseq.core.attention import AttentionSpec, get_backend
from longseq.core.attention import masks as M


def dense(mod, L: int, H: int = 1, B: int = 1, Lk: int | None = None) -> torch.Tensor:
    return M.materialize_mask(mod, B, H, L, L if Lk is None else Lk)


def expected(fn, L: int, Lk: int | None = None, h: int = 0, b: int = 0) -> torch.Tensor:
    Lk = L if Lk is None else Lk
    return torch.tensor([[bool(fn(b, h, i, j)) for j in range(Lk)] for i in range(L)])


def test_causal_and_windows():
    L = 7
    assert torch.equal(dense(M.causal_mask(), L)[0, 0], expected(lambda b, h, i, j: j <= i, L))
    for left, right in [(2, 1), (0, 0), (-1, 2), (3, -1), (-1, -1)]:
        want = expected(lambda b, h, i, j, lo=left, hi=right: (lo < 0 or j >= i - lo) and (hi < 0 or j <= i + hi), L)
        assert torch.equal(dense(M.sliding_window_mask(left, right), L)[0, 0], want), (left, right)
    with pytest.raises(ValueError, match="window sides"):
        M.sliding_window_mask(-2, 0)


def test_key_coordinates_when_lq_differs():
    # 2 queries against 5 keys: rows sit at key positions 3 and 4 (bottom-right).
    got = M.materialize_mask(M.causal_mask(), 1, 1, 2, 5)[0, 0]
    assert torch.equal(got, expected(lambda b, h, i, j: j <= i + 3, 2, 5))


def test_document_mask():
    cu = torch.tensor([0, 2, 2, 5], dtype=torch.int32)
    assert M.doc_ids(cu).tolist() == [0, 0, 2, 2, 2]
    doc = [0, 0, 2, 2, 2]
    assert torch.equal(dense(M.document_mask(cu), 5)[0, 0], expected(lambda b, h, i, j: doc[i] == doc[j], 5))


def test_longformer():
    L, w, g = 9, 1, [0, 6]
    is_global = M.global_tokens(L, g)
    want = expected(lambda b, h, i, j: abs(i - j) <= w or i in g or j in g, L)
    assert torch.equal(dense(M.longformer_mask(w, is_global), L)[0, 0], want)
    per_batch = torch.stack([is_global, M.global_tokens(L, [3])])  # (B, L): one global set per row
    got = dense(M.longformer_mask(w, per_batch), L, B=2)
    assert torch.equal(got[1, 0], expected(lambda b, h, i, j: abs(i - j) <= w or 3 in (i, j), L))
    with pytest.raises(ValueError, match="global token indices"):
        M.global_tokens(4, [4])


def test_bigbird_blocks_are_reproducible_and_well_formed():
    adj = M.bigbird_blocks(16 * 4, block_size=4, num_window_blocks=3, num_global_blocks=1, num_random_blocks=2, seed=7)
    nb = adj.shape[0]
    assert nb == 16
    assert adj[0].all() and adj[:, 0].all()  # global block
    for i in range(1, nb):
        window = {j for j in (i - 1, i, i + 1) if 0 <= j < nb} | {0}
        assert window <= set(adj[i].nonzero().flatten().tolist())
        assert adj[i].sum().item() == len(window) + 2  # exactly two random blocks outside window/global
    assert torch.equal(adj, M.bigbird_blocks(64, 4, 3, 1, 2, seed=7))
    assert not torch.equal(adj, M.bigbird_blocks(64, 4, 3, 1, 2, seed=8))
    token = dense(M.bigbird_mask(62, block_size=4, seed=7), 62)[0, 0]  # a partial last block
    assert torch.equal(token, adj.repeat_interleave(4, 0).repeat_interleave(4, 1)[:62, :62])


def test_dilated_segments():
    L, H = 12, 2
    mod = M.dilated_mask([(4, 2)])
    got = dense(mod, L, H=H)
    for h in range(H):
        want = expected(lambda b, hh, i, j: i // 4 == j // 4 and (i % 4) % 2 == hh and (j % 4) % 2 == hh, L, h=h)
        assert torch.equal(got[0, h], want)
    covered = dense(M.dilated_mask([(4, 2), (2, 1)]), L, H=H)
    assert covered.any(-1).all()  # a (w, 1) pattern gives every row a key
    with pytest.raises(ValueError, match="1 <= r <= w"):
        M.dilated_mask([(2, 3)])


def test_prefix_lm():
    L = 6
    assert torch.equal(dense(M.prefix_lm_mask(3), L)[0, 0], expected(lambda b, h, i, j: j < 3 or j <= i, L))
    got = dense(M.prefix_lm_mask(torch.tensor([1, 4])), L, B=2)
    assert torch.equal(got[1, 0], expected(lambda b, h, i, j: j < 4 or j <= i, L))


def test_combinators():
    a, b = M.causal_mask(), M.sliding_window_mask(1, 1)
    L = 5
    assert torch.equal(dense(M.and_masks(a, b), L), dense(a, L) & dense(b, L))
    assert torch.equal(dense(M.or_masks(a, b), L), dense(a, L) | dense(b, L))
    with pytest.raises(ValueError):
        M.and_masks()


@pytest.mark.parametrize(
    "pattern",
    [
        lambda L: M.bigbird_mask(L, block_size=4, num_random_blocks=1, seed=1),
        lambda L: M.dilated_mask([(8, 2), (4, 1)]),
    ],
    ids=["bigbird", "dilated"],
)
def test_flex_matches_math_on_patterns(pattern):
    L = 19
    q, k, v = make_qkv(2, L, L, 4, 2, 8)
    check_against_math(get_backend("flex"), q, k, v, AttentionSpec(mask_mod=pattern(L), causal=True), grads=False)


def test_sdpa_matches_math_on_patterns():
    L = 19
    sdpa = get_backend("sdpa")
    for mod in (M.bigbird_mask(L, block_size=4, seed=2), M.dilated_mask([(8, 4), (4, 1)]), M.prefix_lm_mask(5)):
        q, k, v = make_qkv(2, L, L, 4, 2, 8)
        check_against_math(sdpa, q, k, v, AttentionSpec(mask_mod=mod))
