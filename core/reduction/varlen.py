"""Outputs whose sequences keep different numbers of tokens (:class:`VarlenOutput`) and the validation and
layout helpers shared by the token-reduction layers (``prune.py``, ``packed.py``) and ``core.pooling``:
padded <-> packed conversion of inputs and of ragged outputs, token-size accumulation, argument checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longseq.core.packing.batch import (
    PackedBatch,
    cu_seqlens_from_lengths,
    position_ids_from_cu_seqlens,
    segment_ids,
)
from longseq.core.packing.convert import packed_to_pad
from longseq.core.reduction.base import ReductionOutput

# ruff: noqa: N806  (B, L, D, T follow the shape-comment convention)


@dataclass
class VarlenOutput(ReductionOutput):
    """A :class:`ReductionOutput` whose sequences may keep different numbers of tokens.

    Padded results are right-padded to the longest output row: ``mask`` ``(B, L')`` is True at real tokens,
    padding has ``x = 0``, ``sizes = 0`` and ``keep_index = -1``. Packed results (``x`` ``(T', D)``,
    ``sizes`` ``(T', 1)``, ``keep_index`` ``(T',)`` or ``merge_map`` ``(T,)``, both in packed positions)
    carry their new boundaries in ``packed`` (``packed.x`` is the output ``x``).

    Attributes:
        mask: bool ``(B, L')`` for padded output, ``None`` for packed output.
        packed: the output's :class:`PackedBatch` for packed output, ``None`` for padded output.
    """

    mask: torch.Tensor | None = None
    packed: PackedBatch | None = None


# --------------------------------------------------------------------------------------------
# validation and layout helpers (shared with core.pooling)
# --------------------------------------------------------------------------------------------


def _check_prefix(num_prefix_tokens: int) -> None:
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")


def _check_padded(x: torch.Tensor, num_prefix_tokens: int) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be padded (B, L, D), got shape {tuple(x.shape)}")
    if num_prefix_tokens > x.shape[1]:
        raise ValueError(f"num_prefix_tokens must be <= L={x.shape[1]}, got {num_prefix_tokens}")


def _check_packed(x: torch.Tensor, packed: PackedBatch, num_prefix_tokens: int) -> None:
    if x.dim() != 2 or x.shape[0] != packed.num_tokens:
        raise ValueError(f"x must be packed (T={packed.num_tokens}, D), got shape {tuple(x.shape)}")
    if not torch.compiler.is_compiling() and packed.num_seqs and int(packed.seqlens.min()) < num_prefix_tokens:
        raise ValueError(
            f"every sequence needs >= num_prefix_tokens={num_prefix_tokens} tokens, got lengths "
            f"{packed.seqlens.tolist()}"
        )


def _check_tokenwise(t: torch.Tensor | None, lead: tuple[int, ...], what: str, trailing: tuple[int, ...] = ()) -> None:
    if t is not None and tuple(t.shape) != (*lead, *trailing):
        raise ValueError(f"{what} must have shape {(*lead, *trailing)}, got {tuple(t.shape)}")


def _check_mask(mask: torch.Tensor | None, x: torch.Tensor) -> None:
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2])):
        raise ValueError(f"mask must be bool {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")


def _acc_sizes(x: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
    """``sizes`` ``(..., 1)`` in at least fp32, or ones shaped like ``x[..., :1]``."""
    acc = torch.promote_types(x.dtype, torch.float32)
    if sizes is None:
        return torch.ones(*x.shape[:-1], 1, dtype=acc, device=x.device)
    if not sizes.is_floating_point():
        raise ValueError(f"sizes must be floating, got {sizes.dtype}")
    return sizes.to(torch.promote_types(sizes.dtype, acc))


def padded_to_packed(x: torch.Tensor, mask: torch.Tensor | None) -> PackedBatch:
    """Pack padded ``x`` ``(B, L, ...)``: the tokens where ``mask`` (bool ``(B, L)``, default all) is True."""
    B, L = x.shape[:2]
    if mask is None:
        lengths = torch.full((B,), L, dtype=torch.int32, device=x.device)
        cu = cu_seqlens_from_lengths(lengths)
        return PackedBatch(x.reshape(B * L, *x.shape[2:]), cu, L, position_ids_from_cu_seqlens(cu, B * L), check=False)
    lengths = mask.sum(1, dtype=torch.int32)
    cu = cu_seqlens_from_lengths(lengths)
    T = int(cu[-1])
    return PackedBatch(x[mask], cu, int(lengths.max()) if B else 0, position_ids_from_cu_seqlens(cu, T), check=False)


def scatter_to_padded(values: torch.Tensor, mask: torch.Tensor | None, shape: tuple[int, int], fill=0) -> torch.Tensor:
    """Inverse of :func:`padded_to_packed` for per-input-token ``values`` ``(T, ...)`` -> ``(B, L, ...)``."""
    if mask is None:
        return values.reshape(*shape, *values.shape[1:])
    out = values.new_full((*shape, *values.shape[1:]), fill)
    return out.index_put((mask,), values)


def varlen_to_padded(out: VarlenOutput, in_packed: PackedBatch, in_mask: torch.Tensor | None, shape) -> VarlenOutput:
    """A packed :class:`VarlenOutput` of sequences that came from padded rows -> the padded form.

    ``x``, ``sizes`` and ``keep_index`` become ``(B, L', ...)`` right-padded (``keep_index`` local to its row,
    ``-1`` at padding); ``merge_map`` becomes ``(B, L)`` local output indices (``0`` at input padding).
    """
    assert out.packed is not None
    cu = out.packed.cu_seqlens
    x, mask = packed_to_pad(out.x, cu)  # (B, L', D), (B, L')
    sizes, _ = packed_to_pad(out.sizes, cu)
    keep_index = merge_map = None
    if out.keep_index is not None:
        # the padded column of every packed input token (row-major, as x[mask] packs them)
        cols = in_packed.position_ids.long() if in_mask is None else in_mask.nonzero()[:, 1]
        keep_index, _ = packed_to_pad(cols[out.keep_index], cu, pad_value=-1)
    if out.merge_map is not None:
        seg_in = segment_ids(in_packed.cu_seqlens, in_packed.num_tokens)
        local = out.merge_map - cu.long()[seg_in]  # (T,) output index within its own sequence
        merge_map = scatter_to_padded(local, in_mask, shape)
    return VarlenOutput(x=x, sizes=sizes, merge_map=merge_map, keep_index=keep_index, mask=mask)


def _packed_output(x: torch.Tensor, lengths: torch.Tensor) -> PackedBatch:
    """A :class:`PackedBatch` around output tokens ``x`` ``(T', D)`` with per-sequence ``lengths``."""
    cu = cu_seqlens_from_lengths(lengths)
    max_seqlen = int(lengths.max()) if lengths.numel() else 0
    return PackedBatch(x, cu, max_seqlen, position_ids_from_cu_seqlens(cu, x.shape[0]), check=False)
