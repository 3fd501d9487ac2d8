"""Output heads: causal LM (tied weights, chunked cross-entropy), sequence classification with
pooling, per-token regression.

Every head takes padded features ``(B, L, D)`` (with an optional bool ``mask`` ``(B, L)``, True at
real tokens) or packed features ``(T, D)`` with their :class:`~longseq.core.packing.PackedBatch`,
and pools per sequence without mixing sequences.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from longseq.core.packing import PackedBatch
from longseq.core.pooling import AttentionPool
from longseq.core.pooling import pool_sequences as _pool

__all__ = [
    "POOLS",
    "AttentionPool",
    "ClassificationHead",
    "LMHead",
    "TokenRegressionHead",
    "chunked_cross_entropy",
    "pool_sequences",
]

PoolKind = Literal["mean", "cls", "last", "attention"]
#: Pooling kinds of :class:`ClassificationHead` (the pooling layers live in :mod:`longseq.core.pooling`).
POOLS: tuple[str, ...] = ("mean", "cls", "last", "attention")


# --------------------------------------------------------------------------------------------
# chunked cross-entropy
# --------------------------------------------------------------------------------------------


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Per-token CE of ``hidden @ weight.T + bias`` computed ``chunk`` tokens at a time.

    Forward keeps only the log-sum-exp per token; backward recomputes each chunk's logits, so
    peak memory is ``O(chunk * V)`` instead of ``O(T * V)``.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, hidden, weight, bias, targets, chunk, ignore_index):
        # hidden (T, D), weight (V, D), bias (V,) | None, targets (T,) -> loss (T,) fp32
        total = hidden.shape[0]
        loss = hidden.new_empty(total, dtype=torch.float32)
        lse = hidden.new_empty(total, dtype=torch.float32)
        for s in range(0, total, chunk):
            logits = F.linear(hidden[s : s + chunk], weight, bias).float()  # (C, V)
            tgt = targets[s : s + chunk]
            lse_c = torch.logsumexp(logits, dim=-1)  # (C,)
            picked = logits.gather(1, tgt.clamp_min(0)[:, None]).squeeze(1)
            loss[s : s + chunk] = torch.where(tgt != ignore_index, lse_c - picked, 0.0)
            lse[s : s + chunk] = lse_c
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk, ctx.ignore_index = chunk, ignore_index
        return loss

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")  # recompute the logits under forward's autocast state
    def backward(ctx, grad_loss):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s : s + ctx.chunk]
            tgt = targets[s : s + ctx.chunk]
            valid = tgt != ctx.ignore_index
            logits = F.linear(h, weight, bias).float()  # (C, V)
            dlogits = torch.exp(logits - lse[s : s + ctx.chunk, None])  # softmax
            rows = torch.arange(tgt.shape[0], device=tgt.device)
            dlogits[rows, tgt.clamp_min(0)] -= 1.0
            dlogits *= torch.where(valid, grad_loss[s : s + ctx.chunk].float(), 0.0)[:, None]
            dlogits = dlogits.to(hidden.dtype)  # as autograd would cast it back through ``.float()``
            if need_h:
                grad_h[s : s + ctx.chunk] = dlogits @ weight
            if need_w:
                grad_w += (dlogits.t() @ h).float()
            if need_b:
                grad_b += dlogits.float().sum(0)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype)
        grad_b = None if grad_b is None else grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = 4096,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T + bias, targets)`` without materialising all logits.

    Logits are formed ``chunk_size`` tokens at a time in forward and again in backward, so a
    million-token batch with a large vocabulary needs ``O(chunk_size * V)`` extra memory. Values and
    gradients equal the full computation (log-sum-exp in fp32).

    Args:
        hidden: ``(..., D)`` final features (any leading shape; flattened to T tokens).
        weight: ``(V, D)`` output projection (e.g. the tied embedding).
        targets: int64 of ``hidden``'s leading shape, in ``[0, V)`` or ``ignore_index``.
        bias: optional ``(V,)``.
        chunk_size: tokens per chunk.
        ignore_index: targets with this value add no loss and no gradient.
        reduction: ``"mean"`` over non-ignored tokens (0 when there are none, where torch gives NaN),
            ``"sum"``, or ``"none"`` (per-token losses of ``targets``' shape, 0 at ignored tokens).
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets must have hidden's leading shape {tuple(hidden.shape[:-1])}, got {tuple(targets.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be (V, {hidden.shape[-1]}), got {tuple(weight.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if targets.dtype != torch.int64:
        raise ValueError(f"targets must be int64, got {targets.dtype}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    flat_t = targets.reshape(-1)
    if not torch.compiler.is_compiling():
        bad = (flat_t != ignore_index) & ((flat_t < 0) | (flat_t >= weight.shape[0]))
        if bool(bad.any()):
            raise ValueError(
                f"targets must lie in [0, {weight.shape[0]}) or equal ignore_index={ignore_index}, "
                f"got {flat_t[bad][:5].tolist()}"
            )
    loss = _ChunkedCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, bias, flat_t, chunk_size, ignore_index
    )  # (T,) fp32
    if reduction == "none":
        return loss.view(targets.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / (flat_t != ignore_index).sum().clamp_min(1)


class LMHead(nn.Module):
    """Causal LM head: ``logits = h @ weight.T`` with an optional weight tied to the input embedding.

    Args:
        dim: feature width D.
        vocab_size: V.
        bias: add a ``(V,)`` bias.
        tie_weight: a ``(V, D)`` parameter to share (the token embedding's ``weight``).
        chunk_size: tokens per chunk in :meth:`loss`.
    """

    def __init__(
        self,
        dim: int,
        vocab_size: int,
        *,
        bias: bool = False,
        tie_weight: nn.Parameter | None = None,
        chunk_size: int = 4096,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size, bias=bias)
        if tie_weight is not None:
            if tie_weight.shape != (vocab_size, dim):
                raise ValueError(f"tied weight must be ({vocab_size}, {dim}), got {tuple(tie_weight.shape)}")
            self.proj.weight = tie_weight
        self.chunk_size = chunk_size

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> logits ``(..., V)`` (full logits: for loss use :meth:`loss`)."""
        return self.proj(h)

    def loss(
        self,
        h: torch.Tensor,
        targets: torch.Tensor,
        *,
        ignore_index: int = -100,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> torch.Tensor:
        """Chunked cross-entropy of the logits of ``h`` ``(..., D)`` against aligned ``targets`` ``(...)``."""
        return chunked_cross_entropy(
            h,
            self.proj.weight,
            targets,
            bias=self.proj.bias,
            chunk_size=self.chunk_size,
            ignore_index=ignore_index,
            reduction=reduction,
        )


# --------------------------------------------------------------------------------------------
# pooling and per-sequence heads
# --------------------------------------------------------------------------------------------


def pool_sequences(
    x: torch.Tensor,
    kind: PoolKind,
    *,
    packed: PackedBatch | None = None,
    mask: torch.Tensor | None = None,
    num_prefix_tokens: int = 0,
    attn: AttentionPool | None = None,
) -> torch.Tensor:
    """One vector per sequence for the head pooling kinds :data:`POOLS`: ``(B, L, D)`` (with optional
    ``mask``) or packed ``(T, D)`` -> ``(B|N, D)``; see :func:`longseq.core.pooling.pool_sequences`
    (which also has ``"max"`` and size weights).
    """
    if kind not in POOLS:
        raise ValueError(f"unknown pooling {kind!r}; choose one of {POOLS}")
    return _pool(x, kind, packed=packed, mask=mask, num_prefix_tokens=num_prefix_tokens, attn=attn)


class _ProjectionHead(nn.Module):
    """Dropout then a linear map to ``out_dim`` outputs (identity when ``out_dim == 0``)."""

    def __init__(self, dim: int, out_dim: int, drop: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, out_dim) if out_dim > 0 else nn.Identity()

    def project(self, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class ClassificationHead(_ProjectionHead):
    """Pool each sequence (:func:`pool_sequences`), then dropout and a linear classifier.

    Args:
        dim: feature width D.
        num_classes: outputs; 0 returns the pooled features.
        pool: ``"mean"``, ``"cls"``, ``"last"`` or ``"attention"``.
        num_prefix_tokens: prefix (CLS/register) tokens at the start of each sequence.
        drop: dropout before the classifier.
        attn_heads: heads of attention pooling.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        pool: PoolKind = "mean",
        *,
        num_prefix_tokens: int = 0,
        drop: float = 0.0,
        attn_heads: int = 1,
    ) -> None:
        super().__init__(dim, num_classes, drop)
        if pool not in POOLS:
            raise ValueError(f"unknown pooling {pool!r}; choose one of {POOLS}")
        self.pool = pool
        self.num_prefix_tokens = num_prefix_tokens
        self.attn = AttentionPool(dim, attn_heads) if pool == "attention" else None

    def forward(
        self,
        x: torch.Tensor,
        *,
        packed: PackedBatch | None = None,
        mask: torch.Tensor | None = None,
        pre_logits: bool = False,
    ) -> torch.Tensor:
        """``(B, L, D)`` or packed ``(T, D)`` -> ``(B|N, num_classes)`` (pooled ``(B|N, D)`` if ``pre_logits``)."""
        pooled = pool_sequences(
            x, self.pool, packed=packed, mask=mask, num_prefix_tokens=self.num_prefix_tokens, attn=self.attn
        )
        return self.project(pooled, pre_logits)


class TokenRegressionHead(_ProjectionHead):
    """Per-token outputs: dropout and a linear map ``(..., D) -> (..., out_dim)`` (identity when 0)."""

    def __init__(self, dim: int, out_dim: int, *, drop: float = 0.0) -> None:
        super().__init__(dim, out_dim, drop)

    def forward(self, x: torch.Tensor, *, pre_logits: bool = False, **_: object) -> torch.Tensor:
        """``(..., D)`` -> ``(..., out_dim)``; token-wise, so ``packed``/``mask`` keywords are accepted and unused."""
        return self.project(x, pre_logits)
