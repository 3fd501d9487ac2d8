"""Token pruning by attention: EViT's attentive pruning with token fusion and LTP's learned thresholds.

* :class:`AttentiveTokenPruning` (EViT, Liang et al. 2022, "Not All Patches are What You Need"): keep the
  ``ceil(keep_rate * n)`` non-prefix tokens the CLS token attends to most (its attention row averaged over
  heads, :func:`cls_attention`) and fuse the rest into one token, their attention-weighted average.
* :class:`LearnedTokenPruning` (LTP, Kim et al. 2022, "Learned Token Pruning for Transformers"): a learnable
  threshold ``theta`` on the importance score ``s`` (the mean attention a token receives,
  :func:`attention_received`); training multiplies every token by the soft mask ``sigmoid((s - theta) / T)``,
  inference drops the tokens with ``s < theta``. :meth:`LearnedTokenPruning.regularization_loss` is the
  paper's L1 penalty on the soft mask.

Both take padded ``(B, L, D)`` input (LTP also with a bool ``mask``, True at real tokens) or packed
``(T, D)`` input with a :class:`~longseq.core.packing.PackedBatch`; packed output equals running every
sequence alone. Prefix tokens (CLS, registers) are always kept, first and unchanged. Outputs whose rows
differ in length come as :class:`VarlenOutput`: padded to the longest row with a ``mask``, or packed with the
new boundaries in ``packed`` (see ``varlen.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from longseq.core.packing.batch import (
    PackedBatch,
    cu_seqlens_from_lengths,
    segment_ids,
)
from longseq.core.packing.segments import segment_softmax, segment_sum
from longseq.core.reduction.base import ReductionOutput
from longseq.core.reduction.varlen import (
    VarlenOutput,
    _acc_sizes,
    _check_mask,
    _check_packed,
    _check_padded,
    _check_prefix,
    _check_tokenwise,
    _packed_output,
    padded_to_packed,
    varlen_to_padded,
)

# ruff: noqa: N806  (B, L, D, T, H, P follow the shape-comment convention)


# --------------------------------------------------------------------------------------------
# attention scores
# --------------------------------------------------------------------------------------------


def _heads_match(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``k`` with its heads repeated to ``q``'s (GQA); shapes ``(..., H, D)``."""
    H, H_kv = q.shape[-2], k.shape[-2]
    if H_kv < 1 or H % H_kv or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"k (..., H_kv, D) must divide q's heads and match its D: q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    return k.repeat_interleave(H // H_kv, dim=-2) if H_kv != H else k


def _log_sizes(sizes: torch.Tensor | None, lead: tuple[int, ...]) -> torch.Tensor | float:
    if sizes is None:
        return 0.0
    _check_tokenwise(sizes, lead, "sizes", (1,))
    return sizes[..., 0].float().log()


def cls_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: float | None = None,
    sizes: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """The CLS token's attention row, averaged over heads: EViT's token importance.

    ``a_j = mean_h softmax_j(q_0 . k_j * scale + log size_j)`` where token 0 of each sequence is the CLS.
    Costs one query row (``O(L)``), so attention itself can stay fused.

    Args:
        q: ``(B, L, H, D)`` queries, or packed ``(T, H, D)`` with ``cu_seqlens``.
        k: ``(B, L, H_kv, D)`` keys, or packed ``(T, H_kv, D)``; ``H_kv`` divides ``H``.
        scale: score scale, default ``1 / sqrt(D)``.
        sizes: optional ``(B, L, 1)`` / ``(T, 1)`` token sizes (proportional attention).
        cu_seqlens: int32 ``[N+1]`` boundaries of packed ``q``/``k``.

    Returns:
        fp32 ``(B, L)`` or ``(T,)``; every row (sequence) sums to 1.
    """
    k = _heads_match(q, k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if cu_seqlens is None:
        if q.dim() != 4 or k.shape != q.shape:
            raise ValueError(f"q, k must be padded (B, L, H, D) alike, got {tuple(q.shape)} and {tuple(k.shape)}")
        s = torch.einsum("bhd,blhd->blh", q[:, 0].float(), k.float()) * scale  # (B, L, H)
        if sizes is not None:
            s = s + _log_sizes(sizes, tuple(q.shape[:2]))[..., None]
        return s.softmax(dim=1).mean(dim=-1)
    if q.dim() != 3 or k.shape != q.shape:
        raise ValueError(f"packed q, k must be (T, H, D) alike, got {tuple(q.shape)} and {tuple(k.shape)}")
    T = q.shape[0]
    seg = segment_ids(cu_seqlens, T)
    q_cls = q[cu_seqlens[:-1].long()[seg]]  # (T, H, D) the CLS query of each token's sequence
    s = (q_cls.float() * k.float()).sum(-1) * scale  # (T, H)
    if sizes is not None:
        s = s + _log_sizes(sizes, (T,))[:, None]
    return segment_softmax(s, cu_seqlens).mean(dim=-1)


def attention_received(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: float | None = None,
    mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """LTP's importance score: the attention probability each token receives, averaged over heads and queries.

    ``s_j = mean_{h, i} softmax_j(q_i . k_j * scale)`` over the real queries ``i`` of the sequence. This
    materialises the ``(H, L, L)`` probabilities (per sequence when packed), as LTP does.

    Args:
        q: ``(B, L, H, D)`` or packed ``(T, H, D)`` with ``cu_seqlens``.
        k: ``(B, L, H_kv, D)`` or packed ``(T, H_kv, D)``.
        scale: default ``1 / sqrt(D)``.
        mask: bool ``(B, L)``, True at real tokens (padded input); padding neither attends nor is attended.
        cu_seqlens: int32 ``[N+1]`` for packed input.

    Returns:
        fp32 ``(B, L)`` (0 at padding) or ``(T,)``.
    """
    k = _heads_match(q, k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if cu_seqlens is not None:
        starts = cu_seqlens.tolist()
        parts = [
            attention_received(q[a:b][None], k[a:b][None], scale=scale)[0] for a, b in zip(starts[:-1], starts[1:])
        ]
        return torch.cat(parts) if parts else q.new_zeros(0, dtype=torch.float32)
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q, k must be padded (B, L, H, D) alike, got {tuple(q.shape)} and {tuple(k.shape)}")
    B, L = q.shape[:2]
    if mask is None:
        mask = torch.ones(B, L, dtype=torch.bool, device=q.device)
    elif mask.dtype != torch.bool or tuple(mask.shape) != (B, L):
        raise ValueError(f"mask must be bool ({B}, {L}), got {mask.dtype} {tuple(mask.shape)}")
    s = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) * scale  # (B, H, L, L)
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    p = torch.softmax(s.masked_fill(~mask[:, None, :, None], 0.0), dim=-1)  # padded query rows: finite
    w = mask.float() / mask.sum(1, keepdim=True).clamp_min(1)  # (B, L) weight of each real query
    return torch.einsum("bhij,bi->bj", p, w) / q.shape[2] * mask


# --------------------------------------------------------------------------------------------
# EViT
# --------------------------------------------------------------------------------------------


def evit_num_kept(n: int, keep_rate: float) -> int:
    """EViT's kept count of ``n`` candidate tokens: ``ceil(keep_rate * n)`` (1e-6 slack for float error)."""
    return min(n, max(0, math.ceil(keep_rate * n - 1e-6)))


def _fuse_weights(w: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Normalise weights by their ``total``; all-zero groups get equal weights (their ``total`` is 0)."""
    return w / total.clamp_min(torch.finfo(w.dtype).tiny)


def attentive_prune(
    x: torch.Tensor,
    scores: torch.Tensor,
    keep: int,
    num_prefix_tokens: int = 1,
    *,
    sizes: torch.Tensor | None = None,
    fuse: bool = True,
) -> ReductionOutput:
    """Keep the ``keep`` highest-scoring non-prefix tokens of every row; fuse the rest into one token.

    Args:
        x: ``(B, L, D)`` tokens, prefix first.
        scores: ``(B, L)`` importance (e.g. :func:`cls_attention`); prefix scores are not read.
        keep: non-prefix tokens kept, in ``[0, L - P]``.
        num_prefix_tokens: ``P`` leading tokens, always kept.
        sizes: ``(B, L, 1)`` token sizes (default ones).
        fuse: append the score-weighted average of the pruned tokens (size = their summed sizes).

    Returns:
        Output order ``[prefix, kept (input order), fused]``. With ``fuse``: ``merge_map`` ``(B, L)`` (a
        pruned token maps to the fused slot ``L' - 1``) and ``keep_index=None``; without: ``keep_index``
        ``(B, P + keep)``. Nothing pruned (``keep = L - P``): ``x`` itself, unchanged.
    """
    _check_prefix(num_prefix_tokens)
    _check_padded(x, num_prefix_tokens)
    B, L, D = x.shape
    P, n = num_prefix_tokens, L - num_prefix_tokens
    _check_tokenwise(scores, (B, L), "scores")
    _check_tokenwise(sizes, (B, L), "sizes", (1,))
    if not 0 <= keep <= n:
        raise ValueError(f"keep must be in [0, L - num_prefix_tokens = {n}], got {keep}")
    sizes = _acc_sizes(x, sizes)
    if keep == n:
        index = torch.arange(L, device=x.device).expand(B, L)
        return ReductionOutput(x=x, sizes=sizes, merge_map=index if fuse else None, keep_index=None if fuse else index)
    order = scores[:, P:].float().argsort(dim=1, descending=True, stable=True) + P  # (B, n)
    prefix = torch.arange(P, device=x.device).expand(B, P)
    keep_index = torch.cat([prefix, order[:, :keep].sort(dim=1).values], dim=1)  # (B, P + keep) input order
    kept = x.gather(1, keep_index[..., None].expand(-1, -1, D))  # (B, P + keep, D)
    kept_sizes = sizes.gather(1, keep_index[..., None])
    if not fuse:
        return ReductionOutput(x=kept, sizes=kept_sizes, merge_map=None, keep_index=keep_index)
    rest = order[:, keep:]  # (B, n - keep)
    w = scores.gather(1, rest).to(sizes.dtype)  # (B, n - keep)
    total = w.sum(1, keepdim=True)
    w = torch.where(total > 0, w, 1.0)  # all-zero weights: the plain mean
    w = _fuse_weights(w, w.sum(1, keepdim=True))
    xr = x.gather(1, rest[..., None].expand(-1, -1, D)).to(sizes.dtype)  # (B, n - keep, D)
    fused = (xr * w[..., None]).sum(1, keepdim=True).to(x.dtype)  # (B, 1, D)
    fused_size = sizes.gather(1, rest[..., None]).sum(1, keepdim=True)  # (B, 1, 1)
    merge_map = torch.full((B, L), P + keep, dtype=torch.long, device=x.device)
    merge_map.scatter_(1, keep_index, torch.arange(P + keep, device=x.device).expand(B, -1))
    return ReductionOutput(
        x=torch.cat([kept, fused], dim=1),
        sizes=torch.cat([kept_sizes, fused_size], dim=1),
        merge_map=merge_map,
        keep_index=None,
    )


def _rank_in_sequence(scores: torch.Tensor, packed: PackedBatch, num_prefix_tokens: int) -> torch.Tensor:
    """Rank of every packed token within its sequence: prefix first, then by score (desc, ties by position)."""
    T = packed.num_tokens
    seg = segment_ids(packed.cu_seqlens, T)
    key = torch.where(packed.position_ids < num_prefix_tokens, float("inf"), scores.float())
    o1 = key.argsort(descending=True, stable=True)
    order = o1[seg[o1].argsort(stable=True)]  # grouped by sequence, each sorted as above
    rank = torch.empty(T, dtype=torch.long, device=scores.device)
    return rank.scatter_(0, order, torch.arange(T, device=scores.device) - packed.cu_seqlens.long()[seg[order]])


def attentive_prune_packed(
    x: torch.Tensor,
    scores: torch.Tensor,
    packed: PackedBatch,
    keep_rate: float,
    num_prefix_tokens: int = 1,
    *,
    sizes: torch.Tensor | None = None,
    fuse: bool = True,
) -> VarlenOutput:
    """:func:`attentive_prune` on packed ``x`` ``(T, D)``, each sequence keeping ``evit_num_kept(n_i, keep_rate)``.

    Returns a :class:`VarlenOutput` with ``packed`` set; ``merge_map`` ``(T,)`` (with ``fuse``) or
    ``keep_index`` ``(T',)`` hold packed positions. Syncs with the device once (the output size).
    """
    _check_prefix(num_prefix_tokens)
    _check_packed(x, packed, num_prefix_tokens)
    T, D = x.shape
    P = num_prefix_tokens
    _check_tokenwise(scores, (T,), "scores")
    _check_tokenwise(sizes, (T,), "sizes", (1,))
    sizes = _acc_sizes(x, sizes)
    cu = packed.cu_seqlens
    seg = segment_ids(cu, T)
    n = packed.seqlens.long() - P  # (N,)
    kept_n = torch.ceil(n.double() * keep_rate - 1e-6).long().clamp(min=0).minimum(n)
    keep = _rank_in_sequence(scores, packed, P) < (P + kept_n)[seg]  # (T,)
    has_fused = (kept_n < n) if fuse else torch.zeros_like(n, dtype=torch.bool)
    lengths = P + kept_n + has_fused.long()
    out_cu = cu_seqlens_from_lengths(lengths).long()
    T_out = int(out_cu[-1])
    fused_before = (has_fused.long().cumsum(0) - has_fused.long())[seg]
    out_pos = keep.long().cumsum(0) - 1 + fused_before  # (T,) valid where keep
    kept_idx = keep.nonzero().flatten()  # (K,)
    dest = out_pos[kept_idx]
    out = x.new_zeros(T_out, D).index_put((dest,), x[kept_idx])
    out_sizes = sizes.new_zeros(T_out, 1).index_put((dest,), sizes[kept_idx])
    if not fuse:
        return VarlenOutput(
            x=out, sizes=out_sizes, merge_map=None, keep_index=kept_idx, packed=_packed_output(out, lengths)
        )
    fused_slot = out_cu[1:] - 1  # (N,) last slot of each output sequence
    rest = (~keep).to(sizes.dtype)  # (T,)
    w = scores.to(sizes.dtype) * rest
    total = segment_sum(w, cu)  # (N,)
    w = torch.where(total[seg] > 0, w, rest)  # all-zero weights: the plain mean
    w = _fuse_weights(w, segment_sum(w, cu)[seg])
    fused = segment_sum(x.to(sizes.dtype) * w[:, None], cu).to(x.dtype)  # (N, D)
    fused_size = segment_sum(sizes * rest[:, None], cu)  # (N, 1)
    slots = fused_slot[has_fused]
    out = out.index_put((slots,), fused[has_fused])
    out_sizes = out_sizes.index_put((slots,), fused_size[has_fused])
    merge_map = torch.where(keep, out_pos, fused_slot[seg])
    return VarlenOutput(
        x=out, sizes=out_sizes, merge_map=merge_map, keep_index=None, packed=_packed_output(out, lengths)
    )


class AttentiveTokenPruning(nn.Module):
    """EViT: keep the tokens the CLS attends to most, fuse the others into one token.

    Keeps ``ceil(keep_rate * n)`` of the ``n`` non-prefix tokens (:func:`evit_num_kept`; the fused token of
    an earlier layer is a candidate like any other) by the scores passed as ``attn`` (EViT: the head-mean CLS
    attention row, :func:`cls_attention`); with ``fuse`` the pruned tokens become one token, their
    attention-weighted average ``sum_j a_j x_j / sum_j a_j`` (EViT's code omits the division) whose size
    is the sum of theirs. Deterministic, the same in training and eval.

    Args:
        keep_rate: fraction of non-prefix tokens kept, in ``(0, 1]``; ``1`` keeps every token unchanged.
        num_prefix_tokens: leading tokens (CLS, registers) never pruned.
        fuse: append the fused token (EViT's default); ``False`` drops the pruned tokens.
    """

    def __init__(self, keep_rate: float, num_prefix_tokens: int = 1, *, fuse: bool = True) -> None:
        super().__init__()
        if not 0.0 < keep_rate <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
        _check_prefix(num_prefix_tokens)
        self.keep_rate, self.num_prefix_tokens, self.fuse = keep_rate, num_prefix_tokens, fuse

    def extra_repr(self) -> str:
        return f"keep_rate={self.keep_rate}, num_prefix_tokens={self.num_prefix_tokens}, fuse={self.fuse}"

    def num_kept(self, n: int) -> int:
        """Non-prefix tokens kept out of ``n``."""
        return evit_num_kept(n, self.keep_rate)

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn: torch.Tensor,
        sizes: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
    ) -> ReductionOutput:
        """Prune padded ``x`` ``(B, L, D)`` (scores ``attn`` ``(B, L)``) or packed ``x`` ``(T, D)`` (``attn`` ``(T,)``).

        Returns :func:`attentive_prune`'s output (padded) or :func:`attentive_prune_packed`'s (packed).
        """
        P = self.num_prefix_tokens
        if packed is not None:
            return attentive_prune_packed(x, attn, packed, self.keep_rate, P, sizes=sizes, fuse=self.fuse)
        _check_padded(x, P)
        return attentive_prune(x, attn, self.num_kept(x.shape[1] - P), P, sizes=sizes, fuse=self.fuse)


# --------------------------------------------------------------------------------------------
# LTP
# --------------------------------------------------------------------------------------------


class LearnedTokenPruning(nn.Module):
    """LTP: prune the tokens whose importance falls below a learned threshold.

    Training multiplies every non-prefix token by the soft mask ``m = sigmoid((s - theta) / temperature)``
    (differentiable in ``theta``) and keeps all tokens; eval keeps the tokens with ``s >= theta`` (hard
    pruning, deterministic). ``s`` is passed as ``attn`` (LTP: :func:`attention_received`). Each call stores
    the L1 norm of its soft mask for :meth:`regularization_loss`.

    Args:
        num_prefix_tokens: leading tokens never pruned (their mask is 1).
        init_threshold: the initial ``theta`` (LTP learns one per layer: one module per layer).
        temperature: ``T`` of the soft mask, ``> 0``; scores are ~``1/L``, so keep it small.
    """

    def __init__(self, num_prefix_tokens: int = 1, *, init_threshold: float = 0.0, temperature: float = 1e-3) -> None:
        super().__init__()
        _check_prefix(num_prefix_tokens)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_prefix_tokens, self.temperature = num_prefix_tokens, temperature
        self.threshold = nn.Parameter(torch.tensor(float(init_threshold)))
        self._mask_l1: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"num_prefix_tokens={self.num_prefix_tokens}, temperature={self.temperature}"

    def soft_mask(self, scores: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """``sigmoid((scores - theta) / T)`` in fp32, 1 where ``prefix`` (bool, like ``scores``) is True."""
        m = torch.sigmoid((scores.float() - self.threshold.float()) / self.temperature)
        return torch.where(prefix, 1.0, m)

    def regularization_loss(self) -> torch.Tensor:
        """LTP's L1 penalty ``||m||_1`` of the last forward: the soft mask summed over each sequence's
        non-prefix tokens, averaged over sequences (differentiable in ``theta``)."""
        if self._mask_l1 is None:
            raise RuntimeError("regularization_loss() needs a forward pass first")
        return self._mask_l1.mean() if self._mask_l1.numel() else self._mask_l1.sum()

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn: torch.Tensor,
        mask: torch.Tensor | None = None,
        sizes: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
    ) -> ReductionOutput:
        """Soft-mask (training) or prune (eval) padded ``x`` ``(B, L, D)`` or packed ``x`` ``(T, D)``.

        Args:
            x: tokens, prefix first.
            attn: importance ``(B, L)`` / ``(T,)``.
            mask: bool ``(B, L)``, True at real tokens (padded input only); padding is never kept.
            sizes: ``(B, L, 1)`` / ``(T, 1)`` token sizes, carried along.
            packed: the boundaries of packed ``x``.

        Returns:
            Training: a :class:`ReductionOutput` (padded) or :class:`VarlenOutput` (packed, the input
            boundaries) of the masked tokens, ``keep_index`` all positions. Eval: a :class:`VarlenOutput` of
            the kept tokens with ``keep_index``: padded (with ``mask``) or packed (with ``packed``).
        """
        P = self.num_prefix_tokens
        if packed is None:
            _check_padded(x, P)
            _check_mask(mask, x)
            B, L, _ = x.shape
            _check_tokenwise(attn, (B, L), "attn")
            _check_tokenwise(sizes, (B, L), "sizes", (1,))
            if self.training:
                real = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
                pos = real.long().cumsum(1) - 1
                m = self.soft_mask(attn, pos < P) * real
                self._mask_l1 = (m * (pos >= P)).sum(1)
                index = torch.arange(L, device=x.device).expand(B, L)
                return ReductionOutput(
                    x=x * m[..., None].to(x.dtype), sizes=_acc_sizes(x, sizes), merge_map=None, keep_index=index
                )
            flat = padded_to_packed(x, mask)
            flat_sizes = None if sizes is None else padded_to_packed(sizes, mask).x
            out = self._forward_packed(flat.x, padded_to_packed(attn, mask).x, flat, flat_sizes)
            return varlen_to_padded(out, flat, mask, (B, L))
        _check_packed(x, packed, P)
        _check_tokenwise(attn, (packed.num_tokens,), "attn")
        _check_tokenwise(sizes, (packed.num_tokens,), "sizes", (1,))
        if mask is not None:
            raise ValueError("mask is for padded input; packed input has its boundaries in packed")
        return self._forward_packed(x, attn, packed, sizes)

    def _forward_packed(
        self, x: torch.Tensor, scores: torch.Tensor, packed: PackedBatch, sizes: torch.Tensor | None
    ) -> VarlenOutput:
        P = self.num_prefix_tokens
        prefix = packed.position_ids < P
        m = self.soft_mask(scores, prefix)  # (T,)
        self._mask_l1 = segment_sum(m * ~prefix, packed.cu_seqlens)
        sizes = _acc_sizes(x, sizes)
        if self.training:
            index = torch.arange(packed.num_tokens, device=x.device)
            return VarlenOutput(
                x=x * m[:, None].to(x.dtype), sizes=sizes, merge_map=None, keep_index=index, packed=packed.with_x(x)
            )
        keep = prefix | (scores >= self.threshold.detach().to(scores.dtype))
        keep_index = keep.nonzero().flatten()  # (T',)
        lengths = segment_sum(keep.long(), packed.cu_seqlens)
        out = x[keep_index]
        return VarlenOutput(
            x=out, sizes=sizes[keep_index], merge_map=None, keep_index=keep_index, packed=_packed_output(out, lengths)
        )


def ltp_regularization_loss(model: nn.Module) -> torch.Tensor:
    """LTP's regulariser ``(1/L) sum_l ||m_l||_1`` over every :class:`LearnedTokenPruning` in ``model``.

    Averages :meth:`LearnedTokenPruning.regularization_loss` over the layers that ran; add
    ``lambda * ltp_regularization_loss(model)`` to the task loss.
    """
    losses = [
        m.regularization_loss()
        for m in model.modules()
        if isinstance(m, LearnedTokenPruning) and m._mask_l1 is not None
    ]
    if not losses:
        raise RuntimeError("ltp_regularization_loss: no LearnedTokenPruning layer of the model has run a forward")
    return torch.stack(losses).mean()
