"""The README demo (``longseq-genomics quickstart``): data check/download and the printed summary."""

from __future__ import annotations

import pytest

from longseq.apps.genomics import quickstart as qs
from longseq.apps.genomics.fasta import read_fasta
from longseq.core.data import MissingDataError


def test_example_fasta_is_valid_dna():
    records = read_fasta(qs.EXAMPLE_FASTA).records
    assert [r.id for r in records] == ["uniform_random", "gc_rich_random", "tandem_repeat"]
    assert all(len(r.seq) == 1500 for r in records)


def test_ensure_ecoli_finds_shared_data(shared_data_root):
    assert qs.ensure_ecoli(str(shared_data_root), allow_download=False).resolve() == shared_data_root.resolve()


def test_ensure_ecoli_without_download_names_the_dataset(tmp_path):
    with pytest.raises(MissingDataError, match="ecoli_k12"):
        qs.ensure_ecoli(str(tmp_path), allow_download=False)


def test_ensure_ecoli_downloads_when_missing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(qs, "download", lambda name, root: calls.append((name, root)))
    assert qs.ensure_ecoli(str(tmp_path), allow_download=True) == tmp_path
    assert calls == [("ecoli_k12", tmp_path)]


def test_print_summary(tmp_path, capsys):
    path = tmp_path / "s.tsv"
    path.write_text("seq_id\tlength\tscored\tmean_nll\tbits_per_base\tperplexity\nseq1\t10\t9\t1.0\t1.4427\t2.72\n")
    qs.print_summary(path)
    out = capsys.readouterr().out
    assert "seq1" in out and "1.443" in out
