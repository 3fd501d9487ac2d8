"""Order-k Markov baseline: entropy of a synthetic order-2 source, order selection, errors."""

from __future__ import annotations

import numpy as np
import pytest

from longseq.apps.genomics.markov import MarkovModel, encode_acgt, markov_entropy_rate, select_order


def _sample_order2(transition: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n, dtype=np.uint8)
    out[:2] = rng.integers(0, 4, 2)
    u = rng.random(n)
    cdf = transition.cumsum(1)
    for t in range(2, n):
        out[t] = np.searchsorted(cdf[out[t - 2] * 4 + out[t - 1]], u[t], side="right")
    return np.minimum(out, 3)


def test_order2_source_bits_per_base_close_to_entropy_rate() -> None:
    rng = np.random.default_rng(0)
    transition = rng.dirichlet(np.full(4, 0.5), size=16)  # (16 contexts, 4 bases), skewed
    entropy = markov_entropy_rate(transition)
    assert 0.5 < entropy < 1.9
    train, test = _sample_order2(transition, 100_000, rng), _sample_order2(transition, 50_000, rng)
    fitted = MarkovModel(2, alpha=1.0).fit(train)
    assert abs(fitted.bits_per_base(test) - entropy) < 0.02
    assert MarkovModel(0).fit(train).bits_per_base(test) > entropy + 0.1  # order 0 misses the structure
    rows = select_order([train[:60_000]], [train[60_000:]], range(5), [1.0])
    assert min(rows, key=lambda r: r["val_bits_per_base"])["order"] == 2


def test_uniform_order0_is_two_bits_and_n_positions_skipped() -> None:
    model = MarkovModel(0, alpha=1.0).fit("ACGT" * 100)
    assert model.bits_per_base("ACGT") == pytest.approx(2.0)
    model1 = MarkovModel(1).fit("ACGTNACGT")
    _, count = model1.score("ACNGT")  # scorable: (A->C), (G->T); N breaks the other two
    assert count == 2
    assert list(encode_acgt("acgtNx")) == [0, 1, 2, 3, 4, 4]


def test_markov_errors() -> None:
    with pytest.raises(ValueError, match="order must be in"):
        MarkovModel(13)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        MarkovModel(1, alpha=0.0)
    with pytest.raises(ValueError, match="no scorable positions"):
        MarkovModel(3).fit("ACG")
    with pytest.raises(RuntimeError, match="fit the model first"):
        MarkovModel(1).bits_per_base("ACGT")
