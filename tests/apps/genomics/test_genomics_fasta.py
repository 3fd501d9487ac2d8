"""FASTA/FASTQ reading edge cases and the ``seq,label`` / ``id,label`` tables, on files in tmp_path."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest

from longseq.apps.genomics import (
    SequenceError,
    SequenceWarning,
    encode_labels,
    normalize_sequence,
    read_fasta,
    read_fastq,
    read_label_table,
    read_sequence_table,
    read_sequences,
)

MULTI = ">seq1 first record\nACGTAC\nGTNN\n>seq2\nacgtAC\n>seq3 third\nGG\nCC\nTT\n"


def write(tmp_path: Path, name: str, text: str | bytes, *, compress: bool = False) -> Path:
    path = tmp_path / name
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


def test_multi_record_fasta(tmp_path):
    records, report = no_warnings(read_fasta, write(tmp_path, "a.fa", MULTI))
    assert [r.id for r in records] == ["seq1", "seq2", "seq3"]
    assert [r.seq for r in records] == ["ACGTACGTNN", "acgtAC", "GGCCTT"]
    assert records[0].description == "seq1 first record"
    assert records[0].quality is None
    assert len(records[2]) == 6
    assert (report.n_records, report.n_bases, report.n_empty, report.n_ambiguous) == (3, 22, 0, 0)
    assert report.stats.n_soft_masked == 4
    assert report.file_format == "fasta"
    assert "3 records, 22 bases" in report.summary()


@pytest.mark.parametrize("name", ["a.fa.gz", "a.fasta", "a.txt"])
def test_gzip_detected_by_magic_bytes_whatever_the_name(tmp_path, name):
    plain = read_fasta(write(tmp_path, "plain.fa", MULTI)).records
    packed = read_fasta(write(tmp_path, name, MULTI, compress=True)).records
    assert packed == plain


def test_gz_name_without_gzip_content_is_an_error(tmp_path):
    with pytest.raises(SequenceError, match="ends in .gz but the file is not gzip-compressed"):
        read_fasta(write(tmp_path, "a.fa.gz", MULTI))


def test_truncated_gzip_is_an_error(tmp_path):
    data = gzip.compress(MULTI.encode() * 50)
    with pytest.raises(SequenceError, match="truncated or corrupt gzip"):
        read_fasta(write(tmp_path, "a.fa.gz", data[: len(data) // 2]))


def test_crlf_and_whitespace_parse_like_lf(tmp_path):
    crlf = read_fasta(write(tmp_path, "crlf.fa", MULTI.replace("\n", "\r\n"))).records
    assert crlf == read_fasta(write(tmp_path, "lf.fa", MULTI)).records
    assert all("\r" not in r.id + r.description + r.seq for r in crlf)
    spaced = read_fasta(write(tmp_path, "ws.fa", "\n\n>a\nAC GT \t\r\n  NN\n")).records  # leading blank lines too
    assert spaced[0].seq == "ACGTNN"


def test_soft_mask_keep_and_upper(tmp_path):
    path = write(tmp_path, "m.fa", ">m\nACgtnA\n")
    assert read_fasta(path, soft_mask="keep").records[0].seq == "ACgtnA"
    records, report = read_fasta(path, soft_mask="upper")
    assert records[0].seq == "ACGTNA"
    assert report.stats.n_soft_masked == 3  # counted whatever the policy


def test_iupac_mapped_to_n_with_counts_and_warning(tmp_path):
    path = write(tmp_path, "i.fa", ">i\nACRYGT\nkm\n>j\nRRA\n")
    with pytest.warns(SequenceWarning, match=r"mapped 6 IUPAC ambiguity code\(s\) to N \(K:1, M:1, R:3, Y:1\)"):
        records, report = read_fasta(path)
    assert [r.seq for r in records] == ["ACNNGTnn", "NNA"]
    assert report.n_ambiguous == 6
    assert dict(report.stats.ambiguity) == {"R": 3, "Y": 1, "K": 1, "M": 1}
    with pytest.warns(SequenceWarning, match="mapped 6"):
        assert read_fasta(path, soft_mask="upper").records[0].seq == "ACNNGTNN"


def test_iupac_error_policy_names_record_and_position(tmp_path):
    path = write(tmp_path, "i.fa", ">ok\nACGT\n>bad\nACG\nTAW\n")
    with pytest.raises(SequenceError, match=r"i.fa: record 'bad', position 6 \(1-based\): IUPAC ambiguity code 'W'"):
        read_fasta(path, iupac="error")


@pytest.mark.parametrize(
    ("char", "hint"), [("X", ""), ("U", "RNA base"), ("-", "alignment gap"), ("*", "stop"), ("1", ""), ("\v", "")]
)
def test_invalid_character_names_record_id_and_1_based_position(tmp_path, char, hint):
    path = write(tmp_path, "x.fa", f">first\nACGT\n>second desc\nACGTA\nCG{char}T\n")
    with pytest.raises(SequenceError, match=r"x.fa: record 'second', position 8 \(1-based\): invalid character") as err:
        read_fasta(path)
    assert repr(char) in str(err.value)
    assert hint in str(err.value)


def test_non_ascii_character_is_an_error(tmp_path):
    path = write(tmp_path, "u.fa", ">r\nACGé\n")
    with pytest.raises(SequenceError, match=r"record 'r', position 4 \(1-based\): non-ASCII character 'é'"):
        read_fasta(path)


def test_binary_file_is_an_error(tmp_path):
    with pytest.raises(SequenceError, match="not UTF-8/ASCII text"):
        read_fasta(write(tmp_path, "b.fa", b">r\nAC\xff\xfeGT\n"))


def test_empty_records_are_skipped_and_counted(tmp_path):
    path = write(tmp_path, "e.fa", ">e1\n>a\nACGT\n>e2\n\n>b\nGG\n>e3\n")
    with pytest.warns(SequenceWarning, match=r"skipped 3 empty record\(s\) \(ids: e1, e2, e3\)"):
        records, report = read_fasta(path)
    assert [r.id for r in records] == ["a", "b"]
    assert (report.n_records, report.n_empty, report.empty_ids) == (2, 3, ["e1", "e2", "e3"])
    assert "3 empty records skipped" in report.summary()


def test_only_empty_records_is_an_error(tmp_path):
    with pytest.raises(SequenceError, match=r"all 2 record\(s\) are empty"):
        read_fasta(write(tmp_path, "e.fa", ">a\n>b\n\n"))


@pytest.mark.parametrize("content", ["", "\n\n  \n", "\r\n"])
def test_empty_file_is_an_error(tmp_path, content):
    with pytest.raises(SequenceError, match="empty file"):
        read_sequences(write(tmp_path, "empty.fa", content))


def test_empty_gzip_file_is_an_error(tmp_path):
    with pytest.raises(SequenceError, match="empty file"):
        read_fasta(write(tmp_path, "empty.fa.gz", "", compress=True))


def test_text_before_first_header_is_an_error(tmp_path):
    with pytest.raises(SequenceError, match=r"expected FASTA \(>\) at the start of the first record, found 'A'"):
        read_fasta(write(tmp_path, "n.fa", "ACGT\n>a\nAC\n"))
    with pytest.raises(SequenceError, match=r"expected '>' or '@'.*found ';'"):
        read_sequences(write(tmp_path, "c.fa", ";comment\n>a\nAC\n"))
    with pytest.raises(SequenceError, match=r"expected '>' or '@'.*found ' '"):
        read_sequences(write(tmp_path, "s.fa", "\n  >a\nAC\n"))


FASTQ = "@r1 read one\nACGTN\n+\nIIII#\n@r2\nacg\n+r2\n!!5\n@empty\n\n+\n\n"


def test_fastq_records_qualities_and_empty_reads(tmp_path):
    path = write(tmp_path, "r.fq.gz", FASTQ, compress=True)
    with pytest.warns(SequenceWarning, match=r"skipped 1 empty record\(s\) \(ids: empty\)"):
        records, report = read_fastq(path)
    assert [(r.id, r.seq) for r in records] == [("r1", "ACGTN"), ("r2", "acg")]
    assert records[0].description == "r1 read one"
    np.testing.assert_array_equal(records[0].quality, [40, 40, 40, 40, 2])
    np.testing.assert_array_equal(records[1].quality, [0, 0, 20])
    assert records[1].quality.dtype == np.uint8
    assert report.file_format == "fastq"
    with pytest.warns(SequenceWarning):
        assert read_sequences(path).records == records  # format detected from '@'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("@r1\nACG\n+\nI I\n", r"record 'r1', quality position 2 \(1-based\): ' ' is not"),
        ("@r1\nACG\n+\nIIé\n", r"record 'r1', quality position 3 \(1-based\): 'é'"),
        ("@r1\nACG\n+\nIII\n@r2\nAXG\n+\nIII\n", r"record 'r2', position 2 \(1-based\): invalid character 'X'"),
        ("@r1\nACGT\nIIII\n", "not valid FASTQ after 0 record"),
    ],
)
def test_fastq_quality_and_sequence_errors(tmp_path, content, message):
    with pytest.raises(SequenceError, match=message):
        read_fastq(write(tmp_path, "r.fq", content))


def test_fastq_crlf(tmp_path):
    records = read_fastq(write(tmp_path, "r.fq", "@r1\r\nACGT\r\n+\r\nIIII\r\n")).records
    assert [(r.id, r.seq) for r in records] == [("r1", "ACGT")]


def test_malformed_fastq_is_an_error_naming_the_file(tmp_path):
    path = write(tmp_path, "bad.fq", "@r1\nACGT\n+\nIIII\n@r2\nAC\n+\nI\n")
    with pytest.raises(SequenceError, match=r"bad.fq: not valid FASTQ after 1 record\(s\): Lengths of sequence"):
        read_fastq(path)


def test_format_mismatch_is_an_error(tmp_path):
    with pytest.raises(SequenceError, match=r"expected FASTA .* found '@' \(looks like FASTQ\)"):
        read_fasta(write(tmp_path, "r.fq", FASTQ))
    with pytest.raises(SequenceError, match=r"expected FASTQ .* found '>' \(looks like FASTA\)"):
        read_fastq(write(tmp_path, "a.fa", MULTI))


def test_bad_policy_arguments(tmp_path):
    path = write(tmp_path, "a.fa", MULTI)
    with pytest.raises(ValueError, match="soft_mask must be 'keep' or 'upper', got 'lower'"):
        read_fasta(path, soft_mask="lower")
    with pytest.raises(ValueError, match="iupac must be 'to_n' or 'error', got 'drop'"):
        read_fasta(path, iupac="drop")
    with pytest.raises(ValueError, match="file_format must be"):
        read_sequences(path, file_format="genbank")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_fasta(tmp_path / "nope.fa")


def test_normalize_sequence_unchanged_input_is_returned_as_is():
    seq, stats = normalize_sequence("ACGTN", record_id="r", source="s")
    assert seq == "ACGTN" and stats.n_bases == 5 and stats.n_ambiguous == 0


# ---------------------------------------------------------------- tables


def test_sequence_table_csv_and_tsv(tmp_path):
    csv_path = write(tmp_path, "t.csv", "seq,label\nACGT,1\r\nacgr,0\n\nGG,1\n")
    with pytest.warns(SequenceWarning, match="mapped 1 IUPAC"):
        seqs, labels, report = read_sequence_table(csv_path)
    assert seqs == ["ACGT", "acgn", "GG"] and labels == ["1", "0", "1"]
    assert report.n_records == 3 and report.file_format == "csv"
    tsv_path = write(tmp_path, "t.tsv", "name\tlabel\tsequence\nx\tpos\tAC\n", compress=True)
    seqs, labels, _ = read_sequence_table(tsv_path, seq_col="sequence")
    assert (seqs, labels) == (["AC"], ["pos"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("seq,y\nAC,1\n", r"header has no column\(s\) 'label'; found \['seq', 'y'\]"),
        ("seq,label\nAC,1\nGG,\n", r"t.csv, line 3: missing value in column 'label'"),
        ("seq,label\n,1\n", r"t.csv, line 2: missing value in column 'seq'"),
        ("seq,label\nAC,1\nAZ,0\n", r"record 'line 3', position 2 \(1-based\): invalid character 'Z'"),
        ("seq,label\n", "has a header but no data rows"),
        ("", "empty file"),
    ],
)
def test_sequence_table_errors_name_line_and_column(tmp_path, content, message):
    with pytest.raises(SequenceError, match=message):
        read_sequence_table(write(tmp_path, "t.csv", content))


def test_label_table_and_duplicate_ids(tmp_path):
    assert read_label_table(write(tmp_path, "l.tsv", "id\tlabel\na\t1\nb\t0\n")) == {"a": "1", "b": "0"}
    with pytest.raises(SequenceError, match=r"line 4: id 'a' is listed twice \(first on line 2\)"):
        read_label_table(write(tmp_path, "d.csv", "id,label\na,1\nb,0\na,1\n"))


def test_encode_labels():
    idx, names = encode_labels(["1", "0", "1", "3"])
    assert idx.tolist() == [1, 0, 1, 3] and names == ["0", "1", "2", "3"]
    idx, names = encode_labels(["pos", "neg", "pos"])
    assert idx.tolist() == [1, 0, 1] and names == ["neg", "pos"]
    with pytest.raises(SequenceError, match="must be >= 0, got '-1'"):
        encode_labels(["1", "-1"])
    with pytest.raises(SequenceError, match="no labels"):
        encode_labels([])
