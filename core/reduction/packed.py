"""Packed ``(T, D)`` input for ToMe, patch dropout, structured patchout and Random-LTD.

Every function here runs each packed sequence on its own, as the padded layer runs one row, without ever
mixing tokens of two sequences; prefix tokens (the first ``num_prefix_tokens`` of every sequence) are
never reduced and stay first. Results are :class:`~longseq.core.reduction.VarlenOutput` with the new
boundaries in ``packed`` (like :func:`~longseq.core.reduction.attentive_prune_packed`); ``merge_map``
``(T,)`` and ``keep_index`` ``(T',)`` hold *packed* positions, so ``unmerge(y, merge_map)`` is ``y[merge_map]``
and ``x[keep_index]`` the kept tokens.

* ToMe (:func:`token_merging_packed`): bipartite soft matching per sequence, ``r_i = min(r_i, (L_i - P) // 2)``
  (the padded clipping rule applied to each sequence). Vectorised over sequences on a padded
  ``(N, ceil(max n / 2), max n // 2)`` score tensor with the padding masked out, so it costs what the
  padded layer costs on the longest sequence, times ``N``.
* Dropping (:func:`patch_dropout_packed`, :func:`structured_patchout_packed`,
  :func:`random_ltd_forward_packed`): random subsets drawn independently per sequence from the global
  ``torch`` RNG; the identity in eval.

The boundaries are validated on entry (:func:`~longseq.core.packing.validate_cu_seqlens`); outputs sync with
the device once or twice (their sizes are data dependent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from longseq.core.packing.batch import (
    PackedBatch,
    cu_seqlens_from_lengths,
    position_ids_from_cu_seqlens,
    segment_ids,
    validate_cu_seqlens,
)
from longseq.core.reduction.varlen import (
    VarlenOutput,
    _acc_sizes,
    _check_packed,
    _check_prefix,
    _check_tokenwise,
    _packed_output,
)

# ruff: noqa: N806  (B, L, D, T, N, P follow the shape-comment convention)

PackedBlock = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _check_packed_input(x: torch.Tensor, packed: PackedBatch, num_prefix_tokens: int, what: str = "x") -> None:
    """Raise unless ``x`` is ``(T, ...)`` with valid ``packed`` boundaries, each sequence ``>= P`` tokens."""
    if not isinstance(packed, PackedBatch):
        raise TypeError(f"packed must be a PackedBatch, got {type(packed).__name__}")
    _check_prefix(num_prefix_tokens)
    if x.dim() != 2 or x.shape[0] != packed.num_tokens:
        raise ValueError(f"{what} must be packed (T={packed.num_tokens}, D), got shape {tuple(x.shape)}")
    if not torch.compiler.is_compiling():
        if packed.cu_seqlens.device != x.device:
            raise ValueError(f"packed.cu_seqlens is on {packed.cu_seqlens.device} but {what} is on {x.device}")
        validate_cu_seqlens(packed.cu_seqlens, x.shape[0])
    _check_packed(x, packed, num_prefix_tokens)


def _per_sequence(value: int | Sequence[int] | torch.Tensor, n: int, device, what: str) -> torch.Tensor:
    """``value`` as int64 ``(N,)`` on ``device``: one int for every sequence or one per sequence, each ``>= 0``."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an int >= 0 or one per sequence, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{what} must be >= 0, got {value}")
        return torch.full((n,), value, dtype=torch.long, device=device)
    t = torch.as_tensor(value, device=device)
    if t.shape != (n,) or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{what} must be an int or {n} ints (one per sequence), got {t.dtype} {tuple(t.shape)}")
    if bool((t < 0).any()):
        raise ValueError(f"{what} must be >= 0, got {t.tolist()}")
    return t.long()


def _random_rank(cu_seqlens: torch.Tensor, position_ids: torch.Tensor, num_prefix_tokens: int = 0) -> torch.Tensor:
    """Every token's rank within its sequence in a uniformly random order that puts the prefix first.

    Draws ``T`` uniforms (float64) from the global RNG; returns int64 ``(T,)``.
    """
    T = position_ids.shape[0]
    seg = segment_ids(cu_seqlens, T)
    pos = position_ids.long()
    noise = torch.rand(T, device=position_ids.device, dtype=torch.float64)
    # sequences apart (x4), the prefix first (0) within one, then a random order of the rest (1 + U[0, 1))
    key = seg.double() * 4 + torch.where(pos < num_prefix_tokens, 0.0, 1.0 + noise)
    order = key.argsort(stable=True)  # (T,)
    return torch.empty_like(pos).scatter_(0, order, torch.arange(T, device=pos.device) - cu_seqlens.long()[seg[order]])


def random_keep_index_packed(
    packed: PackedBatch, keep: int | Sequence[int] | torch.Tensor, num_prefix_tokens: int
) -> torch.Tensor:
    """Draw ``keep_i`` distinct non-prefix tokens in every packed sequence, independently per sequence.

    Args:
        packed: the boundaries (``packed.x`` is not read).
        keep: non-prefix tokens kept, one int for all or ``(N,)``; ``keep_i`` in ``[0, L_i - P]``.
        num_prefix_tokens: ``P`` leading tokens of each sequence, always kept.

    Returns:
        int64 ``(T',)``, the sorted packed positions kept (each sequence: its prefix, then ``keep_i`` others),
        ``T' = sum_i (P + keep_i)``.
    """
    _check_prefix(num_prefix_tokens)
    n = packed.seqlens.long() - num_prefix_tokens  # (N,)
    if bool((n < 0).any()):
        raise ValueError(
            f"every sequence needs >= num_prefix_tokens={num_prefix_tokens} tokens, got lengths {packed.seqlens.tolist()}"
        )
    keep = _per_sequence(keep, packed.num_seqs, n.device, "keep")
    if bool((keep > n).any()):
        raise ValueError(f"keep must be <= each sequence's non-prefix tokens {n.tolist()}, got {keep.tolist()}")
    rank = _random_rank(packed.cu_seqlens, packed.position_ids, num_prefix_tokens)
    seg = segment_ids(packed.cu_seqlens, packed.num_tokens)
    return (rank < (num_prefix_tokens + keep)[seg]).nonzero().flatten()


def _selected(x: torch.Tensor, keep_index: torch.Tensor, lengths: torch.Tensor) -> VarlenOutput:
    """The tokens ``x[keep_index]`` with per-sequence ``lengths``, sizes all ones."""
    out = x[keep_index]
    sizes = _acc_sizes(out, None)
    return VarlenOutput(x=out, sizes=sizes, merge_map=None, keep_index=keep_index, packed=_packed_output(out, lengths))


def _all_kept(x: torch.Tensor, packed: PackedBatch) -> VarlenOutput:
    """Nothing dropped: ``x`` itself, ``keep_index = arange(T)``, the input boundaries."""
    index = torch.arange(x.shape[0], device=x.device)
    out_packed = PackedBatch(x, packed.cu_seqlens, packed.max_seqlen, packed.position_ids, check=False)
    return VarlenOutput(x=x, sizes=_acc_sizes(x, None), merge_map=None, keep_index=index, packed=out_packed)


# --------------------------------------------------------------------------------------------
# ToMe
# --------------------------------------------------------------------------------------------


@dataclass
class PackedMerge:
    """A merge of packed tokens found by :func:`bipartite_soft_matching_packed`; call it on any ``(T, D)``.

    Attributes:
        merge_map: int64 ``(T,)``, the packed output position of every input token (always inside its own
            sequence's output range).
        packed: the output boundaries; ``packed.x`` is a placeholder of shape ``(T', 0)``.
        r: int64 ``(N,)``, the tokens each sequence lost (after clipping).
    """

    merge_map: torch.Tensor
    packed: PackedBatch
    r: torch.Tensor

    @property
    def out_len(self) -> int:
        """``T'``, the number of output tokens."""
        return self.packed.num_tokens

    def __call__(self, x: torch.Tensor, mode: str = "sum") -> torch.Tensor:
        """Reduce ``x`` ``(T, D)`` to ``(T', D)`` by ``"sum"`` or ``"mean"`` over each merged group."""
        T = self.merge_map.shape[0]
        if x.dim() != 2 or x.shape[0] != T:
            raise ValueError(f"x must be packed (T={T}, D), got shape {tuple(x.shape)}")
        if mode not in ("sum", "mean"):
            raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")
        out = x.new_zeros(self.out_len, x.shape[1]).index_add(0, self.merge_map, x)
        if mode == "mean":
            count = x.new_zeros(self.out_len, 1).index_add(0, self.merge_map, x.new_ones(T, 1))
            out = out / count
        return out


def bipartite_soft_matching_packed(
    metric: torch.Tensor,
    packed: PackedBatch,
    r: int | Sequence[int] | torch.Tensor,
    num_prefix_tokens: int = 1,
) -> PackedMerge:
    """:func:`~longseq.core.reduction.bipartite_soft_matching` on every packed sequence at once.

    Sequence ``i`` (``L_i`` tokens, ``n_i = L_i - P`` of them non-prefix) merges
    ``r_i = min(r_i, n_i // 2)`` tokens, exactly as the padded function merges a row of length ``L_i``;
    no token is matched across a sequence boundary. A sequence of only prefix tokens (``n_i = 0``) is kept.

    Args:
        metric: ``(T, C)`` packed similarity features; no gradient flows through the matching.
        packed: the boundaries; every sequence needs ``>= num_prefix_tokens`` tokens.
        r: tokens to remove per sequence: one int for all, or ``(N,)`` ints; each ``>= 0``.
        num_prefix_tokens: ``P`` leading tokens of each sequence, never merged.

    Returns:
        A :class:`PackedMerge`; output sequence ``i`` has ``L_i - r_i`` tokens in the padded order
        ``[prefix, unmerged a, b]``.
    """
    _check_packed_input(metric, packed, num_prefix_tokens, "metric")
    P = num_prefix_tokens
    T, C = metric.shape
    N = packed.num_seqs
    device = metric.device
    cu = packed.cu_seqlens
    seg = segment_ids(cu, T)
    pos = packed.position_ids.long()
    n = packed.seqlens.long() - P  # (N,)
    n_a, n_b = (n + 1) // 2, n // 2
    r = torch.minimum(_per_sequence(r, N, device, "r"), n_b)  # (N,)
    n_unm = n_a - r
    lengths = n + P - r
    A, Bm = (int(v) for v in torch.stack([n_a.max(), n_b.max()]).tolist()) if N else (0, 0)
    q = pos - P  # (T,) index among the non-prefix tokens, < 0 for the prefix
    is_a, is_b = (q >= 0) & (q % 2 == 0), (q >= 0) & (q % 2 == 1)
    j = q.clamp(min=0) // 2  # (T,) index within set a or set b
    with torch.no_grad():
        m = metric.float()
        m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        target_a = torch.zeros(N, A, dtype=torch.long, device=device)
        if A > 0:
            ia, ib = is_a.nonzero().flatten(), is_b.nonzero().flatten()
            a = m.new_zeros(N, A, C).index_put((seg[ia], j[ia]), m[ia])  # (N, A, C)
            b = m.new_zeros(N, Bm, C).index_put((seg[ib], j[ib]), m[ib])  # (N, Bm, C)
            scores = a @ b.transpose(-1, -2)  # (N, A, Bm)
            col_ok = torch.arange(Bm, device=device) < n_b[:, None]  # (N, Bm)
            scores = scores.masked_fill(~col_ok[:, None, :], float("-inf"))
            if Bm > 0:
                node_max, node_idx = scores.max(dim=-1)  # (N, A)
            else:
                node_max = torch.zeros(N, A, device=device)
                node_idx = torch.zeros(N, A, dtype=torch.long, device=device)
            row_ok = torch.arange(A, device=device) < n_a[:, None]  # (N, A)
            order = node_max.argsort(dim=-1, descending=True, stable=True)  # the padded order among real rows
            order = order.gather(1, (~row_ok).gather(1, order).long().argsort(dim=1, stable=True))  # padding last
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(A, device=device).expand(N, A))
            src = row_ok & (rank < r[:, None])  # (N, A) a tokens that merge
            unm_pos = (row_ok & ~src).long().cumsum(1) - 1  # position among the unmerged a tokens
            target_a = torch.where(src, P + n_unm[:, None] + node_idx, P + unm_pos)
        local = torch.where(is_b, P + n_unm[seg] + j, pos)  # prefix: itself
        if A > 0:
            local = torch.where(is_a, target_a[seg, j.clamp(max=A - 1)], local)
        out_cu = cu_seqlens_from_lengths(lengths)
        merge_map = local + out_cu.long()[seg]  # (T,) packed output positions
    T_out = T - int(r.sum())
    placeholder = metric.new_empty(T_out, 0)
    max_seqlen = int(lengths.max()) if N else 0
    out = PackedBatch(placeholder, out_cu, max_seqlen, position_ids_from_cu_seqlens(out_cu, T_out), check=False)
    return PackedMerge(merge_map=merge_map, packed=out, r=r)


def merge_wavg_packed(
    merge: PackedMerge, x: torch.Tensor, sizes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~longseq.core.reduction.merge_wavg` for packed ``x`` ``(T, D)`` and ``sizes`` ``(T, 1)``.

    Returns ``(x', sizes')`` shaped ``(T', D)`` in ``x``'s dtype and ``(T', 1)`` in at least fp32 (the weighted
    sums run in at least fp32).
    """
    T = merge.merge_map.shape[0]
    if x.dim() != 2 or x.shape[0] != T:
        raise ValueError(f"x must be packed (T={T}, D), got shape {tuple(x.shape)}")
    _check_tokenwise(sizes, (T,), "sizes", (1,))
    sizes = _acc_sizes(x, sizes)
    out = merge(x.to(sizes.dtype) * sizes, mode="sum")  # (T', D)
    sizes = merge(sizes, mode="sum")  # (T', 1)
    return (out / sizes).to(x.dtype), sizes


def token_merging_packed(
    x: torch.Tensor,
    packed: PackedBatch,
    r: int | Sequence[int] | torch.Tensor,
    num_prefix_tokens: int = 1,
    *,
    sizes: torch.Tensor | None = None,
    metric: torch.Tensor | None = None,
) -> VarlenOutput:
    """One ToMe step on packed ``x`` ``(T, D)``: every sequence merges ``min(r_i, (L_i - P) // 2)`` tokens.

    Args:
        x: packed tokens, each sequence's prefix first.
        packed: the boundaries of ``x``.
        r: tokens removed per sequence (one int for all, or ``(N,)``).
        num_prefix_tokens: ``P`` leading tokens of each sequence, never merged.
        sizes: ``(T, 1)`` sizes from earlier merges; ``None`` means all ones.
        metric: ``(T, C)`` similarity features; defaults to ``x``.

    Returns:
        A :class:`VarlenOutput`: ``x`` ``(T', D)``, ``sizes`` ``(T', 1)`` (each sequence's sizes sum to its
        input total), ``merge_map`` ``(T,)`` packed output positions, ``packed`` the new boundaries (also
        ``keep_index=None``, ``mask=None``). Sequence ``i`` of it equals the padded
        :class:`~longseq.core.reduction.TokenMerging` on sequence ``i`` alone.
    """
    _check_packed_input(x, packed, num_prefix_tokens)
    if metric is None:
        metric = x
    elif metric.dim() != 2 or metric.shape[0] != x.shape[0]:
        raise ValueError(f"metric must be packed (T={x.shape[0]}, C), got shape {tuple(metric.shape)}")
    merge = bipartite_soft_matching_packed(metric, packed, r, num_prefix_tokens)
    out, out_sizes = merge_wavg_packed(merge, x, sizes)
    return VarlenOutput(
        x=out, sizes=out_sizes, merge_map=merge.merge_map, keep_index=None, packed=merge.packed.with_x(out)
    )


# --------------------------------------------------------------------------------------------
# dropping
# --------------------------------------------------------------------------------------------


def _patch_dropout_num_kept(n: torch.Tensor, keep_rate: float) -> torch.Tensor:
    """:meth:`PatchDropout.num_kept` for every sequence: ``min(n, max(1, round(keep_rate * n)))``, 0 if ``n = 0``.

    ``n`` int ``(N,)``; rounds half to even in float64 like Python's ``round``.
    """
    return torch.where(n > 0, (n.double() * keep_rate).round().long().clamp(min=1).minimum(n), 0)


def patch_dropout_packed(
    x: torch.Tensor, packed: PackedBatch, keep_rate: float, num_prefix_tokens: int = 1, *, training: bool = True
) -> VarlenOutput:
    """:class:`PatchDropout` on packed ``x`` ``(T, D)``: sequence ``i`` keeps its prefix and
    ``num_kept(L_i - P)`` random others, drawn independently per sequence.

    Returns a :class:`VarlenOutput` (``keep_index`` ``(T',)`` sorted packed positions, ``sizes`` ones,
    ``packed`` the new boundaries with ``position_ids`` restarting per sequence). With ``training=False`` or
    ``keep_rate=1`` it keeps everything: ``x`` itself and the input boundaries.
    """
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    _check_packed_input(x, packed, num_prefix_tokens)
    if not training or keep_rate == 1.0:
        return _all_kept(x, packed)
    kept = _patch_dropout_num_kept(packed.seqlens.long() - num_prefix_tokens, keep_rate)  # (N,)
    keep_index = random_keep_index_packed(packed, kept, num_prefix_tokens)
    return _selected(x, keep_index, num_prefix_tokens + kept)


def _grids_tensor(grids: Sequence[tuple[int, int]] | torch.Tensor, packed: PackedBatch, P: int) -> torch.Tensor:
    """Validate per-sequence ``(F_i, T_i)`` grids against the packed lengths; int64 ``(N, 2)`` on the CPU."""
    N = packed.num_seqs
    try:
        g = grids.cpu() if isinstance(grids, torch.Tensor) else torch.tensor(list(grids))
    except (TypeError, ValueError) as err:
        raise ValueError(f"grids must give one (freq, time) pair of ints per packed sequence, got {grids!r}") from err
    if g.shape != (N, 2) or g.is_floating_point() or g.dtype == torch.bool:
        raise ValueError(
            f"grids must give one (freq, time) pair of ints per packed sequence, shape ({N}, 2), got "
            f"{g.dtype} {tuple(g.shape)}"
        )
    g = g.long()
    if bool((g < 1).any()):
        raise ValueError(f"every grid (F_i, T_i) must be positive, got {g.tolist()}")
    n = (packed.seqlens.long().cpu() - P).tolist()
    for i, ((F, T), ni) in enumerate(zip(g.tolist(), n)):
        if ni != F * T:
            raise ValueError(
                f"packed sequence {i} has L_i - num_prefix_tokens = {ni + P} - {P} = {ni} tokens, "
                f"expected F_i * T_i = {F} * {T} = {F * T} from its grid"
            )
    return g


def structured_patchout_packed(
    x: torch.Tensor,
    packed: PackedBatch,
    grids: Sequence[tuple[int, int]] | torch.Tensor,
    drop_time: int,
    drop_freq: int,
    num_prefix_tokens: int = 1,
    *,
    training: bool = True,
) -> VarlenOutput:
    """:class:`StructuredPatchout` on packed ``x`` ``(T, D)`` whose sequences have their own patch grids.

    Sequence ``i`` is ``P`` prefix tokens then its ``(F_i, T_i)`` grid, row-major. It loses ``drop_freq``
    random rows and ``drop_time`` random columns of its own grid, drawn independently per sequence (grids
    differ, so the padded layer's one choice per batch does not carry over), keeping a row-major
    ``(F_i - drop_freq, T_i - drop_time)`` grid.

    Args:
        x: packed tokens.
        packed: the boundaries of ``x``.
        grids: ``(F_i, T_i)`` per sequence, a list of ``N`` pairs or an int ``(N, 2)`` tensor; needs
            ``L_i = P + F_i * T_i``, ``drop_freq < F_i`` and ``drop_time < T_i``.
        drop_time: time columns dropped per sequence, ``>= 0``.
        drop_freq: frequency rows dropped per sequence, ``>= 0``.
        num_prefix_tokens: ``P`` leading tokens per sequence, always kept.
        training: drop only when true (else everything is kept).

    Returns:
        A :class:`VarlenOutput` as :func:`patch_dropout_packed` returns.
    """
    _check_packed_input(x, packed, num_prefix_tokens)
    P = num_prefix_tokens
    g = _grids_tensor(grids, packed, P)
    for name, drop, axis in (("drop_freq", drop_freq, 0), ("drop_time", drop_time, 1)):
        if drop < 0 or bool((drop >= g[:, axis]).any()):
            raise ValueError(
                f"{name} must be in [0, {'F_i' if axis == 0 else 'T_i'}) for every sequence, got {drop} with "
                f"grids {g.tolist()}"
            )
    if not training or (drop_time == 0 and drop_freq == 0):
        return _all_kept(x, packed)
    g = g.to(x.device)
    Fg, Tg = g[:, 0], g[:, 1]  # (N,)
    row_cu, col_cu = cu_seqlens_from_lengths(Fg), cu_seqlens_from_lengths(Tg)
    # per sequence, a random order of its rows (columns); the first drop_freq (drop_time) of it are dropped
    row_keep = _random_rank(row_cu, position_ids_from_cu_seqlens(row_cu, int(Fg.sum()))) >= drop_freq
    col_keep = _random_rank(col_cu, position_ids_from_cu_seqlens(col_cu, int(Tg.sum()))) >= drop_time
    seg = segment_ids(packed.cu_seqlens, x.shape[0])
    q = (packed.position_ids.long() - P).clamp(min=0)  # (T,) grid index (0 for the prefix)
    f, t = q // Tg[seg], q % Tg[seg]
    keep = (packed.position_ids < P) | (row_keep[row_cu.long()[seg] + f] & col_keep[col_cu.long()[seg] + t])
    lengths = P + (Fg - drop_freq) * (Tg - drop_time)
    return _selected(x, keep.nonzero().flatten(), lengths)


def random_ltd_forward_packed(
    blocks: Sequence[PackedBlock],
    x: torch.Tensor,
    packed: PackedBatch,
    start: int,
    end: int,
    keep: int,
    num_prefix_tokens: int = 1,
    *,
    training: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~longseq.core.reduction.random_ltd_forward` on packed ``x`` ``(T, D)``.

    Sequence ``i`` sends its prefix and ``min(keep, L_i - P)`` random non-prefix tokens (drawn per sequence)
    through ``blocks[start:end]``; the rest skip the range unchanged, and after it every processed token
    goes back to its own position in its own sequence. Blocks are called ``block(h, packed=boundaries)``
    (the project's packed-layer convention): outside the range with ``packed``, inside it with the kept
    tokens' boundaries.

    Args:
        blocks: callables ``(T, D), packed=PackedBatch -> (T, D)``.
        x: packed tokens, each sequence's prefix first.
        packed: the boundaries of ``x``.
        start: first block of the dropping range.
        end: one past its last block; ``0 <= start <= end <= len(blocks)``.
        keep: non-prefix tokens per sequence through the range, ``>= 1`` (clipped to each sequence's).
        num_prefix_tokens: ``P`` leading tokens per sequence, through every block.
        training: drop tokens only when true.

    Returns:
        ``(y, keep_index)``: ``y`` ``(T, D)``, and int64 ``(T',)`` the sorted packed positions that went
        through ``blocks[start:end]`` (``arange(T)`` when nothing was dropped).
    """
    if not 0 <= start <= end <= len(blocks):
        raise ValueError(f"need 0 <= start <= end <= len(blocks) = {len(blocks)}, got start={start}, end={end}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    _check_packed_input(x, packed, num_prefix_tokens)
    n = packed.seqlens.long() - num_prefix_tokens
    kept = n.clamp(max=keep)  # (N,)
    drop = training and start < end and bool((kept < n).any())
    if drop:
        keep_index = random_keep_index_packed(packed, kept, num_prefix_tokens)
    else:
        keep_index = torch.arange(x.shape[0], device=x.device)
    current = packed
    for i, block in enumerate(blocks):
        if drop and i == start:
            full, x = x, x[keep_index]  # (T, D), (T', D)
            current = _packed_output(x, num_prefix_tokens + kept)
        x = block(x, packed=current)
        if drop and i == end - 1:
            x = full.index_copy(0, keep_index, x.to(full.dtype))  # (T, D), out of place
            current = packed
    return x, keep_index
