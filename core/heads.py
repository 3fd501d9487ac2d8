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

from longseq.core.packing import PackedBatch, segment_mean, segment_softmax, segment_sum

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
#: Pooling kinds of :class:`ClassificationHead`.
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


class AttentionPool(nn.Module):
    """Learned-query attention pooling: per head, a softmax over a sequence's tokens weights its features.

    ``score_t = (W_k x_t) . q / sqrt(D/H)`` per head; the output for head ``h`` is the weighted sum of
    that head's ``D/H`` channels of ``x``.
    """

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.randn(num_heads, dim // num_heads) * 0.02)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> ``(..., H)`` attention logits."""
        k = self.key(x).unflatten(-1, (self.num_heads, -1))  # (..., H, D/H)
        return (k * self.query).sum(-1) * k.shape[-1] ** -0.5

    def weighted(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., D)`` times per-head ``weights`` ``(..., H)``."""
        return (x.unflatten(-1, (self.num_heads, -1)) * weights[..., None]).flatten(-2)


def _first_last_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first and last True of each row of a bool ``(B, L)`` mask."""
    first = mask.int().argmax(1)
    last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
    return first, last


def pool_sequences(
    x: torch.Tensor,
    kind: PoolKind,
    *,
    packed: PackedBatch | None = None,
    mask: torch.Tensor | None = None,
    num_prefix_tokens: int = 0,
    attn: AttentionPool | None = None,
) -> torch.Tensor:
    """One vector per sequence: ``(B, L, D)`` (with optional ``mask``) or packed ``(T, D)`` -> ``(B|N, D)``.

    ``"mean"`` and ``"attention"`` pool a sequence's real tokens after its ``num_prefix_tokens``
    prefix tokens; ``"cls"`` takes its first token, ``"last"`` its last real token. Every sequence
    must have at least one token (``"mean"`` of an empty one gives zeros).
    """
    if kind not in POOLS:
        raise ValueError(f"unknown pooling {kind!r}; choose one of {POOLS}")
    if kind == "attention" and attn is None:
        raise ValueError("attention pooling needs its AttentionPool module (attn=...)")
    if packed is not None:
        return _pool_packed(x, kind, packed, num_prefix_tokens, attn)
    if x.dim() != 3:
        raise ValueError(f"padded features must be (B, L, D), got shape {tuple(x.shape)}")
    b, l = x.shape[:2]
    if mask is None:
        mask = torch.ones(b, l, dtype=torch.bool, device=x.device)
    elif mask.shape != (b, l) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool ({b}, {l}), got {mask.dtype} {tuple(mask.shape)}")
    first, last = _first_last_index(mask)
    if kind in ("cls", "last"):
        return x[torch.arange(b, device=x.device), first if kind == "cls" else last]  # (B, D)
    content = mask & (mask.cumsum(1) > num_prefix_tokens)  # (B, L) real tokens after the prefix
    if kind == "mean":
        w = content.to(x.dtype)[..., None]
        return (x * w).sum(1) / w.sum(1).clamp_min(1)
    scores = attn.scores(x).float().masked_fill(~content[..., None], float("-inf"))  # (B, L, H)
    weights = scores.softmax(dim=1).to(x.dtype)
    return attn.weighted(x, weights).sum(1)


def _pool_packed(
    x: torch.Tensor, kind: str, packed: PackedBatch, num_prefix_tokens: int, attn: AttentionPool | None
) -> torch.Tensor:
    if x.dim() != 2 or x.shape[0] != packed.num_tokens:
        raise ValueError(f"packed features must be ({packed.num_tokens}, D), got shape {tuple(x.shape)}")
    cu = packed.cu_seqlens
    if kind in ("cls", "last"):
        if not torch.compiler.is_compiling() and bool((packed.seqlens == 0).any()):
            raise ValueError(f"{kind!r} pooling needs every sequence non-empty, got lengths {packed.seqlens.tolist()}")
        return x[cu[:-1].long() if kind == "cls" else cu[1:].long() - 1]  # (N, D)
    content = packed.position_ids >= num_prefix_tokens  # (T,)
    if kind == "mean":
        return segment_mean(x, cu, mask=content)
    scores = attn.scores(x).float().masked_fill(~content[:, None], float("-inf"))  # (T, H)
    weights = segment_softmax(scores, cu).to(x.dtype)
    return segment_sum(attn.weighted(x, weights), cu)  # (N, D)


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
