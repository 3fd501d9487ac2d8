"""Per-channel z-scoring fitted on the training rows: :class:`StandardScaler` (numpy, no sklearn).

It computes what ``sklearn.preprocessing.StandardScaler`` (used by the reference loaders) computes:
the mean and the population standard deviation (``ddof=0``) of each column, in float64, with a scale
of 1 for a column that is constant over the fitted rows (sklearn's rule, so no division by zero).
The statistics are computed on a column-contiguous copy, as pandas hands its columns to sklearn, so
numpy sums each column pairwise and the result is bit-identical to the reference's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["StandardScaler"]

ArrayLike = np.ndarray | torch.Tensor


class StandardScaler:
    """``transform(x) = (x - mean) / scale`` per channel (last axis); fit with :meth:`fit`.

    Attributes:
        mean: float64 (C,), or None before fitting.
        scale: float64 (C,) standard deviations (1 where a column is constant), or None before fitting.
    """

    def __init__(self, mean: Sequence[float] | np.ndarray | None = None, scale: Sequence[float] | None = None) -> None:
        if (mean is None) != (scale is None):
            raise ValueError("give both mean and scale, or neither")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64)
        if self.mean is not None and (self.mean.shape != self.scale.shape or self.mean.ndim != 1):
            raise ValueError(f"mean and scale must both be (C,), got {self.mean.shape} and {self.scale.shape}")
        if self.scale is not None and not np.all(self.scale > 0):
            raise ValueError(f"scale must be positive, got {self.scale}")

    def fit(self, x: np.ndarray) -> StandardScaler:
        """Fit on ``x`` (N, C): the rows to learn from (the training split only)."""
        x = np.asfortranarray(x, dtype=np.float64)  # column-contiguous: pairwise sums per column
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"fit expects a non-empty (N, C) array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("fit got NaN or infinite values; fill or drop them before scaling")
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)  # ddof=0, as sklearn
        self.scale = np.where(np.ptp(x, axis=0) == 0, 1.0, std)
        return self

    @property
    def n_channels(self) -> int:
        """C, the number of fitted channels."""
        return len(self._fitted()[0])

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None or self.scale is None:
            raise RuntimeError("StandardScaler is not fitted; call fit(train_rows) first")
        return self.mean, self.scale

    def _params(self, x: ArrayLike, channels: slice | Sequence[int] | None) -> tuple[Any, Any]:
        """Mean and scale for the channels of ``x``'s last axis, as numpy or as tensors on ``x``'s device."""
        mean, scale = self._fitted()
        if channels is not None:
            mean, scale = mean[channels], scale[channels]
        if x.shape[-1] != len(mean):
            raise ValueError(
                f"last axis of x has {x.shape[-1]} channels, expected {len(mean)}"
                + ("" if channels is None else f" (channels={channels})")
            )
        if isinstance(x, torch.Tensor):
            return torch.as_tensor(mean, dtype=x.dtype, device=x.device), torch.as_tensor(
                scale, dtype=x.dtype, device=x.device
            )
        return mean, scale

    def transform(self, x: ArrayLike, channels: slice | Sequence[int] | None = None) -> ArrayLike:
        """``(x - mean) / scale`` over the last axis of ``x`` (..., C); numpy stays numpy, tensors stay tensors.

        Args:
            x: values with the channels last.
            channels: the fitted channels ``x`` holds (e.g. ``slice(-1, None)`` for the target of ``MS``);
                None means all.
        """
        mean, scale = self._params(x, channels)
        return (x - mean) / scale

    def inverse_transform(self, x: ArrayLike, channels: slice | Sequence[int] | None = None) -> ArrayLike:
        """``x * scale + mean``: back to the original units; ``channels`` as in :meth:`transform`."""
        mean, scale = self._params(x, channels)
        return x * scale + mean

    def state_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "scale": [...]}``, plain lists for checkpoints and JSON."""
        mean, scale = self._fitted()
        return {"mean": mean.tolist(), "scale": scale.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Sequence[float]]) -> StandardScaler:
        """Rebuild a fitted scaler from :meth:`state_dict`."""
        return cls(state["mean"], state["scale"])

    def __repr__(self) -> str:
        if self.mean is None:
            return "StandardScaler(unfitted)"
        return f"StandardScaler(channels={len(self.mean)})"
