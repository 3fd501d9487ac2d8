"""The attention benchmark's work model agrees with the masks it times."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from longseq.core.attention import masks as M

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # benchmarks/ is a top-level folder, not part of the installed package
    sys.path.insert(0, str(REPO))
bench = importlib.import_module("benchmarks.attention")


@pytest.mark.parametrize("L, window", [(1, None), (7, None), (9, 3), (5, 10)])
def test_visible_pairs_counts_the_mask(L, window):
    mod = M.causal_mask() if window is None else M.and_masks(M.causal_mask(), M.sliding_window_mask(window, 0))
    assert bench.visible_pairs(L, True, window) == int(M.materialize_mask(mod, 1, 1, L, L).sum())
    assert bench.visible_pairs(L, False, None) == L * L


def test_batch_keeps_the_token_budget():
    assert [bench.batch_for(L) * L for L in bench.LENGTHS[:5]] == [bench.TOKENS] * 5
    assert bench.batch_for(bench.LENGTHS[-1]) == 1
