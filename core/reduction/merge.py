"""Token merging (ToMe, Bolya et al. 2023): bipartite soft matching, size tracking, proportional attention.

Follows facebookresearch/ToMe ``tome/merge.py`` on the non-prefix tokens: they alternate into sets
``a`` (even positions) and ``b`` (odd positions); every ``a`` token finds its most cosine-similar ``b``
token, and the ``r`` ``a`` tokens with the highest similarity merge into their match by a size-weighted
average. Prefix tokens (CLS, registers) are never merged and stay first. The output order is
``[prefix, unmerged a (input order), b (input order)]``. Padded ``(B, L, D)`` input here; packed ``(T, D)``
input (``TokenMerging(..., packed=...)``) runs per sequence in ``packed.py``.

On CUDA (and under ``TRITON_INTERPRET=1``) padded matching and merging run the fused Triton kernels of
``longseq.kernels.token_merge`` (same decisions, same order, fp32 sums); the PyTorch code below is the
fallback (its matching is the kernels' reference, ``kernels/token_merge/reference.py``): CPU tensors, fp64,
a :class:`Merge` built by hand, and every :func:`merge_wavg` that autograd
records (grad mode on and ``x`` or ``sizes`` requiring grad; the merge kernel has no backward). The
environment variable ``LONGSEQ_TOME_KERNELS=0`` turns the kernels off (for A/B timing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from longseq.core.attention.base import ScoreMod
from longseq.core.packing.batch import PackedBatch
from longseq.core.reduction.base import ReductionOutput
from longseq.core.reduction.packed import token_merging_packed
from longseq.kernels._common import FLOAT_DTYPES, use_triton
from longseq.kernels.token_merge import MergePlan, bipartite_match, merge_weighted
from longseq.kernels.token_merge.reference import bipartite_merge_map_ref, clip_r


@dataclass
class Merge:
    """A merge found by :func:`bipartite_soft_matching`; call it on any ``(B, L, D)`` tensor.

    Attributes:
        merge_map: int64 ``(B, L)``, the output index of every input token.
        out_len: ``L'``, the number of output tokens.
        plan: the fused kernels' form of the same merge (set by :func:`bipartite_soft_matching` when it
            ran the kernel); ``None`` makes :func:`merge_wavg` use PyTorch.
    """

    merge_map: torch.Tensor
    out_len: int
    plan: MergePlan | None = field(default=None, repr=False, compare=False)

    def __call__(self, x: torch.Tensor, mode: str = "sum") -> torch.Tensor:
        """Reduce ``x`` ``(B, L, D)`` to ``(B, L', D)`` by ``"sum"`` or ``"mean"`` over each merged group."""
        B, L = self.merge_map.shape
        if x.dim() != 3 or tuple(x.shape[:2]) != (B, L):
            raise ValueError(f"x must be (B={B}, L={L}, D), got shape {tuple(x.shape)}")
        if mode not in ("sum", "mean"):
            raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")
        # (B, L) -> (B, L, D); (B, L, D) -> (B, L', D)
        index = self.merge_map.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        out = x.new_zeros(B, self.out_len, x.shape[-1]).scatter_add(1, index, x)
        if mode == "mean":
            count = x.new_zeros(B, self.out_len, 1).scatter_add(1, self.merge_map.unsqueeze(-1), x.new_ones(B, L, 1))
            out = out / count
        return out


def _use_kernels(t: torch.Tensor) -> bool:
    """Whether the fused ``longseq.kernels.token_merge`` path can take ``t`` (see the module docstring)."""
    return t.dtype in FLOAT_DTYPES and use_triton(t) and os.environ.get("LONGSEQ_TOME_KERNELS", "1") != "0"


def _check_prefix(num_prefix_tokens: int, L: int) -> None:
    if not 0 <= num_prefix_tokens < L:
        raise ValueError(f"num_prefix_tokens must be in [0, L={L}), got {num_prefix_tokens}")


def bipartite_soft_matching(metric: torch.Tensor, r: int, num_prefix_tokens: int = 1) -> Merge:
    """Find ToMe's bipartite merge of ``r`` tokens from the similarity ``metric``.

    Args:
        metric: ``(B, L, C)`` features compared by cosine similarity (keys in ToMe); no gradient flows
            through the matching.
        r: tokens to remove, ``>= 0``; clipped to ``(L - num_prefix_tokens) // 2`` so at most half of the
            non-prefix tokens merge.
        num_prefix_tokens: leading tokens that are never merged, in ``[0, L)``.

    Returns:
        A :class:`Merge` with ``out_len = L - r`` (after clipping).
    """
    if metric.dim() != 3:
        raise ValueError(f"metric must be (B, L, C), got shape {tuple(metric.shape)}")
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    L = metric.shape[1]
    _check_prefix(num_prefix_tokens, L)
    if _use_kernels(metric) and metric.shape[-1] > 0:
        plan = bipartite_match(metric, r, num_prefix_tokens)
        return Merge(merge_map=plan.merge_map, out_len=plan.out_len, plan=plan)
    merge_map = bipartite_merge_map_ref(metric, r, num_prefix_tokens)
    return Merge(merge_map=merge_map, out_len=L - clip_r(r, L, num_prefix_tokens))


def merge_wavg(merge: Merge, x: torch.Tensor, sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``x`` by the size-weighted average and add up the sizes.

    Args:
        merge: from :func:`bipartite_soft_matching`.
        x: ``(B, L, D)``.
        sizes: ``(B, L, 1)`` positive floating token sizes; ``None`` means all ones.

    Returns:
        ``(x', sizes')`` shaped ``(B, L', D)`` in ``x``'s dtype and ``(B, L', 1)`` in at least fp32. The
        weighted sums run in at least fp32, so low-precision inputs and sizes past 256 (not exact in bf16)
        lose nothing beyond the final rounding of ``x'``.
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    if sizes is not None and (tuple(sizes.shape) != (*x.shape[:2], 1) or not sizes.is_floating_point()):
        raise ValueError(
            f"sizes must be floating (B, L, 1) = {(*x.shape[:2], 1)}, got {sizes.dtype} {tuple(sizes.shape)}"
        )
    plan = merge.plan
    if (
        plan is not None
        and x.dim() == 3
        and x.shape[-1] > 0
        and _use_kernels(x)
        and (sizes is None or sizes.dtype in FLOAT_DTYPES)
        and x.device == plan.indices.device
        and tuple(x.shape[:2]) == tuple(plan.merge_map.shape)
        and not (torch.is_grad_enabled() and (x.requires_grad or (sizes is not None and sizes.requires_grad)))
    ):
        return merge_weighted(x, plan, sizes)
    if sizes is None:
        sizes = torch.ones(*x.shape[:2], 1, dtype=acc, device=x.device)
    sizes = sizes.to(torch.promote_types(sizes.dtype, acc))
    out = merge(x.to(acc) * sizes, mode="sum")  # (B, L', D)
    sizes = merge(sizes, mode="sum")  # (B, L', 1)
    return (out / sizes).to(x.dtype), sizes


def proportional_attention_bias(sizes: torch.Tensor) -> torch.Tensor:
    """The additive attention bias ``log(size)`` per key, so a merged key counts as its original copies.

    Args:
        sizes: ``(B, L', 1)`` token sizes.

    Returns:
        ``(B, 1, 1, L')`` fp32 bias for ``attention(..., bias=...)`` (broadcasts over heads and queries).
    """
    if sizes.dim() != 3 or sizes.shape[-1] != 1:
        raise ValueError(f"sizes must be (B, L', 1), got shape {tuple(sizes.shape)}")
    return sizes.float().log()[:, None, None, :, 0]


def proportional_attention_score_mod(sizes: torch.Tensor) -> ScoreMod:
    """Proportional attention as a FlexAttention-style ``score_mod`` (for the ``flex`` and ``math`` backends).

    Args:
        sizes: ``(B, L', 1)`` token sizes; ``kv_idx`` indexes its second axis.
    """
    log_sizes = proportional_attention_bias(sizes)[:, 0, 0, :]  # (B, L')

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + log_sizes[b, kv_idx].to(score.dtype)

    return score_mod


class TokenMerging(nn.Module):
    """One ToMe step: merge ``r`` tokens by bipartite soft matching and track their sizes.

    Args:
        r: tokens removed per call, ``>= 0`` (clipped to half the non-prefix tokens).
        num_prefix_tokens: leading tokens (CLS, registers) that are never merged.
    """

    def __init__(self, r: int, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if r < 0:
            raise ValueError(f"r must be >= 0, got {r}")
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.r = r
        self.num_prefix_tokens = num_prefix_tokens

    def extra_repr(self) -> str:
        return f"r={self.r}, num_prefix_tokens={self.num_prefix_tokens}"

    def forward(
        self,
        x: torch.Tensor,
        *,
        sizes: torch.Tensor | None = None,
        metric: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
    ) -> ReductionOutput:
        """Merge ``x`` ``(B, L, D)`` into ``(B, L - r, D)``, or packed ``x`` ``(T, D)`` per sequence.

        Args:
            x: ``(B, L, D)`` padded tokens, prefix tokens first; or packed ``(T, D)`` with ``packed``.
            sizes: ``(B, L, 1)`` / ``(T, 1)`` sizes from earlier merges; ``None`` means all ones.
            metric: ``(B, L, C)`` / ``(T, C)`` similarity features (e.g. attention keys); defaults to ``x``.
            packed: the boundaries of packed ``x``: every sequence merges ``min(r, (L_i - P) // 2)`` tokens
                and the result is :func:`~longseq.core.reduction.token_merging_packed`'s ``VarlenOutput``.
        """
        if packed is not None:
            return token_merging_packed(x, packed, self.r, self.num_prefix_tokens, sizes=sizes, metric=metric)
        if x.dim() != 3:
            raise ValueError(f"x must be padded (B, L, D), got shape {tuple(x.shape)}")
        if metric is None:
            metric = x
        elif metric.dim() != 3 or metric.shape[:2] != x.shape[:2]:
            raise ValueError(f"metric must be (B, L, C) with (B, L) = {tuple(x.shape[:2])}, got {tuple(metric.shape)}")
        merge = bipartite_soft_matching(metric, self.r, self.num_prefix_tokens)
        x, sizes = merge_wavg(merge, x, sizes)
        return ReductionOutput(x=x, sizes=sizes, merge_map=merge.merge_map)
