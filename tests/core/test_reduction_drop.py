"""Token dropping: patch dropout, structured patchout, Random-LTD, and the gather/scatter helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from longseq.core.packing import pack, position_ids_from_cu_seqlens, unpack
from longseq.core.reduction import (
    PatchDropout,
    RandomLTD,
    StructuredPatchout,
    gather_tokens,
    random_keep_index,
    random_ltd_forward,
    scatter_tokens,
)


def _check_index(keep_index, B, L, P, n_keep):
    """keep_index is (B, P + n_keep) int64, prefix first, strictly increasing and within [0, L)."""
    assert keep_index.dtype == torch.int64 and keep_index.shape == (B, P + n_keep)
    assert torch.equal(keep_index[:, :P], torch.arange(P).expand(B, -1))
    assert (keep_index[:, 1:] > keep_index[:, :-1]).all()
    assert (keep_index >= 0).all() and (keep_index < L).all()


def _check_output(out, x, P, n_keep):
    B, L, D = x.shape
    _check_index(out.keep_index, B, L, P, n_keep)
    assert out.x.shape == (B, P + n_keep, D)
    assert torch.equal(out.x, gather_tokens(x, out.keep_index))
    assert torch.equal(out.x[:, :P], x[:, :P])
    assert out.sizes.shape == (B, P + n_keep, 1) and (out.sizes == 1).all()
    assert out.merge_map is None


@pytest.mark.parametrize("L", [1, 4, 17])
def test_gather_scatter_round_trip(L):
    torch.manual_seed(0)
    B, D = 3, 5
    x = torch.randn(B, L, D)
    index = random_keep_index(B, L, (L + 1) // 2, num_prefix_tokens=0)
    kept = gather_tokens(x, index)
    assert kept.shape == (B, index.shape[1], D)
    assert torch.equal(scatter_tokens(x, kept, index), x)
    # positions outside the index keep ``base``; positions inside take ``x_kept``
    base = torch.zeros_like(x)
    mask = torch.zeros(B, L, dtype=torch.bool).scatter(1, index, True)
    out = scatter_tokens(base, kept, index)
    assert torch.equal(out[mask], x[mask]) and (out[~mask] == 0).all()


def test_gather_scatter_bad_input():
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="keep_index must be int64"):
        gather_tokens(x, torch.zeros(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="keep_index must be int64"):
        gather_tokens(x, torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="x must be padded"):
        gather_tokens(x[0], torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="x_kept must be"):
        scatter_tokens(x, torch.randn(2, 3, 3), torch.zeros(2, 2, dtype=torch.int64))


@pytest.mark.parametrize("L,P", [(1, 1), (2, 1), (9, 0), (17, 1), (20, 3)])
@pytest.mark.parametrize("keep_rate", [0.05, 0.5, 0.75, 1.0])
def test_patch_dropout_shapes_and_counts(L, P, keep_rate):
    torch.manual_seed(0)
    B, D = 4, 6
    x = torch.randn(B, L, D)
    layer = PatchDropout(keep_rate, num_prefix_tokens=P)
    n = L - P
    n_keep = min(n, max(1, round(keep_rate * n))) if n else 0
    assert layer.num_kept(n) == n_keep
    _check_output(layer(x), x, P, n_keep)


def test_patch_dropout_independent_per_sample_and_seeded():
    B, L, D = 8, 33, 4
    x = torch.randn(B, L, D)
    layer = PatchDropout(0.5)
    torch.manual_seed(1)
    a = layer(x).keep_index
    torch.manual_seed(1)
    b = layer(x).keep_index
    assert torch.equal(a, b)
    assert len({tuple(row.tolist()) for row in a}) > 1  # 8 samples drawing the same 16 of 32 is ~1e-60


@pytest.mark.parametrize(
    "layer",
    [PatchDropout(0.3), StructuredPatchout((3, 4), drop_time=2, drop_freq=1)],
    ids=["patch_dropout", "structured"],
)
def test_eval_is_identity(layer):
    torch.manual_seed(0)
    x = torch.randn(2, 13, 5)
    layer.eval()
    for _ in range(2):
        out = layer(x)
        assert torch.equal(out.x, x)
        assert torch.equal(out.keep_index, torch.arange(13).expand(2, -1))
        assert (out.sizes == 1).all() and out.sizes.shape == (2, 13, 1)
    layer.train()
    assert layer(x).x.shape[1] < 13


@pytest.mark.parametrize(
    "F,T,drop_freq,drop_time", [(1, 1, 0, 0), (3, 5, 1, 2), (4, 7, 3, 0), (2, 9, 0, 8), (5, 6, 2, 3)]
)
@pytest.mark.parametrize("P", [0, 1, 2])
def test_structured_patchout_drops_whole_rows_and_columns(F, T, drop_freq, drop_time, P):
    torch.manual_seed(0)
    B, D = 3, 4
    x = torch.randn(B, P + F * T, D)
    layer = StructuredPatchout((F, T), drop_time=drop_time, drop_freq=drop_freq, num_prefix_tokens=P)
    for _ in range(3):
        out = layer(x)
        F2, T2 = layer.kept_grid
        assert (F - drop_freq, T - drop_time) == (F2, T2)
        _check_output(out, x, P, F2 * T2)
        assert torch.equal(out.keep_index, out.keep_index[:1].expand(B, -1))  # one choice per batch
        f, t = (out.keep_index[0, P:] - P).div(T, rounding_mode="floor"), (out.keep_index[0, P:] - P) % T
        rows, cols = f.unique(), t.unique()
        assert len(rows) == F2 and len(cols) == T2
        # the kept set is exactly the product of kept rows and kept columns, row-major
        assert torch.equal(f, rows.repeat_interleave(T2)) and torch.equal(t, cols.repeat(F2))


def test_structured_patchout_randomises_which_rows():
    torch.manual_seed(0)
    layer = StructuredPatchout((6, 6), drop_time=3, drop_freq=3, num_prefix_tokens=1)
    x = torch.randn(1, 37, 2)
    seen = {tuple(layer(x).keep_index[0].tolist()) for _ in range(10)}
    assert len(seen) > 1  # 10 equal draws out of 400 has probability 400**-9


def test_bad_arguments():
    for rate in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="keep_rate must be in"):
            PatchDropout(rate)
    with pytest.raises(ValueError, match=r"expected F \* T = 3 \* 4 = 12"):
        StructuredPatchout((3, 4), 1, 1)(torch.randn(2, 12, 3))
    with pytest.raises(ValueError, match="drop_time must be in"):
        StructuredPatchout((3, 4), drop_time=4, drop_freq=0)
    with pytest.raises(ValueError, match="drop_freq must be in"):
        StructuredPatchout((3, 4), drop_time=0, drop_freq=-1)
    with pytest.raises(ValueError, match="num_prefix_tokens must be in"):
        PatchDropout(0.5, num_prefix_tokens=4)(torch.randn(1, 3, 2))
    with pytest.raises(ValueError, match="x must be padded"):
        PatchDropout(0.5)(torch.randn(3, 2))
    blocks = [nn.Identity()] * 3
    x = torch.randn(1, 6, 2)
    for start, end in ((-1, 2), (2, 1), (0, 4)):
        with pytest.raises(ValueError, match=r"0 <= start <= end <= len\(blocks\) = 3"):
            random_ltd_forward(blocks, x, start, end, keep=2)
        with pytest.raises(ValueError, match=r"0 <= start <= end <= len\(blocks\) = 3"):
            RandomLTD(blocks, start, end, keep=2)
    for keep in (0, 6):
        with pytest.raises(ValueError, match=r"keep must be in \[1, L - num_prefix_tokens = 5\]"):
            random_ltd_forward(blocks, x, 0, 2, keep=keep)


class _Residual(nn.Module):
    """x + Linear(x): a token-wise block, so running it on a subset equals running it on all and gathering."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim, dtype=torch.float64)

    def forward(self, x):
        return x + self.proj(x)


def _stack(n, dim=8):
    torch.manual_seed(0)
    return nn.ModuleList(_Residual(dim) for _ in range(n))


def _plain(blocks, x):
    for block in blocks:
        x = block(x)
    return x


@pytest.mark.parametrize("start,end", [(0, 4), (1, 3), (2, 2), (3, 4)])
def test_random_ltd_keep_all_and_eval_equal_plain_stack(start, end):
    blocks = _stack(4)
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    ref = _plain(blocks, x)
    y, index = random_ltd_forward(blocks, x, start, end, keep=8)
    assert torch.equal(y, ref) and torch.equal(index, torch.arange(9).expand(2, -1))
    layer = RandomLTD(blocks, start, end, keep=3).eval()
    y, index = layer(x)
    assert torch.equal(y, ref) and torch.equal(index, torch.arange(9).expand(2, -1))


@pytest.mark.parametrize("start,end", [(0, 4), (1, 3), (1, 2), (0, 1)])
@pytest.mark.parametrize("P,keep", [(0, 1), (1, 3), (2, 6)])
def test_random_ltd_dropped_skip_and_kept_match_subset(start, end, P, keep):
    torch.manual_seed(2)
    blocks = _stack(5)
    B, L, D = 3, 10, 8
    x = torch.randn(B, L, D, dtype=torch.float64)
    y, index = RandomLTD(blocks, start, end, keep, num_prefix_tokens=P)(x)
    _check_index(index, B, L, P, keep)
    before = _plain(blocks[:start], x)
    # kept tokens: blocks[start:end] on the kept subset only, then the rest on all tokens
    mid_kept = _plain(blocks[start:end], gather_tokens(before, index))
    ref = _plain(blocks[end:], scatter_tokens(before, mid_kept, index))
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    # dropped tokens: identity across the range, i.e. blocks[:start] then blocks[end:]
    mask = torch.zeros(B, L, dtype=torch.bool).scatter(1, index, True)
    skipped = _plain(blocks[end:], before)
    torch.testing.assert_close(y[~mask], skipped[~mask], rtol=1e-12, atol=1e-12)
    # kept tokens differ from the skip path (the blocks did something to them)
    assert not torch.allclose(y[mask], skipped[mask])


def test_random_ltd_subset_sees_only_kept_tokens():
    """Blocks in the range get (B, P + keep, D); outside it they get all L tokens."""
    lengths = []

    def block(x):
        lengths.append(x.shape[1])
        return x * 2

    x = torch.randn(2, 11, 3)
    torch.manual_seed(0)
    y, index = random_ltd_forward([block] * 5, x, 1, 4, keep=4, num_prefix_tokens=2)
    assert lengths == [11, 6, 6, 6, 11]
    mask = torch.zeros(2, 11, dtype=torch.bool).scatter(1, index, True)
    assert torch.equal(y[mask], x[mask] * 32) and torch.equal(y[~mask], x[~mask] * 4)


def test_gradients_flow():
    torch.manual_seed(0)
    x = torch.randn(2, 1 + 4 * 5, 8, dtype=torch.float64, requires_grad=True)
    for layer in (PatchDropout(0.5), StructuredPatchout((4, 5), drop_time=2, drop_freq=1)):
        out = layer(x)
        (grad,) = torch.autograd.grad(out.x.square().sum(), x)
        mask = torch.zeros(x.shape[:2], dtype=torch.bool).scatter(1, out.keep_index, True)
        torch.testing.assert_close(grad[mask], 2 * x.detach()[mask])
        assert (grad[~mask] == 0).all()
    blocks = _stack(4)
    layer = RandomLTD(blocks, 1, 3, keep=7)
    y, index = layer(x)
    y.sum().backward()
    assert x.grad is not None and (x.grad.abs().sum(-1) > 0).all()  # every token, kept or skipped
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in blocks.parameters())
    # a skipped token's gradient equals the one through blocks[:1] and blocks[3:] only
    mask = torch.zeros(x.shape[:2], dtype=torch.bool).scatter(1, index, True)
    x2 = x.detach().requires_grad_()
    _plain(blocks[3:], _plain(blocks[:1], x2)).sum().backward()
    torch.testing.assert_close(x.grad[~mask], x2.grad[~mask])


@pytest.mark.parametrize("P", [0, 1, 2])
@pytest.mark.parametrize("keep_rate", [0.05, 0.5, 1.0])
def test_patch_dropout_packed(P, keep_rate):
    torch.manual_seed(0)
    lengths = [P, P + 1, 7, 20, 3 + P]
    seqs = [torch.randn(n, 4, dtype=torch.float64) for n in lengths]
    batch = pack(seqs)
    layer = PatchDropout(keep_rate, num_prefix_tokens=P)
    x = batch.x.clone().requires_grad_()
    out, keep_index = layer.forward_packed(x, batch)
    assert keep_index.dtype == torch.int64 and (keep_index[1:] > keep_index[:-1]).all()
    assert torch.equal(out.x, batch.x[keep_index])
    assert torch.equal(out.position_ids, position_ids_from_cu_seqlens(out.cu_seqlens))
    assert out.max_seqlen == int(out.seqlens.max())
    # per sequence: the prefix and num_kept(L_i - P) others, drawn from that sequence only
    starts = batch.cu_seqlens[:-1].tolist()
    for i, (piece, n) in enumerate(zip(unpack(out.x, out.cu_seqlens), lengths)):
        assert piece.shape[0] == P + layer.num_kept(n - P)
        idx = keep_index[out.cu_seqlens[i] : out.cu_seqlens[i + 1]] - starts[i]
        assert torch.equal(idx[:P], torch.arange(P)) and (idx >= 0).all() and (idx < n).all()
        assert torch.equal(piece, seqs[i][idx])
        if n == 20 and keep_rate == 0.5:  # random, not the first ones: chance 1 / C(20 - P, 10 - P/2)
            assert not torch.equal(idx, torch.arange(idx.shape[0]))
    (grad,) = torch.autograd.grad(out.x.sum(), x)
    mask = torch.zeros(x.shape[0], dtype=torch.bool)
    mask[keep_index] = True
    assert (grad[mask] == 1).all() and (grad[~mask] == 0).all()
    layer.eval()
    out, keep_index = layer.forward_packed(batch.x, batch)
    assert out.x is batch.x and torch.equal(out.cu_seqlens, batch.cu_seqlens)
    assert torch.equal(keep_index, torch.arange(batch.num_tokens))


def test_patch_dropout_packed_bad_input():
    batch = pack([torch.randn(1, 3), torch.randn(4, 3)])
    with pytest.raises(ValueError, match=r"every sequence needs >= num_prefix_tokens=2 tokens, got lengths \[1, 4\]"):
        PatchDropout(0.5, num_prefix_tokens=2).forward_packed(batch.x, batch)
    with pytest.raises(ValueError, match=r"x must be packed \(T=5, D\)"):
        PatchDropout(0.5).forward_packed(batch.x[None], batch)
