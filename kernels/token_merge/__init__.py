"""Fused ToMe (token merging): bipartite soft matching and the size-weighted merge as Triton kernels.

>>> plan = bipartite_match(metric, r=13, num_prefix_tokens=1)  # metric (B, L, C) -> MergePlan, L' = L - r
>>> x2, sizes2 = merge_weighted(x, plan, sizes)                  # (B, L, D), (B, L, 1) -> (B, L', D), (B, L', 1)

Same decisions and output order as ``longseq.core.reduction.merge`` (see ``reference.py``): the
matching never materialises the ``(B, n_a, n_b)`` similarity matrix and needs no sort; the merge is one
gather kernel without atomics. Everything accumulates in fp32.

Forward only: neither op has a backward. The matching needs none (no gradient flows through the
decisions); :func:`merge_weighted` runs the differentiable PyTorch reference instead of the kernel
whenever autograd would record it (grad mode on and ``x`` or ``sizes`` requiring grad), so training works
at reference speed. CUDA tensors (and every tensor under ``TRITON_INTERPRET=1``) run the Triton
kernels; other CPU tensors run the reference. Traced calls (``torch.compile``) go through the custom ops
``longseq::tome_bipartite_match`` / ``longseq::tome_merge_weighted``; eager calls launch directly.
"""

from __future__ import annotations

import torch

from longseq.kernels._common import check_dtype, check_same_device, use_triton
from longseq.kernels.token_merge import triton as _triton
from longseq.kernels.token_merge.reference import (
    MergePlan,
    bipartite_match_ref,
    clip_r,
    merge_weighted_ref,
    plan_from_merge_map,
)

__all__ = [
    "MergePlan",
    "bipartite_match",
    "bipartite_match_ref",
    "merge_weighted",
    "merge_weighted_ref",
    "plan_from_merge_map",
]


@torch.library.custom_op("longseq::tome_bipartite_match", mutates_args=())
def _match_op(metric: torch.Tensor, r: int, num_prefix_tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(merge_map, indptr, indices)`` for ``metric`` ``(B, L, C)``; ``r`` already clipped."""
    return _triton.bipartite_match(metric, r, num_prefix_tokens)


@_match_op.register_fake
def _(metric: torch.Tensor, r: int, num_prefix_tokens: int):
    B, L, _ = metric.shape
    return (
        metric.new_empty(B, L, dtype=torch.int64),
        metric.new_empty(B, L - r + 1, dtype=torch.int32),
        metric.new_empty(B, L, dtype=torch.int32),
    )


@torch.library.custom_op("longseq::tome_merge_weighted", mutates_args=())
def _merge_op(
    x: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, sizes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x', sizes')`` ``(B, L', D)`` and fp32 ``(B, L')``; ``sizes`` is ``(B, L)`` or ``None``."""
    return _triton.merge_weighted(x, indptr, indices, sizes)


@_merge_op.register_fake
def _(x: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, sizes: torch.Tensor | None):
    B, _, D = x.shape
    out_len = indptr.shape[1] - 1
    return x.new_empty(B, out_len, D), x.new_empty(B, out_len, dtype=torch.float32)


def _check_prefix(num_prefix_tokens: int, L: int) -> None:
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int):
        raise TypeError(f"num_prefix_tokens must be an int, got {type(num_prefix_tokens).__name__}")
    if not 0 <= num_prefix_tokens < L:
        raise ValueError(f"num_prefix_tokens must be in [0, L={L}), got {num_prefix_tokens}")


def bipartite_match(metric: torch.Tensor, r: int, num_prefix_tokens: int = 1) -> MergePlan:
    """ToMe's bipartite soft matching: which ``r`` tokens merge into which.

    Args:
        metric: ``(B, L, C)`` fp16, bf16 or fp32 features compared by cosine similarity (any strides);
            never differentiated.
        r: tokens to remove, ``>= 0``; clipped to ``(L - num_prefix_tokens) // 2``.
        num_prefix_tokens: leading tokens (CLS, registers) that are never merged, in ``[0, L)``.

    Returns:
        A :class:`MergePlan` with ``out_len = L - r`` (after clipping); outputs are ordered
        ``[prefix, unmerged a (input order), b (input order)]``.
    """
    check_dtype("metric", metric)
    if metric.dim() != 3 or metric.shape[1] == 0 or metric.shape[2] == 0:
        raise ValueError(f"metric must be (B, L, C) with L, C >= 1, got shape {tuple(metric.shape)}")
    if isinstance(r, bool) or not hasattr(r, "__index__") or r < 0:
        raise ValueError(f"r must be an int >= 0, got {r!r}")
    r = int(r)
    B, L, _ = metric.shape
    _check_prefix(num_prefix_tokens, L)
    r = clip_r(r, L, num_prefix_tokens)
    if not use_triton(metric):
        return bipartite_match_ref(metric, r, num_prefix_tokens)
    metric = metric.detach()
    if torch.compiler.is_compiling():
        merge_map, indptr, indices = _match_op(metric, r, num_prefix_tokens)
    else:
        merge_map, indptr, indices = _triton.bipartite_match(metric, r, num_prefix_tokens)
    return MergePlan(merge_map=merge_map, indptr=indptr, indices=indices, out_len=L - r)


def _check_plan(plan: MergePlan, B: int, L: int) -> None:
    if not isinstance(plan, MergePlan):
        raise TypeError(f"plan must be a MergePlan, got {type(plan).__name__}")
    expected = {
        "merge_map": (plan.merge_map, torch.int64, (B, L)),
        "indptr": (plan.indptr, torch.int32, (B, plan.out_len + 1)),
        "indices": (plan.indices, torch.int32, (B, L)),
    }
    for name, (t, dtype, shape) in expected.items():
        if t.dtype != dtype or tuple(t.shape) != shape:
            raise ValueError(
                f"plan.{name} must be {dtype} {shape} for x (B={B}, L={L}), got {t.dtype} {tuple(t.shape)}"
            )
    if not 0 < plan.out_len <= L:
        raise ValueError(f"plan.out_len must be in [1, L={L}], got {plan.out_len}")


def merge_weighted(
    x: torch.Tensor, plan: MergePlan, sizes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``x`` by the size-weighted average over each output's group and add up the sizes.

    Args:
        x: ``(B, L, D)`` fp16, bf16 or fp32 (any strides).
        plan: from :func:`bipartite_match` (or :func:`plan_from_merge_map`) for this ``B`` and ``L``.
        sizes: ``(B, L, 1)`` fp16, bf16 or fp32 positive token sizes; ``None`` means all ones.

    Returns:
        ``(x', sizes')``: ``(B, L', D)`` in ``x``'s dtype and fp32 ``(B, L', 1)``; the sums run in fp32.
        Differentiable in ``x`` and ``sizes`` (through the PyTorch reference when autograd records).
    """
    check_dtype("x", x)
    if x.dim() != 3 or x.shape[2] == 0:
        raise ValueError(f"x must be (B, L, D) with D >= 1, got shape {tuple(x.shape)}")
    B, L, _ = x.shape
    _check_plan(plan, B, L)
    if sizes is not None:
        check_dtype("sizes", sizes)
        if tuple(sizes.shape) != (B, L, 1):
            raise ValueError(f"sizes must be (B, L, 1) = {(B, L, 1)}, got {tuple(sizes.shape)}")
    check_same_device(x=x, sizes=sizes, merge_map=plan.merge_map, indptr=plan.indptr, indices=plan.indices)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or (sizes is not None and sizes.requires_grad))
    if needs_grad or not use_triton(x):
        out, total = merge_weighted_ref(x, plan.merge_map, plan.out_len, sizes)
        return out.to(x.dtype), total
    s2d = None if sizes is None else sizes[..., 0]  # (B, L)
    if torch.compiler.is_compiling():
        out, total = _merge_op(x, plan.indptr, plan.indices, s2d)
    else:
        out, total = _triton.merge_weighted(x, plan.indptr, plan.indices, s2d)
    return out, total.unsqueeze(-1)
