"""The mixer protocol shared by attention, Mamba, Mamba-2 and Hyena, so ``Block`` and ``generate()``
need no special cases.

Shapes: padded input ``x`` is ``(B, L, D)``; packed input is ``(T, D)`` with ``packed`` giving the
sequence boundaries (``cu_seqlens`` int32 ``[N+1]``, ``max_seqlen``, ``position_ids`` restarting at
0 per sequence; see ``longseq.core.packing.PackedBatch``). Output has the input's shape.

Decoding: ``allocate_cache(batch_size, max_len, dtype, device)`` returns the mixer's cache object
(KV cache for attention, conv + SSM state for Mamba, ...). ``forward(x, cache=cache)`` on a padded
prompt both returns the outputs and fills the cache (prefill); ``step(x_t, cache)`` with ``x_t`` of
shape ``(B, D)`` returns ``(y_t, cache)`` for one new token. A mixer's tests check that stepping
token by token reproduces the full forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from longseq.core.packing import PackedBatch


@runtime_checkable
class MixerProtocol(Protocol):
    """What every registered mixer implements (an ``nn.Module`` with these methods)."""

    def forward(self, x: torch.Tensor, *, packed: PackedBatch | None = None, cache: Any = None) -> torch.Tensor:
        """Mix tokens of ``x`` ``(B, L, D)`` or packed ``(T, D)``; fills ``cache`` when given."""
        ...

    def allocate_cache(self, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device) -> Any:
        """A fresh decoding cache for ``batch_size`` sequences of up to ``max_len`` tokens."""
        ...

    def step(self, x_t: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """Decode one token ``x_t`` ``(B, D)`` from ``cache``; returns ``(y_t, cache)``."""
        ...
