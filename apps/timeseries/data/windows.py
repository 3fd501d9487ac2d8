"""Sliding forecast windows over one split: :class:`ForecastWindowDataset`.

Item ``i`` is the reference loaders' ``(seq_x, seq_y, seq_x_mark, seq_y_mark)`` as a dict, for
``s = i``, ``r = s + seq_len - label_len``:

* ``x``: values[s : s + seq_len] (L, C), the look-back;
* ``y``: values[r : r + label_len + pred_len] (label_len + H, C), the decoder's start tokens (the
  last ``label_len`` input steps) followed by the horizon; the forecast target is ``y[-pred_len:]``;
* ``x_mark``, ``y_mark``: the calendar features of the same rows, (L, F) and (label_len + H, F).

``y`` holds every channel, as in the reference; with ``features="MS"`` the loss and metrics use only
the target, the last channel (``ForecastDataModule.target_channels``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ForecastWindowDataset"]


class ForecastWindowDataset(Dataset):
    """Every window of one split, stride 1.

    Args:
        values: (N, C) rows of the split (already scaled), cast to float32.
        marks: (N, F) time features of the same rows.
        seq_len: look-back L >= 1.
        label_len: start-token length, 0 <= label_len <= seq_len.
        pred_len: horizon H >= 1.

    Raises:
        ValueError: bad lengths, mismatched rows, or fewer than ``seq_len + pred_len`` rows.
    """

    def __init__(self, values: np.ndarray, marks: np.ndarray, seq_len: int, label_len: int, pred_len: int) -> None:
        if seq_len < 1 or pred_len < 1 or not 0 <= label_len <= seq_len:
            raise ValueError(
                f"need seq_len >= 1, pred_len >= 1 and 0 <= label_len <= seq_len, got seq_len={seq_len}, "
                f"label_len={label_len}, pred_len={pred_len}"
            )
        if values.ndim != 2 or marks.ndim != 2 or len(values) != len(marks):
            raise ValueError(
                f"values (N, C) and marks (N, F) must have the same N, got {values.shape} and {marks.shape}"
            )
        if len(values) < seq_len + pred_len:
            raise ValueError(
                f"{len(values)} rows, fewer than seq_len + pred_len = {seq_len + pred_len}: no window fits"
            )
        self.values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))  # (N, C)
        self.marks = torch.from_numpy(np.ascontiguousarray(marks, dtype=np.float32))  # (N, F)
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len

    def __len__(self) -> int:
        return len(self.values) - self.seq_len - self.pred_len + 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        s = index % len(self)
        r = s + self.seq_len - self.label_len
        r_end = s + self.seq_len + self.pred_len
        return {
            "x": self.values[s : s + self.seq_len],  # (L, C)
            "y": self.values[r:r_end],  # (label_len + H, C)
            "x_mark": self.marks[s : s + self.seq_len],  # (L, F)
            "y_mark": self.marks[r:r_end],  # (label_len + H, F)
        }
