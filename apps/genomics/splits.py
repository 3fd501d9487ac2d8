"""K-fold cross-validation splits, optionally stratified (used for the 5-fold CV of benchmarks that
ship one split only, such as human_nontata_promoters here)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["kfold_splits"]


def kfold_splits(
    n: int, k: int = 5, *, seed: int = 0, labels: Sequence[int] | np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` pairs ``(train indices, val indices)`` over ``range(n)``: the val parts partition the
    indices, each train part is the complement of its val part, both sorted int64.

    Indices are shuffled with ``seed``. With ``labels`` the folds are stratified: every class is
    spread over the folds as evenly as possible (per-class counts per fold differ by at most one),
    and so are the fold sizes.

    Raises:
        ValueError: ``k < 2``, ``n < k``, ``labels`` not of length ``n``, or a class with fewer than
            ``k`` members (some fold would lack it).
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if n < k:
        raise ValueError(f"need at least k={k} items for {k} folds, got n={n}")
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(n)
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        classes, counts = np.unique(labels, return_counts=True)
        small = [(c, m) for c, m in zip(classes.tolist(), counts.tolist()) if m < k]
        if small:
            raise ValueError(f"stratified {k}-fold needs >= {k} items per class; too few: {small} (class, count)")
        # Each class shuffled, classes one after another; dealing positions round-robin to folds then
        # keeps every class (and the total) balanced to within one item per fold.
        order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in classes])
    fold_of = np.empty(n, dtype=np.int64)
    fold_of[order] = np.arange(n) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]
