"""``longseq info`` and ``longseq demo`` end to end (in-process)."""

from __future__ import annotations

import pytest

from longseq.core.cli import main


def test_info_lists_versions_and_kernels(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("torch", "triton", "lightning", "cuda", "rmsnorm"):
        assert word in out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_demo_runs_and_passes(capsys, shared_data_root):
    assert main(["demo", "--root", str(shared_data_root), "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "loss" in out


@pytest.mark.slow
def test_demo_without_any_data_root(capsys, monkeypatch, tmp_path):
    """A fresh machine: no $LONGSEQ_DATA and no ~/.cache/longseq. The demo still passes and says how to get data."""
    monkeypatch.delenv("LONGSEQ_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["demo", "--steps", "5"]) == 0
    assert "longseq data download" in capsys.readouterr().out
