"""ToMe (token merging) reference: bipartite soft matching and the size-weighted merge, the spec the Triton
kernels are tested against. The math restates ``longseq.core.reduction.merge`` (kernels never import core).

Matching, for ``metric`` ``(B, L, C)`` with ``P`` prefix tokens: the non-prefix tokens alternate into
set ``a`` (positions ``P, P+2, ...``, ``n_a = (L-P+1)//2``) and set ``b`` (``P+1, P+3, ...``,
``n_b = (L-P)//2``). Every ``a`` token scores its best cosine similarity over ``b`` (first index on
ties); the ``r`` ``a`` tokens with the highest score (ties: lower index first) merge into their match.
Output order: ``[prefix, unmerged a (input order), b (input order)]``, so ``L' = L - r``.

Merge: ``x'[o] = sum_{t -> o} x[t] * s[t] / sum_{t -> o} s[t]`` and ``s'[o] = sum_{t -> o} s[t]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MergePlan:
    """Where every token goes in one ToMe step; built by ``bipartite_match`` or :func:`bipartite_match_ref`.

    Attributes:
        merge_map: int64 ``(B, L)``, the output index of every input token.
        indptr: int32 ``(B, L' + 1)``; the inputs of output ``o`` are ``indices[:, indptr[o]:indptr[o+1]]``.
        indices: int32 ``(B, L)``, the input tokens grouped by output, each group in input order (the
            stable argsort of ``merge_map``).
        out_len: ``L'``, the number of output tokens.
    """

    merge_map: torch.Tensor
    indptr: torch.Tensor
    indices: torch.Tensor
    out_len: int


def clip_r(r: int, L: int, num_prefix_tokens: int) -> int:
    """``r`` clipped to ``(L - P) // 2``: at most every ``b`` token receives a merge."""
    return min(r, (L - num_prefix_tokens) // 2)


def plan_from_merge_map(merge_map: torch.Tensor, out_len: int) -> MergePlan:
    """The :class:`MergePlan` of ``merge_map`` ``(B, L)`` (entries in ``[0, out_len)``)."""
    B = merge_map.shape[0]
    counts = torch.zeros(B, out_len, dtype=torch.long, device=merge_map.device)
    counts.scatter_add_(1, merge_map, torch.ones_like(merge_map))
    indptr = torch.cat([counts.new_zeros(B, 1), counts.cumsum(1)], dim=1)  # (B, L' + 1)
    indices = merge_map.sort(dim=1, stable=True).indices  # (B, L)
    return MergePlan(merge_map=merge_map, indptr=indptr.int(), indices=indices.int(), out_len=out_len)


def bipartite_match_ref(metric: torch.Tensor, r: int, num_prefix_tokens: int = 1) -> MergePlan:
    """ToMe's bipartite soft matching in fp32 (see the module docstring); ``r`` is clipped first."""
    L = metric.shape[1]
    return plan_from_merge_map(
        bipartite_merge_map_ref(metric, r, num_prefix_tokens), L - clip_r(r, L, num_prefix_tokens)
    )


def bipartite_merge_map_ref(metric: torch.Tensor, r: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """The int64 ``(B, L)`` merge map of ToMe's matching in fp32 (the PyTorch path of
    ``longseq.core.reduction.bipartite_soft_matching``); no gradient flows through it."""
    B, L, _ = metric.shape
    P = num_prefix_tokens
    n_a = (L - P + 1) // 2
    r = clip_r(r, L, P)
    device = metric.device
    m = metric.detach().float()
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a, b = m[:, P::2], m[:, P + 1 :: 2]  # (B, n_a, C), (B, n_b, C)
    if r > 0:
        node_max, node_idx = (a @ b.transpose(-1, -2)).max(dim=-1)  # (B, n_a, n_b) -> (B, n_a)
        order = node_max.argsort(dim=-1, descending=True, stable=True)  # (B, n_a)
        src_idx, unm_idx = order[:, :r], order[:, r:].sort(dim=-1).values
        dst_idx = node_idx.gather(1, src_idx)  # (B, r)
    else:
        src_idx = dst_idx = torch.empty(B, 0, dtype=torch.long, device=device)
        unm_idx = torch.arange(n_a, device=device).expand(B, -1)
    n_unm = n_a - r
    target_a = torch.empty(B, n_a, dtype=torch.long, device=device)
    target_a.scatter_(1, unm_idx, (P + torch.arange(n_unm, device=device)).expand(B, -1).contiguous())
    target_a.scatter_(1, src_idx, P + n_unm + dst_idx)
    merge_map = torch.empty(B, L, dtype=torch.long, device=device)
    merge_map[:, :P] = torch.arange(P, device=device)
    merge_map[:, P::2] = target_a
    merge_map[:, P + 1 :: 2] = P + n_unm + torch.arange((L - P) // 2, device=device)
    return merge_map


def merge_weighted_ref(
    x: torch.Tensor, merge_map: torch.Tensor, out_len: int, sizes: torch.Tensor | None = None, upcast: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average of the tokens merged into each output.

    Args:
        x: ``(B, L, D)``.
        merge_map: int64 ``(B, L)`` into ``[0, out_len)``.
        out_len: ``L'``.
        sizes: ``(B, L, 1)`` token sizes; ``None`` means all ones.
        upcast: compute in fp32 and return fp32 ``(x', sizes')``; ``False`` runs the same math in
            ``x.dtype`` (the tests' low-precision error yardstick).

    Returns:
        ``(x', sizes')`` shaped ``(B, L', D)`` and ``(B, L', 1)``.
    """
    dtype = torch.float32 if upcast else x.dtype
    B, L, D = x.shape
    s = torch.ones(B, L, 1, dtype=dtype, device=x.device) if sizes is None else sizes.to(dtype)
    index = merge_map.unsqueeze(-1)  # (B, L, 1)
    out = x.new_zeros(B, out_len, D, dtype=dtype).scatter_add(1, index.expand(-1, -1, D), x.to(dtype) * s)
    total = s.new_zeros(B, out_len, 1).scatter_add(1, index, s)  # (B, L', 1)
    return out / total, total
