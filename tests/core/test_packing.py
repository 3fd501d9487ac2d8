"""Packing: the PackedBatch convention, converters, segment ops, bin packing, sampler, collate, stream."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from longseq.core.packing import (
    PackedBatch,
    PackedCollate,
    PackedStream,
    TokenBudgetBatchSampler,
    cu_seqlens_from_lengths,
    first_fit_decreasing,
    mask_prefix,
    next_token_labels,
    pack,
    packed_to_pad,
    packing_stats,
    pad_to_packed,
    position_ids_from_cu_seqlens,
    segment_mean,
    segment_softmax,
    segment_sum,
    stream_pack,
    unpack,
    validate_cu_seqlens,
)

LENGTHS = st.lists(st.integers(0, 12), min_size=1, max_size=8)
FAST = settings(max_examples=40, deadline=None)


def _seqs(lengths, trailing=(3,), dtype=torch.float32):
    return [torch.randn(n, *trailing).to(dtype) for n in lengths]


# ------------------------------------------------------------------ PackedBatch and converters


@FAST
@given(lengths=LENGTHS, trailing=st.sampled_from([(), (1,), (3,), (2, 5)]))
def test_pack_unpack_round_trip(lengths, trailing):
    seqs = _seqs(lengths, trailing)
    b = pack(seqs)
    assert b.x.shape == (sum(lengths), *trailing)
    assert b.cu_seqlens.dtype == torch.int32 and b.cu_seqlens.tolist() == [0, *itertools_accumulate(lengths)]
    assert b.max_seqlen == max(lengths) and b.num_seqs == len(lengths)
    assert b.seqlens.tolist() == lengths
    assert b.position_ids.tolist() == [p for n in lengths for p in range(n)]
    back = unpack(b)
    assert len(back) == len(seqs) and all(torch.equal(a, s) for a, s in zip(back, seqs))


def itertools_accumulate(lengths):
    out, total = [], 0
    for n in lengths:
        total += n
        out.append(total)
    return out


@FAST
@given(lengths=LENGTHS, pad_extra=st.integers(0, 3), pad_value=st.sampled_from([0.0, -1.5]))
def test_pad_packed_round_trip(lengths, pad_extra, pad_value):
    seqs = _seqs(lengths)
    b = pack(seqs)
    padded, mask = packed_to_pad(b, max_len=max(lengths) + pad_extra, pad_value=pad_value)
    assert padded.shape == (len(lengths), max(lengths) + pad_extra, 3)
    assert mask.sum(1).tolist() == lengths
    assert bool((padded[~mask] == pad_value).all())
    for i, s in enumerate(seqs):
        assert torch.equal(padded[i, : len(s)], s)
    again = pad_to_packed(padded, mask)
    assert torch.equal(again.x, b.x) and torch.equal(again.cu_seqlens, b.cu_seqlens)
    assert torch.equal(again.position_ids, b.position_ids) and again.max_seqlen == b.max_seqlen
    by_len = pad_to_packed(padded, lengths=torch.tensor(lengths))
    assert torch.equal(by_len.x, b.x) and torch.equal(by_len.cu_seqlens, b.cu_seqlens)


def test_pad_to_packed_left_padding_and_tensor_form():
    x = torch.arange(12.0).view(2, 6, 1)
    mask = torch.tensor([[False, False, True, True, True, True], [False, False, False, False, True, True]])
    b = pad_to_packed(x, mask)
    assert b.x.flatten().tolist() == [2, 3, 4, 5, 10, 11]
    assert b.cu_seqlens.tolist() == [0, 4, 6]
    padded, m = packed_to_pad(b.x, b.cu_seqlens)  # tensor + cu_seqlens form, right-padded
    assert padded[1, :2].flatten().tolist() == [10, 11] and m.sum(1).tolist() == [4, 2]


def test_packed_to_pad_is_differentiable():
    b = pack(_seqs([3, 1, 4]))
    x = b.x.clone().requires_grad_()
    padded, mask = packed_to_pad(x, b.cu_seqlens, max_len=6)
    (padded * torch.arange(6.0)[None, :, None]).sum().backward()
    assert torch.equal(x.grad[:, 0], b.position_ids.float())


def test_converters_reject_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        pack([])
    with pytest.raises(ValueError, match="sequence 1 is"):
        pack([torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="labels\\[0\\]"):
        pack([torch.zeros(2, 3)], [torch.zeros(3)])
    with pytest.raises(ValueError, match="exactly one"):
        pad_to_packed(torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match="lie in"):
        pad_to_packed(torch.zeros(2, 3, 1), lengths=torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="would cut"):
        packed_to_pad(pack(_seqs([3, 5])), max_len=4)
    with pytest.raises(ValueError, match="cu_seqlens is required"):
        unpack(torch.zeros(3))


@pytest.mark.parametrize(
    ("cu", "msg"),
    [
        (torch.tensor([0, 2, 5]), "int32"),
        (torch.tensor([1, 2, 5], dtype=torch.int32), "start at 0"),
        (torch.tensor([0, 2, 4], dtype=torch.int32), "end at total tokens 5, got 4"),
        (torch.tensor([0, 3, 2, 5], dtype=torch.int32), "non-decreasing"),
    ],
)
def test_validate_cu_seqlens_errors(cu, msg):
    with pytest.raises(ValueError, match=msg):
        validate_cu_seqlens(cu, 5)
    with pytest.raises(ValueError, match=msg):
        PackedBatch(torch.zeros(5, 2), cu, 5, torch.zeros(5, dtype=torch.int32))


def test_packed_batch_validation_and_helpers():
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    pos = position_ids_from_cu_seqlens(cu)
    assert pos.tolist() == [0, 1, 0, 1, 2]
    assert torch.equal(cu_seqlens_from_lengths(torch.tensor([2, 3])), cu)
    with pytest.raises(ValueError, match="position_ids must have shape"):
        PackedBatch(torch.zeros(5, 2), cu, 3, pos[:4])
    with pytest.raises(ValueError, match="int32"):
        PackedBatch(torch.zeros(5, 2), cu, 3, pos.long())
    with pytest.raises(ValueError, match="longest sequence 3, got 2"):
        PackedBatch(torch.zeros(5, 2), cu, 2, pos)
    with pytest.raises(TypeError, match="Python int"):
        PackedBatch(torch.zeros(5, 2), cu, torch.tensor(3), pos)
    with pytest.raises(ValueError, match="labels must have leading size"):
        PackedBatch(torch.zeros(5, 2), cu, 3, pos, labels=torch.zeros(3))
    with pytest.raises(ValueError, match="is on cpu but x is on meta"):
        PackedBatch(torch.zeros(5, 2, device="meta"), cu, 3, pos)
    b = PackedBatch(torch.zeros(5, 2), cu, 3, pos, labels=torch.zeros(2))  # per-sequence labels
    y = b.with_x(torch.ones(5, 7))
    assert y.x.shape == (5, 7) and y.cu_seqlens is cu and y.labels is b.labels
    with pytest.raises(ValueError, match="total token count 5"):
        b.with_x(torch.ones(4, 2))


def test_packed_batch_moves_like_a_lightning_batch():
    from lightning.fabric.utilities.apply_func import move_data_to_device

    b = pack(_seqs([2, 3]), [torch.arange(2), torch.arange(3)])
    moved = move_data_to_device({"batch": b}, torch.device("cpu"))["batch"]
    assert isinstance(moved, PackedBatch) and torch.equal(moved.labels, b.labels)
    meta = b.to("meta")
    assert meta.x.device.type == "meta" and meta.cu_seqlens.dtype == torch.int32 and meta.max_seqlen == 3


# ------------------------------------------------------------------ segment ops and loss masks


@FAST
@given(lengths=LENGTHS)
def test_segment_ops_match_per_sequence(lengths):
    seqs = _seqs(lengths, (2,), torch.float64)
    b = pack(seqs)
    sums, means, soft = (
        segment_sum(b.x, b.cu_seqlens),
        segment_mean(b.x, b.cu_seqlens),
        segment_softmax(b.x, b.cu_seqlens),
    )
    for i, s in enumerate(seqs):
        torch.testing.assert_close(sums[i], s.sum(0))
        torch.testing.assert_close(means[i], s.mean(0) if len(s) else torch.zeros(2, dtype=torch.float64))
        torch.testing.assert_close(unpack(soft, b.cu_seqlens)[i], s.softmax(0))


def test_segment_mean_mask_and_softmax_gradient():
    b = pack(_seqs([3, 2, 4], (1,), torch.float64))
    mask = torch.tensor([1, 0, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    m = segment_mean(b.x, b.cu_seqlens, mask=mask)
    torch.testing.assert_close(m[0], b.x[[0, 2]].mean(0))
    torch.testing.assert_close(m[2], torch.zeros(1, dtype=torch.float64))  # no counted token
    x = b.x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: segment_softmax(t, b.cu_seqlens), (x,))


@FAST
@given(lengths=LENGTHS)
def test_next_token_labels_never_cross_a_boundary(lengths):
    ids = [torch.randint(0, 50, (n,)) for n in lengths]
    b = pack(ids)
    got = unpack(next_token_labels(b.x, b.cu_seqlens), b.cu_seqlens)
    for g, s in zip(got, ids):
        assert g.tolist() == s[1:].tolist() + ([-100] if len(s) else [])
    padded, _ = packed_to_pad(b, pad_value=7, max_len=max(lengths) + 1)
    shifted = next_token_labels(padded.long(), ignore_index=-1)
    assert shifted.shape == padded.shape
    assert bool((shifted[:, -1] == -1).all()) and torch.equal(shifted[:, :-1], padded[:, 1:].long())


def test_mask_prefix_masks_prompts_per_sequence():
    b = pack([torch.arange(3), torch.arange(2), torch.arange(4)])
    out = mask_prefix(b.x, b.cu_seqlens, torch.tensor([1, 2, 0]), ignore_index=-1)
    assert out.tolist() == [-1, 1, 2, -1, -1, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="prefix_lengths must have shape"):
        mask_prefix(b.x, b.cu_seqlens, torch.tensor([1]))


# ------------------------------------------------------------------ bin packing


def _check_bins(bins, lengths, budget, max_per_bin=None):
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(len(lengths))), "every sequence exactly once"
    assert all(sum(lengths[i] for i in b) <= budget for b in bins)
    if max_per_bin is not None:
        assert all(len(b) <= max_per_bin for b in bins)


@FAST
@given(
    lengths=st.lists(st.integers(0, 64), max_size=60),
    budget=st.integers(64, 200),
    max_per_bin=st.one_of(st.none(), st.integers(1, 6)),
)
def test_first_fit_decreasing_properties(lengths, budget, max_per_bin):
    bins = first_fit_decreasing(lengths, budget, max_per_bin=max_per_bin)
    _check_bins(bins, lengths, budget, max_per_bin)
    if max_per_bin is None and len(bins) > 1:
        # first fit: a bin's first item did not fit any earlier bin, so any two bins hold more than the
        # budget together; hence at most one bin is half empty and bins < 2 * tokens / budget + 1
        fills = sorted(sum(lengths[i] for i in b) for b in bins)
        assert fills[0] + fills[1] > budget


def test_first_fit_decreasing_example_and_oversize():
    assert first_fit_decreasing([5, 3, 7, 2, 2, 8, 1], 10) == [[5, 3], [2, 1], [0, 4, 6]]
    assert first_fit_decreasing([], 10) == []
    with pytest.raises(ValueError, match="sequence 2 has 11 tokens, more than the budget of 10"):
        first_fit_decreasing([3, 4, 11], 10)
    with pytest.raises(ValueError, match="positive int"):
        first_fit_decreasing([3], 0)


@FAST
@given(
    lengths=st.lists(st.integers(1, 40), max_size=50),
    buffer_size=st.integers(1, 12),
    max_per_bin=st.one_of(st.none(), st.integers(1, 5)),
)
def test_stream_pack_properties(lengths, buffer_size, max_per_bin):
    items = list(enumerate(lengths))
    bins = list(stream_pack(iter(items), 64, length=lambda it: it[1], buffer_size=buffer_size, max_per_bin=max_per_bin))
    _check_bins([[i for i, _ in b] for b in bins], lengths, 64, max_per_bin)
    if buffer_size == 1:  # next-fit keeps the stream's order
        assert [i for b in bins for i, _ in b] == list(range(len(lengths)))


def test_stream_pack_is_lazy_and_reports_oversize():
    def source():
        yield from [4, 4, 4]
        raise AssertionError("read past what was needed")

    first = next(stream_pack(source(), 8, length=lambda n: n))
    assert first == [4, 4]
    with pytest.raises(ValueError, match="item 1 of the stream has 9 tokens"):
        list(stream_pack([3, 9], 8, length=lambda n: n))


def test_padding_efficiency_report():
    lengths = [8, 8, 4, 4, 2, 2]
    stats = packing_stats([[0, 1], [2, 3, 4, 5]], lengths, layout="packed", budget=16)
    assert (stats.tokens, stats.slots, stats.padding, stats.num_batches) == (28, 32, 4, 2)
    assert stats.efficiency == pytest.approx(28 / 32) and stats.min_fill == pytest.approx(12 / 16)
    padded = packing_stats([[0, 2], [1, 3, 4, 5]], lengths, layout="padded")
    assert padded.slots == 2 * 8 + 4 * 8 and "efficiency 58.3%" in str(padded)
    with pytest.raises(ValueError, match="needs the budget"):
        packing_stats([[0]], lengths)


def test_ffd_beats_padding_on_long_tailed_lengths():
    """The numbers the docs quote: lognormal lengths, budget 4096 tokens per batch."""
    rng = random.Random(0)
    lengths = [min(4096, int(rng.lognormvariate(5.5, 1.0)) + 1) for _ in range(2000)]
    ffd = TokenBudgetBatchSampler(lengths, 4096, seed=0).stats()
    naive = [list(range(i, min(i + 16, len(lengths)))) for i in range(0, len(lengths), 16)]
    padded = packing_stats(naive, lengths, layout="padded")
    bucketed = TokenBudgetBatchSampler(lengths, 4096, layout="padded", seed=0).stats()
    assert ffd.efficiency > 0.97, str(ffd)
    assert padded.efficiency < 0.4, str(padded)
    assert bucketed.efficiency > 0.9, str(bucketed)


# ------------------------------------------------------------------ sampler


@FAST
@given(
    lengths=st.lists(st.integers(1, 50), min_size=1, max_size=80),
    window=st.one_of(st.none(), st.integers(1, 30)),
    layout=st.sampled_from(["packed", "padded"]),
    shuffle=st.booleans(),
    epoch=st.integers(0, 3),
)
def test_sampler_covers_every_index_once_per_epoch(lengths, window, layout, shuffle, epoch):
    s = TokenBudgetBatchSampler(lengths, 64, layout=layout, window=window, shuffle=shuffle, seed=3)
    s.set_epoch(epoch)
    batches = list(s)
    assert len(batches) == len(s)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        cost = sum(lengths[i] for i in b) if layout == "packed" else len(b) * max(lengths[i] for i in b)
        assert cost <= 64


def test_sampler_is_deterministic_and_reshuffles_per_epoch():
    lengths = [random.Random(1).randint(1, 100) for _ in range(300)]
    a, b = (
        TokenBudgetBatchSampler(lengths, 256, seed=5, window=50),
        TokenBudgetBatchSampler(lengths, 256, seed=5, window=50),
    )
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    c = TokenBudgetBatchSampler(lengths, 256, seed=6, window=50)
    assert list(c) != first


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("replicas", [2, 3])
def test_sampler_splits_batches_between_ranks(replicas, drop_last):
    lengths = [random.Random(2).randint(1, 60) for _ in range(101)]
    ranks = [
        TokenBudgetBatchSampler(lengths, 128, num_replicas=replicas, rank=r, drop_last=drop_last)
        for r in range(replicas)
    ]
    per_rank = [list(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1, "every rank runs the same number of steps"
    assert all(len(s) == len(b) for s, b in zip(ranks, per_rank))
    seen = [i for batches in per_rank for b in batches for i in b]
    total = len(ranks[0].all_batches())
    if drop_last:
        assert len(per_rank[0]) == total // replicas and len(seen) == len(set(seen))
    else:
        assert set(seen) == set(range(len(lengths))) and len(per_rank[0]) == math.ceil(total / replicas)
    with pytest.raises(ValueError, match="rank < num_replicas"):
        TokenBudgetBatchSampler(lengths, 128, num_replicas=2, rank=2)


def test_sampler_rejects_oversize_and_bad_args():
    with pytest.raises(ValueError, match="sequence 1 has 300 tokens"):
        TokenBudgetBatchSampler([10, 300], 256)
    with pytest.raises(ValueError, match="sequence 0 has 300 tokens"):
        TokenBudgetBatchSampler([300], 256, layout="padded")
    with pytest.raises(ValueError, match="layout"):
        TokenBudgetBatchSampler([3], 256, layout="ragged")
    s = TokenBudgetBatchSampler([5] * 10, 100, max_batch_size=3, shuffle=False)
    assert [len(b) for b in s] == [3, 3, 3, 1]


# ------------------------------------------------------------------ collate and stream


def test_collate_example_forms():
    c = PackedCollate()
    plain = c([torch.arange(3), torch.arange(2)])
    assert plain.labels is None and plain.cu_seqlens.tolist() == [0, 3, 5]
    token = c([{"input_ids": torch.arange(3), "labels": torch.arange(3) + 10}, {"input_ids": [4, 5], "labels": [6, 7]}])
    assert token.labels.tolist() == [10, 11, 12, 6, 7] and token.x.tolist() == [0, 1, 2, 4, 5]
    seq = c([(torch.randn(3, 2), 1), (torch.randn(5, 2), 0)])
    assert seq.labels.tolist() == [1, 0] and seq.x.shape == (8, 2)
    forced = PackedCollate(labels="sequence")([(torch.arange(2), torch.tensor([1.0, 2.0]))])
    assert forced.labels.shape == (1, 2)
    assert PackedCollate(labels="none")([(torch.arange(2), 1)]).labels is None
    with pytest.raises(ValueError, match="some examples have labels"):
        c([(torch.arange(2), 1), torch.arange(2)])
    with pytest.raises(ValueError, match="mix per-token and per-sequence"):
        c([(torch.arange(2), torch.arange(2)), (torch.arange(2), 1)])
    with pytest.raises(KeyError, match="no input key 'input_ids'"):
        c([{"x": torch.arange(2)}])
    with pytest.raises(ValueError, match="labels must be"):
        PackedCollate(labels="tokens")


def test_dataloader_with_sampler_and_collate():
    lengths = [random.Random(3).randint(1, 30) for _ in range(40)]
    data = [{"input_ids": torch.full((n,), i), "labels": torch.full((n,), i)} for i, n in enumerate(lengths)]
    sampler = TokenBudgetBatchSampler(lengths, 64, seed=0)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=PackedCollate())
    seen = []
    for batch in loader:
        assert isinstance(batch, PackedBatch) and batch.num_tokens <= 64
        assert torch.equal(batch.x, batch.labels)
        seen += [int(s[0]) for s in unpack(batch)]
    assert sorted(seen) == list(range(40))


def test_packed_stream_shards_workers_and_ranks():
    data = [torch.full((n,), i) for i, n in enumerate([5, 9, 3, 7, 2, 8, 6, 4, 1, 9, 3])]
    seen = []
    for rank in range(2):
        stream = PackedStream(data, 12, collate=PackedCollate(), num_replicas=2, rank=rank, buffer_size=3)
        loader = DataLoader(stream, batch_size=None, num_workers=2)
        for batch in loader:
            assert isinstance(batch, PackedBatch) and batch.num_tokens <= 12
            seen += [int(s[0]) for s in unpack(batch)]
    assert sorted(seen) == list(range(len(data))), "every example exactly once over ranks and workers"
    plain = list(PackedStream(data, 12))
    assert [len(x) for b in plain for x in b] == [len(d) for d in data]
    keyed = [{"tokens": d} for d in data]
    batches = list(PackedStream(keyed, 12, collate=PackedCollate(input_key="tokens")))
    assert sum(b.num_tokens for b in batches) == sum(len(d) for d in data)
