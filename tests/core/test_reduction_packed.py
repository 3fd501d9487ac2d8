"""Packed input for ToMe, patch dropout, structured patchout and Random-LTD: packed == each sequence alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from longseq.core.packing import PackedBatch, pack, position_ids_from_cu_seqlens, segment_ids, segment_mean
from longseq.core.reduction import (
    PackedMerge,
    PatchDropout,
    RandomLTD,
    StructuredPatchout,
    TokenMerging,
    VarlenOutput,
    bipartite_soft_matching_packed,
    compose_merge_maps,
    gather_tokens,
    merge_wavg_packed,
    patch_dropout_packed,
    random_keep_index_packed,
    random_ltd_forward_packed,
    scatter_tokens,
    structured_patchout_packed,
    token_merging_packed,
    unmerge,
)


def _bounds(cu):
    cu = cu.tolist()
    return list(zip(cu[:-1], cu[1:]))


def _bad_batches(x):
    """Packed batches around ``x`` (T=7 tokens) whose boundaries are wrong, built unchecked."""
    T = x.shape[0]
    pos = torch.zeros(T, dtype=torch.int32)
    return [
        (PackedBatch(x, torch.tensor([0, 5, 3, 7], dtype=torch.int32), 7, pos, check=False), "non-decreasing"),
        (PackedBatch(x, torch.tensor([0, 3, 7]), 7, pos, check=False), "1-D int32"),
        (PackedBatch(x, torch.tensor([0, 3, 6], dtype=torch.int32), 7, pos, check=False), "must end at"),
        (PackedBatch(x, torch.tensor([1, 3, 7], dtype=torch.int32), 7, pos, check=False), "must start at 0"),
    ]


# --------------------------------------------------------------------------------------------
# ToMe
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("P", [0, 1, 3])
@pytest.mark.parametrize("r", [0, 1, 3, 100])
def test_tome_packed_equals_each_sequence_alone(P, r):
    torch.manual_seed(0)
    lengths = [P + 1, P + 2, P + 7, P + 20, P + 5]
    seqs = [torch.randn(n, 6, dtype=torch.float64) for n in lengths]
    sizes = [torch.rand(n, 1, dtype=torch.float64) + 0.5 for n in lengths]
    batch = pack(seqs)
    out = TokenMerging(r, num_prefix_tokens=P)(batch.x, sizes=torch.cat(sizes), packed=batch)
    assert isinstance(out, VarlenOutput) and out.keep_index is None and out.mask is None
    assert out.packed.x is out.x and out.merge_map.shape == (batch.num_tokens,)
    assert torch.equal(out.packed.position_ids, position_ids_from_cu_seqlens(out.packed.cu_seqlens))
    assert out.packed.max_seqlen == int(out.packed.seqlens.max())
    for i, ((a, e), (ia, ie)) in enumerate(zip(_bounds(out.packed.cu_seqlens), _bounds(batch.cu_seqlens))):
        alone = TokenMerging(r, num_prefix_tokens=P)(seqs[i][None], sizes=sizes[i][None])
        assert e - a == lengths[i] - min(r, (lengths[i] - P) // 2)  # the clipping rule, per sequence
        torch.testing.assert_close(out.x[a:e], alone.x[0])
        torch.testing.assert_close(out.sizes[a:e], alone.sizes[0])
        assert torch.equal(out.merge_map[ia:ie] - a, alone.merge_map[0])  # inside its own sequence
        torch.testing.assert_close(out.sizes[a:e].sum(), sizes[i].sum())
        # prefix untouched (x * size / size: exact up to the last bit; exact with unit sizes, see round trip)
        torch.testing.assert_close(out.x[a : a + P], seqs[i][:P], rtol=1e-15, atol=0)
        assert torch.equal(out.sizes[a : a + P], sizes[i][:P]) and torch.equal(
            out.merge_map[ia : ia + P] - a, torch.arange(P)
        )


def test_tome_packed_unit_sizes_sum_to_lengths_and_per_sequence_r():
    torch.manual_seed(1)
    lengths = [9, 1, 14, 6]
    batch = pack([torch.randn(n, 4) for n in lengths])
    r = [2, 5, 100, 0]
    out = token_merging_packed(batch.x, batch, r, num_prefix_tokens=1)
    expected = [n - min(ri, (n - 1) // 2) for n, ri in zip(lengths, r)]
    assert out.packed.seqlens.tolist() == expected
    seg = segment_ids(out.packed.cu_seqlens, out.x.shape[0])
    sums = torch.zeros(len(lengths)).index_add(0, seg, out.sizes[:, 0])
    assert sums.tolist() == [float(n) for n in lengths]
    for i, n in enumerate(lengths):
        if n == 1:  # only the prefix: the padded layer rejects it, the packed one keeps it
            assert torch.equal(out.x[out.packed.cu_seqlens[i]], batch.x[batch.cu_seqlens[i]])
            continue
        alone = TokenMerging(r[i])(batch.x[batch.cu_seqlens[i] : batch.cu_seqlens[i + 1]][None])
        a, e = out.packed.cu_seqlens[i : i + 2].tolist()
        torch.testing.assert_close(out.x[a:e], alone.x[0])


def test_tome_packed_prefix_only_and_empty_sequences_are_kept():
    for P, lengths in ((2, [2, 8, 2]), (0, [0, 6, 0, 3])):
        torch.manual_seed(2)
        batch = pack([torch.randn(n, 3) for n in lengths])
        out = TokenMerging(3, num_prefix_tokens=P)(batch.x, packed=batch)
        assert out.packed.seqlens.tolist() == [n - min(3, (n - P) // 2) for n in lengths]
        for (a, e), (ia, ie) in zip(_bounds(out.packed.cu_seqlens), _bounds(batch.cu_seqlens)):
            if ie - ia == P:
                assert torch.equal(out.x[a:e], batch.x[ia:ie])


def _with_duplicates(n_dup, n_rand, P, D=8):
    prefix = torch.randn(P, D)
    dup = torch.randn(n_dup, 1, D).expand(-1, 2, -1).reshape(2 * n_dup, D)
    return torch.cat([prefix, dup, torch.randn(2 * n_rand, D)])


def test_tome_packed_unmerge_round_trip_and_compose():
    torch.manual_seed(3)
    seqs = [_with_duplicates(4, 3, 1), _with_duplicates(2, 0, 1), _with_duplicates(6, 1, 1)]
    batch = pack(seqs)
    out = token_merging_packed(batch.x, batch, [4, 2, 6])  # r_i = the duplicated pairs of sequence i
    assert out.packed.seqlens.tolist() == [15 - 4, 5 - 2, 15 - 6]
    assert out.sizes.sum().item() == batch.num_tokens and int((out.sizes == 2).sum()) == 12
    torch.testing.assert_close(unmerge(out.x, out.merge_map), batch.x, rtol=0, atol=0)
    # unmerge per sequence: sequence i's outputs go back to sequence i's inputs only
    for (a, e), (ia, ie), s in zip(_bounds(out.packed.cu_seqlens), _bounds(batch.cu_seqlens), seqs):
        assert (out.merge_map[ia:ie] >= a).all() and (out.merge_map[ia:ie] < e).all()
        torch.testing.assert_close(unmerge(out.x[a:e][None], out.merge_map[ia:ie][None] - a)[0], s, rtol=0, atol=0)
    second = TokenMerging(2)(out.x, sizes=out.sizes, packed=out.packed)
    total = compose_merge_maps(out.merge_map, second.merge_map)
    assert torch.equal(total, second.merge_map[out.merge_map])
    sums = torch.zeros(second.x.shape[0], 8).index_add(0, total, batch.x)
    counts = torch.zeros(second.x.shape[0], 1).index_add(0, total, torch.ones(batch.num_tokens, 1))
    torch.testing.assert_close(counts, second.sizes)
    torch.testing.assert_close(sums / counts, second.x)


def test_tome_packed_never_merges_across_sequences():
    # sequence 1's tokens duplicate sequence 0's exactly; a cross-boundary merge would be the best match
    torch.manual_seed(4)
    s0 = torch.randn(7, 5)
    batch = pack([s0, s0.clone() * 1.0])
    merge = bipartite_soft_matching_packed(batch.x, batch, 3, num_prefix_tokens=1)
    assert isinstance(merge, PackedMerge) and merge.out_len == 8 and merge.r.tolist() == [3, 3]
    assert (merge.merge_map[:7] < 4).all() and (merge.merge_map[7:] >= 4).all()
    x, sizes = merge_wavg_packed(merge, batch.x)
    assert torch.equal(x[:4], x[4:]) and torch.equal(sizes[:4], sizes[4:])


def test_tome_packed_gradients_equal_per_sequence():
    torch.manual_seed(5)
    lengths = [6, 11, 3]
    seqs = [torch.randn(n, 4, dtype=torch.float64) for n in lengths]
    sizes = [torch.rand(n, 1, dtype=torch.float64) + 0.5 for n in lengths]
    batch = pack(seqs)
    x = batch.x.clone().requires_grad_()
    s = torch.cat(sizes).requires_grad_()
    merge = bipartite_soft_matching_packed(batch.x, batch, 2)
    torch.autograd.gradcheck(lambda a, b: merge_wavg_packed(merge, a, b), (x, s))
    w = torch.randn(4, dtype=torch.float64)
    out = token_merging_packed(x, batch, 2, sizes=s)
    gx, gs = torch.autograd.grad((out.x @ w).square().sum() + out.sizes.square().sum(), (x, s))
    for i, (ia, ie) in enumerate(_bounds(batch.cu_seqlens)):
        xi = seqs[i][None].clone().requires_grad_()
        si = sizes[i][None].clone().requires_grad_()
        alone = TokenMerging(2)(xi, sizes=si)
        ax, asz = torch.autograd.grad((alone.x @ w).square().sum() + alone.sizes.square().sum(), (xi, si))
        torch.testing.assert_close(gx[ia:ie], ax[0])
        torch.testing.assert_close(gs[ia:ie], asz[0])
    assert gx.abs().sum() > 0


def test_tome_packed_eval_deterministic_and_metric():
    torch.manual_seed(6)
    batch = pack([torch.randn(30, 8), torch.randn(17, 8)])
    x = batch.x.clone()
    x[5], x[9] = x[7], x[7]  # ties broken the same way every call
    layer = TokenMerging(7).eval()
    a, b = layer(x, packed=batch), layer(x.clone(), packed=batch)
    assert torch.equal(a.x, b.x) and torch.equal(a.sizes, b.sizes) and torch.equal(a.merge_map, b.merge_map)
    metric = torch.randn(batch.num_tokens, 3)
    out = layer(x, metric=metric, packed=batch)
    for (ia, ie), (a_, e_) in zip(_bounds(batch.cu_seqlens), _bounds(out.packed.cu_seqlens)):
        alone = layer(x[ia:ie][None], metric=metric[ia:ie][None])
        assert torch.equal(out.merge_map[ia:ie] - a_, alone.merge_map[0])
        torch.testing.assert_close(out.x[a_:e_], alone.x[0])


def test_tome_packed_bad_inputs():
    batch = pack([torch.randn(3, 4), torch.randn(4, 4)])
    for bad, msg in _bad_batches(batch.x):
        with pytest.raises(ValueError, match=msg):
            TokenMerging(1)(batch.x, packed=bad)
    with pytest.raises(ValueError, match=r"x must be packed \(T=7, D\), got shape \(1, 7, 4\)"):
        TokenMerging(1)(batch.x[None], packed=batch)
    with pytest.raises(ValueError, match=r"metric must be packed \(T=7, C\), got shape \(6, 4\)"):
        TokenMerging(1)(batch.x, metric=batch.x[:6], packed=batch)
    with pytest.raises(ValueError, match=r"sizes must have shape \(7, 1\), got \(7,\)"):
        TokenMerging(1)(batch.x, sizes=torch.ones(7), packed=batch)
    with pytest.raises(ValueError, match=r"every sequence needs >= num_prefix_tokens=4 tokens, got lengths \[3, 4\]"):
        TokenMerging(1, num_prefix_tokens=4)(batch.x, packed=batch)
    with pytest.raises(ValueError, match=r"r must be an int or 2 ints \(one per sequence\)"):
        token_merging_packed(batch.x, batch, [1, 2, 3])
    with pytest.raises(ValueError, match=r"r must be >= 0, got \[1, -1\]"):
        token_merging_packed(batch.x, batch, [1, -1])
    with pytest.raises(TypeError, match="packed must be a PackedBatch, got Tensor"):
        token_merging_packed(batch.x, batch.cu_seqlens, 1)
    merge = bipartite_soft_matching_packed(batch.x, batch, 1)
    with pytest.raises(ValueError, match=r"x must be packed \(T=7, D\)"):
        merge(batch.x[:5])
    with pytest.raises(ValueError, match="mode must be 'sum' or 'mean'"):
        merge(batch.x, mode="max")
    with pytest.raises(ValueError, match=r"merge_map must be int64 \(T,\)"):
        unmerge(batch.x, torch.zeros(7, dtype=torch.int32))


# --------------------------------------------------------------------------------------------
# patch dropout and structured patchout
# --------------------------------------------------------------------------------------------


def _check_selected(out, batch, P, expected_lengths):
    """Per sequence: prefix untouched, tokens = the sequence's own tokens at sorted local indices."""
    assert isinstance(out, VarlenOutput) and out.merge_map is None and out.mask is None
    assert out.packed.seqlens.tolist() == expected_lengths
    assert torch.equal(out.x, batch.x[out.keep_index]) and (out.sizes == 1).all()
    assert out.sizes.shape == (out.x.shape[0], 1)
    assert torch.equal(out.packed.position_ids, position_ids_from_cu_seqlens(out.packed.cu_seqlens))
    locals_ = []
    for (a, e), (ia, ie) in zip(_bounds(out.packed.cu_seqlens), _bounds(batch.cu_seqlens)):
        idx = out.keep_index[a:e] - ia
        assert (idx >= 0).all() and (idx < ie - ia).all() and (idx[1:] > idx[:-1]).all()
        assert torch.equal(idx[:P], torch.arange(P))
        assert torch.equal(out.x[a : a + P], batch.x[ia : ia + P])
        # the same as the padded layer's output for this sequence alone with this index
        assert torch.equal(out.x[a:e], gather_tokens(batch.x[ia:ie][None], idx[None])[0])
        locals_.append(idx)
    return locals_


@pytest.mark.parametrize("P", [0, 1, 2])
@pytest.mark.parametrize("keep_rate", [0.05, 0.5, 1.0])
def test_patch_dropout_packed_per_sequence(P, keep_rate):
    torch.manual_seed(7)
    lengths = [P, P + 1, 7 + P, 20 + P, 3 + P]
    batch = pack([torch.randn(n, 4, dtype=torch.float64) for n in lengths])
    layer = PatchDropout(keep_rate, num_prefix_tokens=P)
    x = batch.x.clone().requires_grad_()
    out = layer(x, packed=batch)
    _check_selected(out, batch, P, [P + layer.num_kept(n - P) for n in lengths])
    (grad,) = torch.autograd.grad(out.x.sum(), x)
    kept = torch.zeros(batch.num_tokens, dtype=torch.bool)
    kept[out.keep_index] = True
    assert (grad[kept] == 1).all() and (grad[~kept] == 0).all()
    # forward_packed is the same draw in its older (PackedBatch, keep_index) form
    torch.manual_seed(8)
    a = layer(batch.x, packed=batch)
    torch.manual_seed(8)
    b, b_index = layer.forward_packed(batch.x, batch)
    assert torch.equal(a.keep_index, b_index) and torch.equal(a.packed.cu_seqlens, b.cu_seqlens)


def test_patch_dropout_packed_random_per_sequence_and_eval_identity():
    batch = pack([torch.randn(33, 2), torch.randn(33, 2)])
    layer = PatchDropout(0.5)
    torch.manual_seed(9)
    idx = _check_selected(layer(batch.x, packed=batch), batch, 1, [17, 17])
    assert not torch.equal(idx[0], idx[1])  # independent draws: equal by chance with probability 1 / C(32, 16)
    layer.eval()
    for _ in range(2):
        out = layer(batch.x, packed=batch)
        assert out.x is batch.x and torch.equal(out.keep_index, torch.arange(66))
        assert torch.equal(out.packed.cu_seqlens, batch.cu_seqlens)


def test_random_keep_index_packed():
    torch.manual_seed(10)
    batch = pack([torch.randn(n, 1) for n in (4, 9, 2)])
    index = random_keep_index_packed(batch, [1, 5, 0], num_prefix_tokens=2)
    seg = segment_ids(batch.cu_seqlens)[index]
    assert torch.bincount(seg, minlength=3).tolist() == [3, 7, 2]
    assert torch.equal(batch.position_ids[index][[0, 1, 3, 4, 10, 11]], torch.tensor([0, 1, 0, 1, 0, 1]).int())
    with pytest.raises(ValueError, match=r"keep must be <= each sequence's non-prefix tokens \[2, 7, 0\]"):
        random_keep_index_packed(batch, [1, 8, 0], num_prefix_tokens=2)


@pytest.mark.parametrize("P", [0, 1, 2])
@pytest.mark.parametrize("drop_freq,drop_time", [(0, 2), (1, 1), (1, 0)])
def test_structured_patchout_packed_per_sequence_grids(P, drop_freq, drop_time):
    torch.manual_seed(11)
    grids = [(3, 4), (2, 5), (4, 4), (2, 3)]
    batch = pack([torch.randn(P + f * t, 3) for f, t in grids])
    layer = StructuredPatchout((3, 4), drop_time=drop_time, drop_freq=drop_freq, num_prefix_tokens=P)
    for how in ("layer", "function"):
        if how == "layer":
            out = layer(batch.x, packed=batch, grids=grids)
        else:
            out = structured_patchout_packed(batch.x, batch, torch.tensor(grids), drop_time, drop_freq, P)
        expected = [P + (f - drop_freq) * (t - drop_time) for f, t in grids]
        for idx, (f, t) in zip(_check_selected(out, batch, P, expected), grids):
            q = idx[P:] - P
            rows, cols = (q // t).unique(), (q % t).unique()
            assert len(rows) == f - drop_freq and len(cols) == t - drop_time
            # the kept set is the product of kept rows and kept columns of this sequence's grid, row-major
            assert torch.equal(q // t, rows.repeat_interleave(len(cols))) and torch.equal(q % t, cols.repeat(len(rows)))
    layer.eval()
    for _ in range(2):
        out = layer(batch.x, packed=batch, grids=grids)
        assert out.x is batch.x and torch.equal(out.keep_index, torch.arange(batch.num_tokens))


def test_structured_patchout_packed_default_grid_and_randomness():
    torch.manual_seed(12)
    batch = pack([torch.randn(1 + 24, 2) for _ in range(3)])
    layer = StructuredPatchout((4, 6), drop_time=3, drop_freq=2)
    seen = set()
    for _ in range(5):
        out = layer(batch.x, packed=batch)  # every sequence uses the layer's (4, 6) grid
        idx = _check_selected(out, batch, 1, [1 + 2 * 3] * 3)
        seen.update(tuple(i.tolist()) for i in idx)
    assert len(seen) > 1  # 15 equal draws out of C(4, 2) * C(6, 3) = 120 is impossible in practice


def test_drop_packed_bad_inputs():
    batch = pack([torch.randn(3, 4), torch.randn(4, 4)])
    for bad, msg in _bad_batches(batch.x):
        with pytest.raises(ValueError, match=msg):
            PatchDropout(0.5)(batch.x, packed=bad)
        with pytest.raises(ValueError, match=msg):
            StructuredPatchout((1, 2), 1, 0)(batch.x, packed=bad, grids=[(1, 2), (1, 3)])
        with pytest.raises(ValueError, match=msg):
            RandomLTD([_MixBlock(4)], 0, 1, keep=1)(batch.x, packed=bad)
    with pytest.raises(ValueError, match=r"x must be packed \(T=7, D\), got shape \(7,\)"):
        patch_dropout_packed(batch.x[:, 0], batch, 0.5)
    with pytest.raises(ValueError, match="keep_rate must be in"):
        patch_dropout_packed(batch.x, batch, 0.0)
    sp = StructuredPatchout((1, 2), drop_time=1, drop_freq=0)
    with pytest.raises(ValueError, match=r"packed sequence 1 has L_i - num_prefix_tokens = 4 - 1 = 3 tokens, expected"):
        sp(batch.x, packed=batch)  # the default grid (1, 2) does not fit the second sequence
    with pytest.raises(ValueError, match=r"grids must give one \(freq, time\) pair .* shape \(2, 2\)"):
        sp(batch.x, packed=batch, grids=[(1, 2)])
    with pytest.raises(ValueError, match=r"grids must give one \(freq, time\) pair of ints per packed sequence"):
        sp(batch.x, packed=batch, grids=[(1, 2), (1, 2, 3)])
    with pytest.raises(ValueError, match=r"every grid \(F_i, T_i\) must be positive"):
        sp(batch.x, packed=batch, grids=[(0, 2), (1, 3)])
    with pytest.raises(ValueError, match=r"drop_time must be in \[0, T_i\) for every sequence, got 1"):
        StructuredPatchout((2, 2), drop_time=1, drop_freq=0)(batch.x, packed=batch, grids=[(2, 1), (3, 1)])
    with pytest.raises(ValueError, match="grids is for packed input"):
        sp(torch.randn(1, 3, 4), grids=[(1, 2)])


# --------------------------------------------------------------------------------------------
# Random-LTD
# --------------------------------------------------------------------------------------------


class _MixBlock(nn.Module):
    """Mixes tokens within a sequence (its mean), so wrong boundaries change the result."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim, dtype=torch.float64)

    def forward(self, x, packed=None):
        if packed is None:  # padded (B, L, D)
            ctx = x.mean(1, keepdim=True).expand_as(x)
        else:
            ctx = segment_mean(x, packed.cu_seqlens)[segment_ids(packed.cu_seqlens, x.shape[0])]
        return x + torch.tanh(self.lin(x + ctx))


def _stack(n, dim=6):
    torch.manual_seed(0)
    return nn.ModuleList(_MixBlock(dim) for _ in range(n))


def _alone(blocks, x, start, end, idx):
    """Random-LTD on one padded sequence ``x`` ``(1, L, D)`` with the given keep index ``(1, K)``."""
    for block in blocks[:start]:
        x = block(x)
    sub = gather_tokens(x, idx)
    for block in blocks[start:end]:
        sub = block(sub)
    x = scatter_tokens(x, sub, idx)
    for block in blocks[end:]:
        x = block(x)
    return x


@pytest.mark.parametrize("start,end", [(0, 4), (1, 3), (1, 2)])
@pytest.mark.parametrize("P,keep", [(0, 1), (1, 3), (2, 5)])
def test_random_ltd_packed_equals_each_sequence_alone(start, end, P, keep):
    torch.manual_seed(13)
    blocks = _stack(4)
    lengths = [P + 9, P + 5, P + 12]
    seqs = [torch.randn(n, 6, dtype=torch.float64) for n in lengths]
    batch = pack(seqs)
    x = batch.x.clone().requires_grad_()
    y, index = RandomLTD(blocks, start, end, keep, num_prefix_tokens=P)(x, packed=batch)
    assert y.shape == batch.x.shape and index.dtype == torch.int64 and (index[1:] > index[:-1]).all()
    w = torch.randn(6, dtype=torch.float64)
    (gx,) = torch.autograd.grad((y @ w).square().sum(), x)
    seg = segment_ids(batch.cu_seqlens)[index]
    assert torch.bincount(seg, minlength=3).tolist() == [P + keep] * 3
    for i, (ia, ie) in enumerate(_bounds(batch.cu_seqlens)):
        idx = index[seg == i] - ia
        assert torch.equal(idx[:P], torch.arange(P))
        xi = seqs[i][None].clone().requires_grad_()
        ref = _alone(blocks, xi, start, end, idx[None])
        torch.testing.assert_close(y[ia:ie], ref[0], rtol=1e-12, atol=1e-12)
        (gi,) = torch.autograd.grad((ref @ w).square().sum(), xi)
        torch.testing.assert_close(gx[ia:ie], gi[0], rtol=1e-12, atol=1e-12)
    assert (gx.abs().sum(-1) > 0).all()  # kept and skipped tokens both get a gradient


def test_random_ltd_packed_blocks_see_subset_and_clip_keep():
    seen = []

    def block(x, packed):
        seen.append((x.shape[0], packed.seqlens.tolist()))
        return x * 2

    batch = pack([torch.randn(n, 3) for n in (11, 3, 1)])
    torch.manual_seed(14)
    y, index = random_ltd_forward_packed([block] * 4, batch.x, batch, 1, 3, keep=4, num_prefix_tokens=1)
    # sequence lengths 11, 3, 1 keep 1 + min(4, 10), 1 + min(4, 2), 1 + 0 tokens in the range
    assert seen == [(15, [11, 3, 1]), (9, [5, 3, 1]), (9, [5, 3, 1]), (15, [11, 3, 1])]
    mask = torch.zeros(15, dtype=torch.bool)
    mask[index] = True
    assert torch.equal(y[mask], batch.x[mask] * 16) and torch.equal(y[~mask], batch.x[~mask] * 4)


def test_random_ltd_packed_eval_and_keep_all_equal_plain_stack():
    torch.manual_seed(15)
    blocks = _stack(3)
    batch = pack([torch.randn(n, 6, dtype=torch.float64) for n in (7, 4)])
    ref = batch.x
    for block in blocks:
        ref = block(ref, packed=batch)
    layer = RandomLTD(blocks, 0, 2, keep=3).eval()
    for _ in range(2):
        y, index = layer(batch.x, packed=batch)
        assert torch.equal(y, ref) and torch.equal(index, torch.arange(11))
    y, index = RandomLTD(blocks, 0, 2, keep=6).train()(batch.x, packed=batch)  # keep >= every sequence's tokens
    assert torch.equal(y, ref) and torch.equal(index, torch.arange(11))


def test_random_ltd_packed_bad_arguments():
    batch = pack([torch.randn(3, 6, dtype=torch.float64)])
    with pytest.raises(ValueError, match="need 0 <= start <= end <= len"):
        random_ltd_forward_packed(_stack(2), batch.x, batch, 1, 3, keep=1)
    with pytest.raises(ValueError, match="keep must be an int >= 1, got 0"):
        random_ltd_forward_packed(_stack(2), batch.x, batch, 0, 1, keep=0)
    with pytest.raises(ValueError, match=r"every sequence needs >= num_prefix_tokens=4 tokens"):
        random_ltd_forward_packed(_stack(2), batch.x, batch, 0, 1, keep=1, num_prefix_tokens=4)
