"""A tiny causal mixer implementing the mixer protocol, for tests of blocks, backbones and generation
that must not depend on a real mixer: ``y_t = W_o(mean_{s <= t} W_v x_s) * sigmoid(W_g x_t)``.

It is packed-aware (the running mean restarts at every sequence) and has a decoding cache
(running sum and count), so "packed == per sequence" and "cache == no cache" tests exercise the
plumbing. ``leak=True`` ignores the boundaries on purpose so tests can show they catch it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from longseq.core import registry
from longseq.core.packing import PackedBatch, segment_ids

NAME = "toy_cummean"


@dataclass
class ToyCache:
    total: torch.Tensor  # (B, D) running sum of W_v x
    count: int


class CumMeanMixer(nn.Module):
    def __init__(self, dim: int, leak: bool = False) -> None:
        super().__init__()
        self.v = nn.Linear(dim, dim)
        self.g = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.leak = leak

    def _packed_mean(self, x: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
        """Running mean restarting at each sequence, without data-dependent shapes (compile-friendly)."""
        # (T, D) running sum over the whole packed batch, in fp32 so that subtracting the sum before
        # each sequence start loses no more precision than a per-sequence sum in x's dtype
        total = self.v(x).float().cumsum(0)
        if self.leak:
            counts = torch.arange(1, x.shape[0] + 1, device=x.device)
            return (total / counts[:, None]).to(x.dtype)
        before = F.pad(total, (0, 0, 1, 0))[packed.cu_seqlens[:-1].long()]  # (N, D) sum before each start
        seg = segment_ids(packed.cu_seqlens, x.shape[0])
        return ((total - before[seg]) / (packed.position_ids + 1)[:, None]).to(x.dtype)

    def forward(self, x: torch.Tensor, *, packed: PackedBatch | None = None, cache: ToyCache | None = None):
        if packed is not None:
            mean = self._packed_mean(x, packed)  # (T, D)
        else:
            counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)
            mean = self.v(x).cumsum(1) / counts[:, None]  # (B, L, D)
            if cache is not None:
                cache.total = self.v(x).sum(1)
                cache.count = x.shape[1]
        return self.o(mean) * torch.sigmoid(self.g(x))

    def allocate_cache(self, batch_size, max_len, dtype=None, device=None) -> ToyCache:
        return ToyCache(torch.zeros(batch_size, self.v.out_features, dtype=dtype, device=device), 0)

    def step(self, x_t: torch.Tensor, cache: ToyCache):
        total = cache.total + self.v(x_t)
        new = ToyCache(total, cache.count + 1)
        return self.o(total / new.count) * torch.sigmoid(self.g(x_t)), new


@contextlib.contextmanager
def toy_mixer_registered() -> Iterator[str]:
    """Register :class:`CumMeanMixer` as ``"toy_cummean"`` for the duration of the block."""
    registry.register_mixer(NAME)(CumMeanMixer)
    try:
        yield NAME
    finally:
        registry._MIXERS.pop(NAME, None)
