"""Order-k Markov model of DNA with add-alpha smoothing: the baseline for bits per base.

``p(x_t = b | x_{t-k..t-1} = c) = (n(c, b) + alpha) / (n(c) + 4 alpha)`` over ``A C G T``. Counting and
scoring are vectorised with numpy (context ids built base-4 in ``k`` passes, counts by ``bincount``).
Positions whose target or context contains ``N`` (or any non-ACGT token) are neither counted nor
scored, and neither are the first ``k`` bases of a sequence (no full context).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MarkovModel", "encode_acgt", "markov_entropy_rate", "select_order"]

_CODES = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate("ACGT"):
    _CODES[ord(_b)] = _CODES[ord(_b.lower())] = _i
MAX_ORDER = 12


def encode_acgt(seq: str) -> np.ndarray:
    """``(L,)`` uint8 codes: A C G T (any case) -> 0 1 2 3, anything else -> 4."""
    return _CODES[np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)]


def _contexts(codes: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """``(context id, position)`` of every scorable position ``t >= order`` (context and target all ACGT)."""
    n = codes.shape[0]
    if n <= order:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bad = np.concatenate([[0], np.cumsum(codes >= 4)])  # bad[i] = non-ACGT count in codes[:i]
    t = np.arange(order, n)
    ok = bad[t + 1] - bad[t - order] == 0  # codes[t - order .. t] all ACGT
    t = t[ok]
    ctx = np.zeros(t.shape[0], dtype=np.int64)
    for j in range(order, 0, -1):  # oldest base first
        ctx = ctx * 4 + codes[t - j]
    return ctx, t


@dataclass
class MarkovModel:
    """Order-``order`` Markov chain over ``ACGT`` with add-``alpha`` smoothing.

    Attributes:
        order: context length k (0 = base frequencies), at most 12.
        alpha: pseudo-count added to every (context, base) count, > 0.
        counts: ``(4**k, 4)`` float64 counts after :meth:`fit`.
    """

    order: int
    alpha: float = 1.0
    counts: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.order <= MAX_ORDER:
            raise ValueError(f"order must be in [0, {MAX_ORDER}], got {self.order}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")

    @staticmethod
    def _as_codes(seqs: str | np.ndarray | Iterable[str | np.ndarray]) -> list[np.ndarray]:
        if isinstance(seqs, (str, np.ndarray)):
            seqs = [seqs]
        return [encode_acgt(s) if isinstance(s, str) else np.asarray(s, dtype=np.uint8) for s in seqs]

    def fit(self, seqs: str | np.ndarray | Iterable[str | np.ndarray]) -> MarkovModel:
        """Count (context, base) pairs of one or more sequences (strings or :func:`encode_acgt` codes)."""
        k = self.order
        counts = np.zeros(4**k * 4, dtype=np.float64)
        for codes in self._as_codes(seqs):
            ctx, t = _contexts(codes, k)
            counts += np.bincount(ctx * 4 + codes[t], minlength=counts.shape[0])
        if counts.sum() == 0:
            raise ValueError(f"no scorable positions to fit: sequences need more than order={k} ACGT bases")
        self.counts = counts.reshape(4**k, 4)
        return self

    def log2_prob_table(self) -> np.ndarray:
        """``(4**k, 4)`` smoothed ``log2 p(base | context)``."""
        if self.counts is None:
            raise RuntimeError("fit the model first")
        probs = (self.counts + self.alpha) / (self.counts.sum(1, keepdims=True) + 4 * self.alpha)
        return np.log2(probs)

    def score(self, seqs: str | np.ndarray | Iterable[str | np.ndarray]) -> tuple[float, int]:
        """``(total -log2 p, scored positions)`` over one or more sequences."""
        table = self.log2_prob_table().reshape(-1)
        total, count = 0.0, 0
        for codes in self._as_codes(seqs):
            ctx, t = _contexts(codes, self.order)
            total -= float(table[ctx * 4 + codes[t]].sum())
            count += int(t.shape[0])
        return total, count

    def bits_per_base(self, seqs: str | np.ndarray | Iterable[str | np.ndarray]) -> float:
        """Mean ``-log2 p`` per scored base."""
        total, count = self.score(seqs)
        if count == 0:
            raise ValueError(f"no scorable positions: sequences need more than order={self.order} ACGT bases")
        return total / count


def markov_entropy_rate(transition: np.ndarray) -> float:
    """Entropy rate in bits of a stationary Markov chain over 4 bases given ``transition`` ``(4**k, 4)``
    (rows: contexts, base-4 with the oldest base most significant)."""
    n_ctx = transition.shape[0]
    k = round(math.log(n_ctx, 4))
    if 4**k != n_ctx or transition.shape[1] != 4 or not np.allclose(transition.sum(1), 1.0):
        raise ValueError(f"transition must be (4**k, 4) with rows summing to 1, got shape {transition.shape}")
    # Chain over contexts: c -> (c * 4 + b) mod 4**k with probability p(b | c).
    P = np.zeros((n_ctx, n_ctx))
    for c in range(n_ctx):
        for b in range(4):
            P[c, (c * 4 + b) % n_ctx] += transition[c, b]
    values, vectors = np.linalg.eig(P.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    pi = pi / pi.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(transition > 0, transition * np.log2(transition), 0.0), axis=1)
    return float(pi @ h)


def select_order(
    train: Sequence[np.ndarray], val: Sequence[np.ndarray], orders: Iterable[int], alphas: Iterable[float]
) -> list[dict[str, float]]:
    """Validation bits per base of every ``(order, alpha)``; rows sorted by order then alpha."""
    rows = []
    alphas = list(alphas)
    for k in orders:
        model = MarkovModel(k, alphas[0]).fit(train)
        for a in alphas:
            model.alpha = a
            rows.append({"order": k, "alpha": a, "val_bits_per_base": model.bits_per_base(val)})
    return rows
