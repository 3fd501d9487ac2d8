"""``Block``: the pre-norm residual layer every backbone stacks.

``x = x + drop_path(mixer(norm1(x)))`` then ``x = x + drop_path(mlp(norm2(x)))`` (the MLP half is
skipped when ``mlp`` is ``None``, as in Mamba blocks). The mixer is any module implementing
``longseq.core.mixers.base.MixerProtocol``; ``packed`` and ``cache`` pass straight through to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from longseq.core.norms import create_norm
from longseq.core.packing import PackedBatch, segment_ids

__all__ = ["Block", "DropPath", "drop_path"]


def drop_path(x: torch.Tensor, p: float, training: bool, packed: PackedBatch | None = None) -> torch.Tensor:
    """Stochastic depth: zero the residual branch ``x`` of a whole sequence with probability ``p``
    (survivors scaled by ``1 / (1 - p)``).

    Padded ``(B, ...)`` draws one decision per row; packed ``(T, D)`` with ``packed`` one per
    sequence, so a packed batch is treated exactly like its sequences run alone.
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    if packed is None:
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, ...)
    else:
        per_seq = x.new_empty(packed.num_seqs).bernoulli_(keep)  # (N,)
        mask = per_seq[segment_ids(packed.cu_seqlens, x.shape[0])].reshape(-1, *[1] * (x.dim() - 1))  # (T, 1)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (identity in eval mode or when ``p == 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor, packed: PackedBatch | None = None) -> torch.Tensor:
        return drop_path(x, self.p, self.training, packed)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """Pre-norm residual block ``Block(dim, mixer, mlp, norm, drop_path)``.

    Args:
        dim: model width D.
        mixer: the token mixer (attention, mamba, ...) following the mixer protocol.
        mlp: the channel MLP, or ``None`` for a mixer-only block.
        norm: a norm name for :func:`~longseq.core.norms.create_norm` or a constructor ``norm(dim)``.
        drop_path: stochastic depth probability of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        mlp: nn.Module | None = None,
        norm: str | Callable[[int], nn.Module] = "rmsnorm",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        make_norm = (lambda d: create_norm(norm, d)) if isinstance(norm, str) else norm
        self.norm1 = make_norm(dim)
        self.mixer = mixer
        self.norm2 = make_norm(dim) if mlp is not None else None
        self.mlp = mlp
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, *, packed: PackedBatch | None = None, cache: Any = None) -> torch.Tensor:
        """``x`` ``(B, L, D)``, or ``(T, D)`` with ``packed`` boundaries; ``cache`` is filled (prefill)."""
        x = x + self.drop_path(self.mixer(self.norm1(x), packed=packed, cache=cache), packed)
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(self.norm2(x)), packed)
        return x

    def allocate_cache(
        self, batch_size: int, max_len: int, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> Any:
        """The mixer's decoding cache (see ``MixerProtocol.allocate_cache``)."""
        return self.mixer.allocate_cache(batch_size, max_len, dtype=dtype, device=device)

    def step(self, x_t: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """Decode one token ``x_t`` ``(B, D)``; returns ``(y_t (B, D), cache)``."""
        y_t, cache = self.mixer.step(self.norm1(x_t), cache)
        x_t = x_t + y_t
        if self.mlp is not None:
            x_t = x_t + self.mlp(self.norm2(x_t))
        return x_t, cache
