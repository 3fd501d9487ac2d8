"""DNATokenizer (ids, round trips, errors) and reverse complement of strings and token ids."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longseq.apps.genomics import DNATokenizer, SequenceError, reverse_complement

TOK = DNATokenizer()
dna = st.text(alphabet="ACGTN", max_size=300)
dna_any_case = st.text(alphabet="ACGTNacgtn", max_size=300)
iupac_any_case = st.text(alphabet="ACGTNRYSWKMBDHVacgtnryswkmbdhv", max_size=200)
flags = st.booleans()
SLOW_OK = settings(deadline=None, max_examples=60)


def test_vocabulary_ids_are_fixed():
    assert TOK.vocab == {
        "[PAD]": 0,
        "[BOS]": 1,
        "[EOS]": 2,
        "[MASK]": 3,
        "[CLS]": 4,
        "N": 5,
        "A": 6,
        "C": 7,
        "G": 8,
        "T": 9,
    }
    assert (TOK.pad_id, TOK.bos_id, TOK.eos_id, TOK.mask_id, TOK.cls_id, TOK.n_id) == (0, 1, 2, 3, 4, 5)
    assert TOK.vocab_size == 10
    assert TOK.token_to_id("a") == TOK.token_to_id("A") == 6
    assert TOK.id_to_token(9) == "T"
    with pytest.raises(KeyError, match="unknown token 'X'"):
        TOK.token_to_id("X")
    with pytest.raises(KeyError, match=r"\[0, 10\)"):
        TOK.id_to_token(10)


def test_encode_known_values_and_specials_order():
    assert TOK.encode("NACGT").tolist() == [5, 6, 7, 8, 9]
    assert TOK.encode("acgtn").tolist() == [6, 7, 8, 9, 5]  # soft-masked = same ids
    ids = TOK.encode("AC", add_cls=True, add_bos=True, add_eos=True)
    assert ids.tolist() == [4, 1, 6, 7, 2]
    assert ids.dtype == torch.long
    assert TOK.encode("ACGT", dtype=torch.uint8).dtype == torch.uint8
    assert TOK.decode(ids, skip_special_tokens=False) == "[CLS][BOS]AC[EOS]"
    assert TOK.decode(ids) == "AC"
    assert TOK.decode([]) == ""


@SLOW_OK
@given(dna, flags, flags, flags)
def test_round_trip(seq, add_cls, add_bos, add_eos):
    ids = TOK.encode(seq, add_cls=add_cls, add_bos=add_bos, add_eos=add_eos)
    assert ids.shape == (len(seq) + add_cls + add_bos + add_eos,)
    assert TOK.decode(ids) == seq
    assert TOK.decode(ids.numpy()) == seq
    assert TOK.decode(ids.tolist()) == seq


@SLOW_OK
@given(dna_any_case)
def test_lowercase_encodes_like_uppercase(seq):
    assert torch.equal(TOK.encode(seq), TOK.encode(seq.upper()))
    assert TOK.decode(TOK.encode(seq)) == seq.upper()


@SLOW_OK
@given(st.lists(dna, min_size=1, max_size=8), flags, flags)
def test_encode_batch_matches_single_encodes(seqs, add_bos, add_eos):
    ids, mask = TOK.encode_batch(seqs, add_bos=add_bos, add_eos=add_eos)
    width = max(len(s) for s in seqs) + add_bos + add_eos
    assert ids.shape == mask.shape == (len(seqs), width)
    for row, m, seq in zip(ids, mask, seqs):
        single = TOK.encode(seq, add_bos=add_bos, add_eos=add_eos)
        assert int(m.sum()) == single.numel()
        assert torch.equal(row[: single.numel()], single)
        assert bool((row[single.numel() :] == TOK.pad_id).all())
        assert not bool(m[single.numel() :].any())
    assert TOK.decode_batch(ids, mask) == list(seqs)
    assert TOK.decode_batch(ids) == list(seqs)  # pads are special tokens, skipped


def test_encode_errors_name_position_and_sequence():
    with pytest.raises(SequenceError, match=r"cannot encode 'R' at position 4 \(1-based\).*map IUPAC codes to N"):
        TOK.encode("ACGRT")
    with pytest.raises(SequenceError, match=r"'X' at sequence 2, position 3"):
        TOK.encode_batch(["ACGT", "", "AAX"])
    with pytest.raises(SequenceError, match=r"cannot encode position 3 \(1-based\): non-ASCII character 'é'"):
        TOK.encode("ACé")
    with pytest.raises(ValueError, match="at least one sequence"):
        TOK.encode_batch([])


def test_decode_errors():
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\), got 10"):
        TOK.decode([6, 10])
    with pytest.raises(ValueError, match=r"-1"):
        TOK.decode([-1])
    with pytest.raises(ValueError, match="use decode_batch"):
        TOK.decode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(B, L\)"):
        TOK.decode_batch(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        TOK.decode_batch(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool))


def test_encode_many_boundaries():
    flat, offsets = TOK.encode_many(["AC", "", "GTN"])
    assert flat.dtype == torch.uint8
    assert offsets.tolist() == [0, 2, 2, 5]
    assert TOK.decode(flat[offsets[2] : offsets[3]]) == "GTN"


# ---------------------------------------------------------------- reverse complement


def test_reverse_complement_strings_known_values():
    assert reverse_complement("ACGTN") == "NACGT"
    assert reverse_complement("AAACCG") == "CGGTTT"
    assert reverse_complement("aCgTn") == "nAcGt"  # case kept
    # IUPAC: R(AG)<->Y(CT), K(GT)<->M(AC), B(CGT)<->V(ACG), D(AGT)<->H(ACT), S and W self-complementary.
    assert reverse_complement("RYKMBVDHSW") == "WSDHBVKMRY"
    assert reverse_complement("") == ""


@SLOW_OK
@given(iupac_any_case)
def test_reverse_complement_string_is_an_involution(seq):
    once = reverse_complement(seq)
    assert len(once) == len(seq)
    assert reverse_complement(once) == seq


def test_complement_id_table():
    table = TOK.complement_ids
    for base, comp in zip("ACGTN", "TGCAN"):
        assert int(table[TOK.vocab[base]]) == TOK.vocab[comp]
    for special in TOK.special_ids:
        assert int(table[special]) == special


@SLOW_OK
@given(st.lists(dna, min_size=1, max_size=6), flags, flags, flags)
def test_reverse_complement_ids_matches_strings_and_keeps_specials(seqs, add_cls, add_bos, add_eos):
    ids, mask = TOK.encode_batch(seqs, add_cls=add_cls, add_bos=add_bos, add_eos=add_eos)
    rc = TOK.reverse_complement_ids(ids)
    assert rc.dtype == ids.dtype and rc.shape == ids.shape
    assert TOK.decode_batch(rc, mask) == [reverse_complement(s) for s in seqs]
    special = ids < len(TOK.special_ids)
    assert torch.equal(rc[special], ids[special])  # specials (and padding) stay where they were
    assert torch.equal(TOK.reverse_complement_ids(rc), ids)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.long])
def test_reverse_complement_ids_dtypes_and_leading_dims(dtype):
    seq = "ACGTTNAGC"
    ids = TOK.encode(seq, dtype=dtype)
    rc = TOK.reverse_complement_ids(ids)
    assert rc.dtype == dtype
    assert TOK.decode(rc) == reverse_complement(seq)
    batch = torch.stack([ids, TOK.encode(seq[::-1], dtype=dtype)]).view(2, 1, -1)  # (2, 1, L)
    rc3 = TOK.reverse_complement_ids(batch)
    assert torch.equal(rc3[0, 0], rc)
    assert TOK.decode(rc3[1, 0]) == reverse_complement(seq[::-1])


def test_reverse_complement_ids_special_tokens_inside_row():
    ids = torch.tensor([TOK.cls_id, 6, 7, TOK.mask_id, 8, 9, 9, TOK.eos_id, TOK.pad_id])  # [CLS] A C [MASK] G T T [EOS]
    rc = TOK.reverse_complement_ids(ids)
    # bases ACGTT -> AACGT placed back into the base positions, specials fixed
    assert rc.tolist() == [TOK.cls_id, 6, 6, TOK.mask_id, 7, 8, 9, TOK.eos_id, TOK.pad_id]


def test_reverse_complement_ids_rejects_floats():
    with pytest.raises(ValueError, match="integer tensor"):
        TOK.reverse_complement_ids(torch.zeros(4))
    with pytest.raises(ValueError, match="integer tensor"):
        TOK.reverse_complement_ids(torch.tensor(6))
