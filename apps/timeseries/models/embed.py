"""Input embeddings of the Informer family (Time-Series-Library ``layers/Embed.py`` layout).

:class:`DataEmbedding` = value embedding (a circular 1-D convolution of width 3 over time, no bias)
+ sinusoidal position embedding + calendar embedding, then dropout. The calendar embedding follows
``embed``:

* ``"timeF"``: a linear map of the scaled calendar features (``timeenc=1``; F = 4 for hourly data);
* ``"fixed"``: sums of frozen sinusoidal tables indexed by the integer fields of ``timeenc=0``
  (month, day, weekday, hour, and minute // 15 when F = 5);
* ``"learned"``: the same with learned tables.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["DataEmbedding", "EmbedType", "sinusoidal_table"]

EmbedType = Literal["timeF", "fixed", "learned"]
#: Sizes of the integer calendar fields of ``timeenc=0``, in column order.
_FIELD_SIZES = (13, 32, 7, 24, 4)  # month, day, weekday, hour, minute // 15


def sinusoidal_table(n: int, dim: int) -> torch.Tensor:
    """The (n, dim) sine/cosine table of "Attention Is All You Need" (even columns sin, odd cos)."""
    position = torch.arange(n, dtype=torch.float32).unsqueeze(1)  # (n, 1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (dim/2,)
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table


class _CalendarTables(nn.Module):
    """Sum of one embedding table per integer calendar field (frozen sinusoidal or learned)."""

    def __init__(self, n_fields: int, dim: int, learned: bool) -> None:
        super().__init__()
        if n_fields not in (4, 5):
            raise ValueError(f"integer calendar features (timeenc=0) have 4 or 5 columns, got {n_fields}")
        self.tables = nn.ModuleList()
        for size in _FIELD_SIZES[:n_fields]:
            table = nn.Embedding(size, dim)
            if not learned:
                table.weight.data.copy_(sinusoidal_table(size, dim))
                table.weight.requires_grad_(False)
            self.tables.append(table)

    def forward(self, marks: torch.Tensor) -> torch.Tensor:
        idx = marks.long()  # (B, L, F)
        return sum(table(idx[..., i]) for i, table in enumerate(self.tables))


class DataEmbedding(nn.Module):
    """Value + position + calendar embedding of ``x`` (B, L, C) with marks (B, L, F) -> (B, L, d_model).

    Args:
        c_in: channels C.
        d_model: embedding width.
        n_time_features: F, the columns of the marks (0: no calendar embedding).
        embed: ``"timeF"``, ``"fixed"`` or ``"learned"`` (see the module docstring).
        dropout: dropout on the sum.
        max_len: longest sequence of the position table.
    """

    def __init__(
        self,
        c_in: int,
        d_model: int,
        n_time_features: int,
        embed: EmbedType = "timeF",
        dropout: float = 0.1,
        max_len: int = 5000,
    ) -> None:
        super().__init__()
        self.value = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.value.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("position", sinusoidal_table(max_len, d_model), persistent=False)
        if embed not in ("timeF", "fixed", "learned"):
            raise ValueError(f"embed must be 'timeF', 'fixed' or 'learned', got {embed!r}")
        self.n_time_features = n_time_features
        if n_time_features == 0:
            self.calendar: nn.Module | None = None
        elif embed == "timeF":
            self.calendar = nn.Linear(n_time_features, d_model, bias=False)
        else:
            self.calendar = _CalendarTables(n_time_features, d_model, learned=embed == "learned")
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, marks: torch.Tensor | None) -> torch.Tensor:
        L = x.shape[1]
        if self.position.shape[0] < L:
            raise ValueError(f"sequence of {L} steps is longer than the position table ({self.position.shape[0]})")
        h = self.value(x.transpose(1, 2)).transpose(1, 2) + self.position[:L]  # (B, L, D)
        if self.calendar is not None:
            if marks is None or marks.shape[-1] != self.n_time_features:
                got = None if marks is None else tuple(marks.shape)
                raise ValueError(f"calendar marks must be (B, {L}, {self.n_time_features}), got {got}")
            h = h + self.calendar(marks)
        return self.drop(h)
