"""scripts/genomics_results.py helpers: bits/base by window position and the ensemble scores."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from longseq.apps.genomics import CausalLMModule


@pytest.fixture(scope="module")
def gr():
    path = Path(__file__).resolve().parents[1] / "scripts" / "genomics_results.py"
    spec = importlib.util.spec_from_file_location("genomics_results", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bits_by_position_partitions_the_mean(gr, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # torch paths on CPU
    torch.manual_seed(0)
    module = CausalLMModule(backbone_kwargs={"dim": 16, "max_len": 300}).eval()
    ids = torch.randint(6, 10, (3, 301))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[2, 200:] = False  # a padded window: its tail adds no tokens
    loader = [{"input_ids": ids[:2], "attention_mask": mask[:2]}, {"input_ids": ids[2:], "attention_mask": mask[2:]}]
    bins = gr.bits_by_position(module, loader, 300, bf16=False)
    assert [(b["from"], b["to"]) for b in bins] == [(0, 64), (64, 256), (256, 300)]
    assert [b["tokens"] for b in bins] == [3 * 64, 3 * 192 - 57, 2 * 44]
    with torch.no_grad():
        nll, valid = module.token_nll({"input_ids": ids, "attention_mask": mask})
    assert gr._overall(bins) == pytest.approx(float(nll[valid].mean()) / math.log(2), abs=1e-4)
    first = float(nll[:, :64].mean()) / math.log(2)
    assert bins[0]["bits_per_base"] == pytest.approx(first, abs=1e-4)


def test_scores_of_probabilities(gr):
    probs = torch.tensor([0.9, 0.8, 0.3, 0.2, 0.6])
    labels = torch.tensor([1, 1, 0, 0, 0])
    s = gr._scores(probs, labels)
    assert s["test/acc"] == 0.8 and s["test/auroc"] == 1.0
    assert s["test/mcc"] == pytest.approx(0.6667, abs=1e-4)
