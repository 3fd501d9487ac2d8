"""Informer's ProbSparse self-attention (Zhou et al., 2021): only the ``u = c * ln(L)`` most "active"
queries attend; the others ("lazy" queries) output the mean of ``V``.

Per (batch, head): every query is scored on ``U = c * ln(Lk)`` sampled keys with the sparsity measurement
``M(q) = max_j s(q, k_j) - mean_j s(q, k_j)``; the top-``u`` queries get full softmax attention over
all keys; the rest get ``mean(V)``, or in the causal (masked) version the mean of the values up to their
position (uniform attention over the allowed keys). Cost: O(L log L) scores instead of O(L^2).

Choices where Informer's code and paper differ, or it leaves room:

* the mean in ``M`` is over the sampled keys (the paper's formula; the code divides by ``Lk``);
* causal: keys are sampled among each query's allowed keys (the code samples the future too), and lazy
  queries get the *cumulative mean* of ``V`` (the code's ``cumsum`` grows with the position);
* ``M`` is computed without gradient (the top-k choice is not differentiable; this saves the sampled
  keys' memory), exactly as in the code where ``M`` only selects indices.
"""

from __future__ import annotations

import math

import torch


def probsparse_counts(Lq: int, Lk: int, factor: float) -> tuple[int, int]:
    """``(u, U)``: active queries ``min(Lq, ceil(c ln Lq))`` and sampled keys ``min(Lk, ceil(c ln Lk))``."""
    u = min(Lq, math.ceil(factor * math.log(max(Lq, 1))))
    U = min(Lk, math.ceil(factor * math.log(max(Lk, 1))))
    return max(u, 1), max(U, 1)


def _probsparse_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    factor: float,
    scale: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q`` ``(B, Lq, H, D)``, ``k``/``v`` ``(B, Lk, H_kv, D)`` -> ``(out (B, Lq, H, D), top (B, H, u))``."""
    B, Lq, H, D = q.shape
    Lk, H_kv = k.shape[1], k.shape[2]
    qh = q.transpose(1, 2)  # (B, H, Lq, D)
    kh = k.transpose(1, 2).repeat_interleave(H // H_kv, dim=1)  # (B, H, Lk, D)
    vh = v.transpose(1, 2).repeat_interleave(H // H_kv, dim=1)  # (B, H, Lk, D)
    u, U = probsparse_counts(Lq, Lk, factor)
    rows = torch.arange(Lq, device=q.device)

    with torch.no_grad():  # sparsity measurement: selects queries only
        gen_device = q.device if generator is None else generator.device
        draw = torch.rand(Lq, U, generator=generator, device=gen_device).to(q.device)
        limit = (rows + 1).unsqueeze(-1) if causal else Lk  # causal: key j <= query i
        idx = (draw * limit).long().clamp(max=Lk - 1)  # (Lq, U) sampled keys per query
        k_sample = kh[:, :, idx]  # (B, H, Lq, U, D)
        s_sample = torch.einsum("bhqd,bhqud->bhqu", qh, k_sample).float()  # (B, H, Lq, U)
        sparsity = s_sample.amax(-1) - s_sample.mean(-1)  # (B, H, Lq)
        top = sparsity.topk(u, dim=-1).indices  # (B, H, u)
        del k_sample, s_sample

    q_top = qh.gather(2, top.unsqueeze(-1).expand(B, H, u, D))  # (B, H, u, D)
    scores = (q_top @ kh.transpose(-1, -2)).float() * scale  # (B, H, u, Lk)
    if causal:
        scores = scores.masked_fill(torch.arange(Lk, device=q.device) > top.unsqueeze(-1), float("-inf"))
    active = torch.softmax(scores, dim=-1).to(vh.dtype) @ vh  # (B, H, u, D)

    if causal:  # lazy query i: uniform attention over keys 0..i
        lazy = vh.float().cumsum(dim=2) / (rows + 1).view(1, 1, Lq, 1)
    else:
        lazy = vh.float().mean(dim=2, keepdim=True).expand(B, H, Lq, D)
    out = lazy.to(vh.dtype).scatter(2, top.unsqueeze(-1).expand(B, H, u, D), active)  # (B, H, Lq, D)
    return out.transpose(1, 2), top


def probsparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    factor: float = 5.0,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    return_index: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """ProbSparse attention (see the module docstring).

    Args:
        q: ``(B, Lq, H, D)``, or packed ``(T, H, D)`` with ``cu_seqlens``.
        k, v: ``(B, Lk, H_kv, D)`` or packed ``(T, H_kv, D)`` (packed is self-attention: same boundaries).
        causal: Informer's masked version (needs ``Lq == Lk``).
        factor: the sampling factor ``c`` (Informer's default 5).
        scale: score scale, default ``1 / sqrt(D)``.
        cu_seqlens: int32 ``[N+1]`` for packed inputs; each sequence is handled on its own.
        generator: RNG for the key sampling (reproducible runs); default the global RNG.
        return_index: also return the active query rows, one ``(B, H, u)`` tensor per sequence.
    """
    if q.dim() != (3 if cu_seqlens is not None else 4) or k.shape != v.shape or k.dim() != q.dim():
        layout = "packed (T, H, D) with cu_seqlens" if cu_seqlens is not None else "padded (B, L, H, D)"
        raise ValueError(
            f"q, k, v must be {layout} with k.shape == v.shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1] or q.shape[-2] % k.shape[-2]:
        raise ValueError(
            f"k must have q's head dim and a number of heads dividing q's, got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if factor <= 0:
        raise ValueError(f"probsparse factor must be > 0, got {factor}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if cu_seqlens is None:
        if causal and q.shape[1] != k.shape[1]:
            raise ValueError(f"causal probsparse needs Lq == Lk, got {q.shape[1]} and {k.shape[1]}")
        out, top = _probsparse_padded(q, k, v, causal, factor, scale, generator)
        return (out, [top]) if return_index else out
    if q.shape[0] != k.shape[0]:
        raise ValueError(
            f"packed probsparse is self-attention: q and k need the same T, got {q.shape[0]} and {k.shape[0]}"
        )
    bounds = cu_seqlens.tolist()
    outs, tops = [], []
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        sl = slice(start, end)
        o, t = _probsparse_padded(q[sl][None], k[sl][None], v[sl][None], causal, factor, scale, generator)
        outs.append(o[0])
        tops.append(t)
    out = torch.cat(outs) if outs else q.new_zeros(q.shape)
    return (out, tops) if return_index else out
