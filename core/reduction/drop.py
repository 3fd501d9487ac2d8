"""Token dropping: patch dropout, PaSST structured patchout and Random-LTD, for training.

All three select tokens rather than merge them, so each reports ``keep_index``: int64 ``(B, L')``, the input
position of every output token, sorted ascending, with the ``num_prefix_tokens`` prefix tokens (CLS,
registers) always kept first and unchanged. Dropping is random (the global ``torch`` RNG; seed it with
``torch.manual_seed``) and happens in training only: in eval every layer keeps all tokens. Padded
``(B, L, D)`` input, or packed ``(T, D)`` input with ``packed=`` (each sequence on its own, drawn per
sequence; a :class:`~longseq.core.reduction.VarlenOutput` with packed positions, see ``packed.py``).

:class:`ReductionOutput` from these layers has ``sizes`` all ones and ``merge_map=None``: a dropped input
token went to no output token, so no merge map exists; map results back with :func:`scatter_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from longseq.core.packing.batch import PackedBatch
from longseq.core.reduction.base import ReductionOutput
from longseq.core.reduction.packed import (
    patch_dropout_packed,
    random_ltd_forward_packed,
    structured_patchout_packed,
)

Block = Callable[[torch.Tensor], torch.Tensor]


def _check_index(x: torch.Tensor, keep_index: torch.Tensor, what: str) -> None:
    if x.dim() != 3:
        raise ValueError(f"{what} must be padded (B, L, D), got shape {tuple(x.shape)}")
    if keep_index.dtype != torch.int64 or keep_index.dim() != 2 or keep_index.shape[0] != x.shape[0]:
        raise ValueError(
            f"keep_index must be int64 (B={x.shape[0]}, L'), got {keep_index.dtype} {tuple(keep_index.shape)}"
        )


def gather_tokens(x: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
    """Take the tokens at ``keep_index`` from ``x``.

    Args:
        x: ``(B, L, D)``.
        keep_index: int64 ``(B, L')`` with entries in ``[0, L)``.

    Returns:
        ``(B, L', D)`` with row ``j`` equal to ``x[b, keep_index[b, j]]``.
    """
    _check_index(x, keep_index, "x")
    # (B, L') -> (B, L', D)
    return x.gather(1, keep_index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(base: torch.Tensor, x_kept: torch.Tensor, keep_index: torch.Tensor) -> torch.Tensor:
    """Write ``x_kept`` back to positions ``keep_index`` of a copy of ``base`` (the inverse of a gather).

    Out of place, so gradients flow to ``x_kept`` at the kept positions and to ``base`` everywhere else.

    Args:
        base: ``(B, L, D)`` values for the positions not in ``keep_index``.
        x_kept: ``(B, L', D)``.
        keep_index: int64 ``(B, L')``, distinct entries in ``[0, L)`` per row.

    Returns:
        ``(B, L, D)``.
    """
    _check_index(base, keep_index, "base")
    if x_kept.shape != (*keep_index.shape, base.shape[-1]):
        raise ValueError(
            f"x_kept must be (B, L', D) = {(*keep_index.shape, base.shape[-1])}, got {tuple(x_kept.shape)}"
        )
    # (B, L') -> (B, L', D); (B, L, D)
    return base.scatter(1, keep_index.unsqueeze(-1).expand(-1, -1, base.shape[-1]), x_kept.to(base.dtype))


def _num_tokens(x: torch.Tensor, num_prefix_tokens: int) -> int:
    """The number of non-prefix tokens ``N = L - num_prefix_tokens`` of padded ``x``, validated."""
    if x.dim() != 3:
        raise ValueError(f"x must be padded (B, L, D), got shape {tuple(x.shape)}")
    if not 0 <= num_prefix_tokens <= x.shape[1]:
        raise ValueError(f"num_prefix_tokens must be in [0, L={x.shape[1]}], got {num_prefix_tokens}")
    return x.shape[1] - num_prefix_tokens


def _with_prefix(index: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """Prepend the prefix positions to ``index`` ``(B, K)`` of non-prefix tokens (already offset): ``(B, P + K)``."""
    prefix = torch.arange(num_prefix_tokens, device=index.device).expand(index.shape[0], -1)
    return torch.cat([prefix, index], dim=1)


def random_keep_index(batch: int, length: int, keep: int, num_prefix_tokens: int, device=None) -> torch.Tensor:
    """Draw ``keep`` distinct non-prefix tokens per sample, independently per sample.

    Args:
        batch: ``B``.
        length: ``L`` including the prefix.
        keep: non-prefix tokens to keep, in ``[0, L - num_prefix_tokens]``.
        num_prefix_tokens: leading tokens that are always kept.
        device: where the index lives.

    Returns:
        int64 ``(B, num_prefix_tokens + keep)``, sorted ascending, prefix positions first.
    """
    n = length - num_prefix_tokens
    if not 0 <= keep <= n:
        raise ValueError(f"keep must be in [0, {n}] (non-prefix tokens), got {keep}")
    noise = torch.rand(batch, n, device=device)  # (B, N)
    chosen = noise.argsort(dim=1)[:, :keep].sort(dim=1).values + num_prefix_tokens  # (B, keep)
    return _with_prefix(chosen, num_prefix_tokens)


def _output(x: torch.Tensor, keep_index: torch.Tensor) -> ReductionOutput:
    kept = gather_tokens(x, keep_index)  # (B, L', D)
    sizes = torch.ones(*keep_index.shape, 1, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    return ReductionOutput(x=kept, sizes=sizes, merge_map=None, keep_index=keep_index)


def _identity(x: torch.Tensor) -> ReductionOutput:
    B, L, _ = x.shape
    return _output(x, torch.arange(L, device=x.device).expand(B, -1))


class PatchDropout(nn.Module):
    """Unstructured patchout: keep a random ``keep_rate`` fraction of the non-prefix tokens, per sample.

    Keeps ``max(1, round(keep_rate * N))`` of the ``N`` non-prefix tokens (Python's ``round``, halves to
    even; at least one when ``N > 0``), drawn independently for every sample, in input order. In eval, or
    with ``keep_rate=1``, it keeps every token (``keep_index = arange(L)``).

    Args:
        keep_rate: fraction of non-prefix tokens kept, in ``(0, 1]``.
        num_prefix_tokens: leading tokens (CLS, registers) that are always kept.
    """

    def __init__(self, keep_rate: float, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if not 0.0 < keep_rate <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.keep_rate = keep_rate
        self.num_prefix_tokens = num_prefix_tokens

    def extra_repr(self) -> str:
        return f"keep_rate={self.keep_rate}, num_prefix_tokens={self.num_prefix_tokens}"

    def num_kept(self, n: int) -> int:
        """Non-prefix tokens kept out of ``n`` in training."""
        return min(n, max(1, round(self.keep_rate * n))) if n > 0 else 0

    def forward(self, x: torch.Tensor, *, packed: PackedBatch | None = None) -> ReductionOutput:
        """Drop tokens of ``x`` ``(B, L, D)``; returns ``(B, P + num_kept(L - P), D)`` in training.

        With ``packed`` (the boundaries of packed ``x`` ``(T, D)``) returns
        :func:`~longseq.core.reduction.patch_dropout_packed`'s ``VarlenOutput``.
        """
        if packed is not None:
            return patch_dropout_packed(x, packed, self.keep_rate, self.num_prefix_tokens, training=self.training)
        n = _num_tokens(x, self.num_prefix_tokens)
        if not self.training or self.keep_rate == 1.0:
            return _identity(x)
        index = random_keep_index(x.shape[0], x.shape[1], self.num_kept(n), self.num_prefix_tokens, x.device)
        return _output(x, index)

    def forward_packed(self, x: torch.Tensor, packed: PackedBatch) -> tuple[PackedBatch, torch.Tensor]:
        """Drop tokens of packed ``x`` ``(T, D)``, each sequence on its own as :meth:`forward` does a sample.

        Every sequence keeps its first ``num_prefix_tokens`` tokens and ``num_kept(L_i - P)`` random others.

        Args:
            x: ``(T, D)`` packed token features.
            packed: the boundaries (``packed.x`` is not read); every sequence needs ``>= num_prefix_tokens``
                tokens.

        Returns:
            ``(out, keep_index)``: ``out`` a :class:`PackedBatch` of the ``T'`` kept tokens ``(T', D)`` with
            new ``cu_seqlens``, the tight ``max_seqlen`` and ``position_ids`` restarting at 0 per sequence
            (the original positions are ``packed.position_ids[keep_index]``); ``labels`` are not carried
            (``None``): gather per-token labels with ``keep_index``. ``keep_index`` is int64 ``(T',)``, the
            sorted packed positions kept. In eval (or ``keep_rate=1``) ``out.x`` is ``x`` and
            ``keep_index = arange(T)``. Training syncs with the device once (the output size is data
            dependent).
        """
        out = patch_dropout_packed(x, packed, self.keep_rate, self.num_prefix_tokens, training=self.training)
        return out.packed, out.keep_index


class StructuredPatchout(nn.Module):
    """PaSST structured patchout: drop whole time columns and frequency rows of the patch grid.

    The non-prefix tokens are the ``(F, T)`` grid of patches in row-major order (token ``P + f * T + t`` is
    frequency row ``f``, time column ``t``). In training, ``drop_time`` distinct columns and ``drop_freq``
    distinct rows are chosen at random once per batch (as PaSST does: every sample loses the same ones, so the
    output stays a rectangular ``(F - drop_freq, T - drop_time)`` grid, still row-major); in eval it keeps
    every token.

    Args:
        grid: ``(F, T)`` frequency rows and time columns.
        drop_time: time columns dropped, in ``[0, T)``.
        drop_freq: frequency rows dropped, in ``[0, F)``.
        num_prefix_tokens: leading tokens (CLS, distillation, registers) that are always kept.
    """

    def __init__(self, grid: tuple[int, int], drop_time: int, drop_freq: int, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        F, T = grid
        if F < 1 or T < 1:
            raise ValueError(f"grid (F, T) must be positive, got {tuple(grid)}")
        if not 0 <= drop_time < T:
            raise ValueError(f"drop_time must be in [0, T={T}), got {drop_time}")
        if not 0 <= drop_freq < F:
            raise ValueError(f"drop_freq must be in [0, F={F}), got {drop_freq}")
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.grid = (F, T)
        self.drop_time = drop_time
        self.drop_freq = drop_freq
        self.num_prefix_tokens = num_prefix_tokens

    def extra_repr(self) -> str:
        return (
            f"grid={self.grid}, drop_time={self.drop_time}, drop_freq={self.drop_freq}, "
            f"num_prefix_tokens={self.num_prefix_tokens}"
        )

    @property
    def kept_grid(self) -> tuple[int, int]:
        """The ``(F', T')`` grid left in training."""
        return self.grid[0] - self.drop_freq, self.grid[1] - self.drop_time

    def forward(
        self,
        x: torch.Tensor,
        *,
        packed: PackedBatch | None = None,
        grids: Sequence[tuple[int, int]] | torch.Tensor | None = None,
    ) -> ReductionOutput:
        """Drop rows and columns of ``x`` ``(B, P + F * T, D)``; returns ``(B, P + F' * T', D)`` in training.

        With ``packed`` (the boundaries of packed ``x`` ``(T, D)``) every sequence drops rows and columns of its
        own grid, drawn per sequence: ``grids`` gives each sequence's ``(F_i, T_i)`` (default: this layer's
        ``grid`` for all); returns :func:`~longseq.core.reduction.structured_patchout_packed`'s ``VarlenOutput``.
        """
        if packed is not None:
            grids = [self.grid] * packed.num_seqs if grids is None else grids
            return structured_patchout_packed(
                x, packed, grids, self.drop_time, self.drop_freq, self.num_prefix_tokens, training=self.training
            )
        if grids is not None:
            raise ValueError("grids is for packed input (with packed=...); padded input uses the layer's grid")
        n = _num_tokens(x, self.num_prefix_tokens)
        F, T = self.grid
        if n != F * T:
            raise ValueError(
                f"x has L - num_prefix_tokens = {x.shape[1]} - {self.num_prefix_tokens} = {n} tokens, "
                f"expected F * T = {F} * {T} = {F * T}"
            )
        if not self.training or (self.drop_time == 0 and self.drop_freq == 0):
            return _identity(x)
        rows = torch.randperm(F, device=x.device)[self.drop_freq :].sort().values  # (F',)
        cols = torch.randperm(T, device=x.device)[self.drop_time :].sort().values  # (T',)
        # (F', 1) * T + (1, T') -> (F' * T',), row-major hence sorted
        flat = (rows[:, None] * T + cols[None, :]).flatten() + self.num_prefix_tokens
        index = _with_prefix(flat.expand(x.shape[0], -1), self.num_prefix_tokens)
        return _output(x, index)


def _check_range(num_blocks: int, start: int, end: int) -> None:
    if not 0 <= start <= end <= num_blocks:
        raise ValueError(f"need 0 <= start <= end <= len(blocks) = {num_blocks}, got start={start}, end={end}")


def random_ltd_forward(
    blocks: Sequence[Block],
    x: torch.Tensor,
    start: int,
    end: int,
    keep: int,
    num_prefix_tokens: int = 1,
    *,
    training: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``blocks`` on ``x`` with random layerwise token dropping (Random-LTD) over ``blocks[start:end]``.

    Blocks before ``start`` and from ``end`` on see all tokens. Before ``blocks[start]``, ``keep`` random
    non-prefix tokens per sample (plus the prefix) are gathered; only they run through ``blocks[start:end]``,
    the rest are carried unchanged (identity, so their gradient passes straight through). After
    ``blocks[end - 1]`` the processed tokens are scattered back to their input positions. One subset serves
    the whole range (DeepSpeed's Random-LTD redraws it per layer; one draw keeps the restore simple). With
    ``training=False`` every token goes through every block.

    Args:
        blocks: callables ``(B, L, D) -> (B, L, D)`` applied in order (e.g. an ``nn.ModuleList``); a block in
            the range must work on any length.
        x: ``(B, L, D)`` padded tokens, prefix tokens first.
        start: first block of the dropping range.
        end: one past its last block; ``0 <= start <= end <= len(blocks)``.
        keep: non-prefix tokens that go through the range, in ``[1, L - num_prefix_tokens]``.
        num_prefix_tokens: leading tokens that always go through every block.
        training: drop tokens only when true.

    Returns:
        ``(y, keep_index)``: ``y`` ``(B, L, D)``, and int64 ``(B, P + keep)`` sorted positions that went through
        ``blocks[start:end]`` (``arange(L)`` when nothing was dropped).
    """
    _check_range(len(blocks), start, end)
    n = _num_tokens(x, num_prefix_tokens)
    if not 1 <= keep <= max(n, 1):
        raise ValueError(f"keep must be in [1, L - num_prefix_tokens = {n}], got {keep}")
    B, L, _ = x.shape
    drop = training and keep < n and start < end
    if drop:
        keep_index = random_keep_index(B, L, keep, num_prefix_tokens, x.device)
    else:
        keep_index = torch.arange(L, device=x.device).expand(B, -1)
    for i, block in enumerate(blocks):
        if drop and i == start:
            full, x = x, gather_tokens(x, keep_index)  # (B, L, D), (B, P + keep, D)
        x = block(x)
        if drop and i == end - 1:
            x = scatter_tokens(full, x, keep_index)  # (B, L, D)
    return x, keep_index


class RandomLTD(nn.Module):
    """A block stack with random layerwise token dropping over ``blocks[start:end]``; see :func:`random_ltd_forward`.

    Drops tokens in training only; in eval it equals running every block on every token.

    Args:
        blocks: the blocks, each ``(B, L, D) -> (B, L, D)``.
        start: first block of the dropping range.
        end: one past its last block; ``0 <= start <= end <= len(blocks)``.
        keep: non-prefix tokens that go through the range, ``>= 1``.
        num_prefix_tokens: leading tokens that always go through every block.
    """

    def __init__(
        self, blocks: nn.ModuleList | Sequence[nn.Module], start: int, end: int, keep: int, num_prefix_tokens: int = 1
    ) -> None:
        super().__init__()
        self.blocks = blocks if isinstance(blocks, nn.ModuleList) else nn.ModuleList(blocks)
        _check_range(len(self.blocks), start, end)
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.start, self.end, self.keep = start, end, keep
        self.num_prefix_tokens = num_prefix_tokens

    def extra_repr(self) -> str:
        return f"start={self.start}, end={self.end}, keep={self.keep}, num_prefix_tokens={self.num_prefix_tokens}"

    def forward(self, x: torch.Tensor, *, packed: PackedBatch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the blocks on ``x`` ``(B, L, D)``; returns ``(y, keep_index)`` as :func:`random_ltd_forward`.

        With ``packed`` (the boundaries of packed ``x`` ``(T, D)``) runs
        :func:`~longseq.core.reduction.random_ltd_forward_packed` (blocks are called ``block(h, packed=...)``).
        """
        if packed is not None:
            return random_ltd_forward_packed(
                self.blocks, x, packed, self.start, self.end, self.keep, self.num_prefix_tokens, training=self.training
            )
        return random_ltd_forward(
            self.blocks, x, self.start, self.end, self.keep, self.num_prefix_tokens, training=self.training
        )
