"""Input checks and the packing conversion shared by the Mamba ops (causal conv1d, selective scan, SSD).

Packed sequences reach these kernels as ``seq_idx`` (int32 ``(B, L)``, the sequence of each token);
``cu_seqlens`` (the project's varlen convention) converts to it with :func:`seq_idx_from_cu_seqlens`.
"""

from __future__ import annotations

import torch

from longseq.kernels._common import check_dtype

__all__ = ["check_optional", "check_seq_idx", "packed_seq_idx", "seq_idx_from_cu_seqlens"]


def seq_idx_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """int32 ``(1, T)``: the index of the sequence each packed token belongs to."""
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(
            f"cu_seqlens must be a 1-D int32 tensor [N+1] with N >= 1, got dtype {cu_seqlens.dtype} "
            f"shape {tuple(cu_seqlens.shape)}"
        )
    if int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != total:
        raise ValueError(f"cu_seqlens must run from 0 to the total tokens {total}, got {cu_seqlens.tolist()}")
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    if bool((lengths < 0).any()):
        raise ValueError(f"cu_seqlens must be non-decreasing, got {cu_seqlens.tolist()}")
    ids = torch.arange(lengths.numel(), device=cu_seqlens.device, dtype=torch.int32)
    return torch.repeat_interleave(ids, lengths, output_size=total)[None]  # (1, T)


def packed_seq_idx(
    seq_idx: torch.Tensor | None, cu_seqlens: torch.Tensor | None, x: torch.Tensor, token_dim: int, layout: str
) -> torch.Tensor | None:
    """``seq_idx``, or the one ``cu_seqlens`` describes for a packed input ``x`` (batch 1, tokens on
    ``token_dim``); ``layout`` names the expected shape in the error message."""
    if cu_seqlens is None:
        return seq_idx
    if seq_idx is not None:
        raise ValueError("give either seq_idx or cu_seqlens, not both")
    if x.dim() <= token_dim or x.shape[0] != 1:
        raise ValueError(f"packed input with cu_seqlens must be {layout}, got shape {tuple(x.shape)}")
    return seq_idx_from_cu_seqlens(cu_seqlens.to(x.device), x.shape[token_dim])


def check_optional(name: str, t: torch.Tensor | None, *shapes: tuple[int, ...]) -> None:
    """A floating tensor of one of ``shapes`` (or ``None``); ``ValueError`` naming what was given."""
    if t is None:
        return
    check_dtype(name, t)
    if tuple(t.shape) not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")


def check_seq_idx(seq_idx: torch.Tensor | None, batch: int, L: int) -> None:
    """``seq_idx`` is ``None`` or int32 ``(B, L)``."""
    if seq_idx is None:
        return
    check_dtype("seq_idx", seq_idx, (torch.int32,))
    if seq_idx.shape != (batch, L):
        raise ValueError(f"seq_idx must have shape (B, L) = {(batch, L)}, got {tuple(seq_idx.shape)}")
