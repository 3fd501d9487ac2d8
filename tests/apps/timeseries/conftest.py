"""Fixtures shared by the time-series tests that train models (opted in with ``usefixtures``)."""

from __future__ import annotations

import warnings

import pytest
import torch


@pytest.fixture
def cpu_quiet(monkeypatch: pytest.MonkeyPatch):
    """CPU runs use the kernels' PyTorch references and one thread; Lightning's hints are silenced."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)
