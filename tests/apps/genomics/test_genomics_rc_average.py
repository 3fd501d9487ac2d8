"""Reverse-complement batches and strand-averaged evaluation of the classifier."""

from __future__ import annotations

import torch

from longseq.apps.genomics import ClassificationModule, DNATokenizer
from longseq.apps.genomics.collate import reverse_complement_batch
from longseq.core.packing import pack

TOK = DNATokenizer()
SEQS = ["ACGTTGCA", "AAACCG", "GATTACAGATTACA"]


def _packed():
    return pack([torch.as_tensor(TOK.encode(s), dtype=torch.long) for s in SEQS], labels=torch.tensor([0, 1, 1]))


def _rc(seq: str) -> str:
    return seq[::-1].translate(str.maketrans("ACGT", "TGCA"))


def test_packed_reverse_complement_is_per_sequence() -> None:
    batch = _packed()
    rc = reverse_complement_batch(batch)
    got = [TOK.decode(x) for x in torch.split(rc.x, [len(s) for s in SEQS])]
    assert got == [_rc(s) for s in SEQS]
    assert torch.equal(rc.cu_seqlens, batch.cu_seqlens) and torch.equal(rc.labels, batch.labels)
    assert torch.equal(reverse_complement_batch(rc).x, batch.x)  # an involution


def test_padded_reverse_complement_keeps_padding() -> None:
    ids, _mask = TOK.encode_batch(SEQS[:2])  # (2, L) right-padded
    rc = reverse_complement_batch({"input_ids": ids, "labels": torch.tensor([0, 1])})
    assert rc["input_ids"].shape == ids.shape
    assert (rc["input_ids"] == TOK.pad_id).sum() == (ids == TOK.pad_id).sum()
    assert TOK.decode(rc["input_ids"][1]) == _rc(SEQS[1])


def test_rc_average_is_the_mean_of_both_strands_and_strand_symmetric(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # plain CPU tensors: the torch paths (the kernels have their own tests)
    torch.manual_seed(0)
    kw = dict(backbone="hyena_dna_tiny", backbone_kwargs={"max_len": 64, "dim": 32}, num_classes=2)
    plain = ClassificationModule(**kw).eval()
    avg = ClassificationModule(**kw, rc_average=True).eval()
    avg.load_state_dict(plain.state_dict())
    batch = _packed()
    with torch.no_grad():
        p_fwd = plain.eval_probs(batch)
        p_rev = plain.eval_probs(reverse_complement_batch(batch))
        p_avg = avg.eval_probs(batch)
        assert not torch.allclose(p_fwd, p_rev, atol=1e-4)  # a causal model is not strand-symmetric
        torch.testing.assert_close(p_avg, 0.5 * (p_fwd + p_rev))
        torch.testing.assert_close(avg.eval_probs(reverse_complement_batch(batch)), p_avg)
