"""Attention reference: the spec the Triton kernels are tested against (flash-attn semantics).

Per sequence, with query ``i`` in ``[0, Lq)`` and key ``j`` in ``[0, Lk)``:

- ``s[h, i, j] = softmax_scale * q[i, h] . k[j, h // G]`` where ``G = H // H_kv`` (GQA/MQA);
- softcap (``softcap > 0``): ``s = softcap * tanh(s / softcap)``;
- ALiBi: ``s += -slope[h] * |i + Lk - Lq - j|``;
- the mask is bottom-right aligned, as in flash-attn: key ``j`` is visible from query ``i`` iff
  ``j >= i + Lk - Lq - left`` (when ``left >= 0``) and ``j <= i + Lk - Lq + right`` (when
  ``right >= 0``), with ``window_size = (left, right)``, ``-1`` meaning unbounded; ``causal`` sets
  ``right = 0``;
- ``out[i, h] = sum_j softmax(s[h, i])_j v[j, h // G]`` and ``lse[h, i] = logsumexp_j s[h, i, j]``.

A query that sees no key (``Lq > Lk`` with causal, or a window that misses every key) gets
``out = 0`` and ``lse = -inf`` (the log of an empty sum, as flash-attn 3 and flash-attn 2's split-KV
path return; flash-attn 2's non-split forward returns ``+inf`` there), and zero gradients.
"""

from __future__ import annotations

import math

import torch


def visible_mask(
    seqlen_q: int,
    seqlen_k: int,
    *,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Bool ``(Lq, Lk)``: True where key ``j`` is visible from query ``i`` (bottom-right aligned)."""
    left, right = window_size
    if causal:
        right = 0
    i = torch.arange(seqlen_q, device=device)[:, None]  # (Lq, 1)
    j = torch.arange(seqlen_k, device=device)[None, :]  # (1, Lk)
    diag = i + seqlen_k - seqlen_q  # the key aligned with query i
    mask = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    if left >= 0:
        mask &= j >= diag - left
    if right >= 0:
        mask &= j <= diag + right
    return mask


def _attention_one(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    causal: bool,
    window_size: tuple[int, int],
    softcap: float,
    slopes: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence: q ``(Lq, H, D)``, k/v ``(Lk, H_kv, D)``, slopes ``(H,)``; returns out, lse ``(H, Lq)``."""
    Lq, H, _ = q.shape
    Lk, H_kv, _ = k.shape
    k = k.repeat_interleave(H // H_kv, dim=1)  # (Lk, H, D)
    v = v.repeat_interleave(H // H_kv, dim=1)
    s = torch.einsum("qhd,khd->hqk", q, k) * scale  # (H, Lq, Lk)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if slopes is not None:
        i = torch.arange(Lq, device=q.device)[:, None]
        j = torch.arange(Lk, device=q.device)[None, :]
        dist = (i + Lk - Lq - j).abs().to(s.dtype)  # (Lq, Lk)
        s = s - slopes.to(s.dtype)[:, None, None] * dist
    mask = visible_mask(Lq, Lk, causal=causal, window_size=window_size, device=q.device)  # (Lq, Lk)
    empty = ~mask.any(-1)  # (Lq,) rows that see no key
    # Rows that see nothing get a harmless all-zero score row, so no NaN reaches the gradients.
    s = s.masked_fill(~mask, float("-inf")).masked_fill(empty[:, None], 0.0)
    p = torch.softmax(s, dim=-1).masked_fill(empty[:, None], 0.0)
    out = torch.einsum("hqk,khd->qhd", p.to(v.dtype), v)  # (Lq, H, D)
    lse = torch.logsumexp(s, dim=-1).masked_fill(empty, float("-inf"))  # (H, Lq)
    return out, lse


def _slopes_for(alibi_slopes: torch.Tensor | None, b: int) -> torch.Tensor | None:
    if alibi_slopes is None:
        return None
    return alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[b]


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    seqlens_k: torch.Tensor | None = None,
    upcast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with flash-attn's semantics, looping over sequences; returns ``(out, lse)``.

    Args:
        q: ``(B, Lq, H, D)``, or ``(Tq, H, D)`` with ``cu_seqlens_q`` (packed sequences).
        k, v: ``(B, Lk, H_kv, D)``, or ``(Tk, H_kv, D)`` with ``cu_seqlens_k``; ``H_kv`` divides ``H``.
        causal: bottom-right aligned causal mask (sets the window's right side to 0).
        window_size: ``(left, right)`` sliding window, ``-1`` for unbounded.
        softcap: ``> 0`` caps scores with ``softcap * tanh(s / softcap)``.
        alibi_slopes: ``(H,)`` or ``(B, H)``; adds ``-slope * |i + Lk - Lq - j|``.
        softmax_scale: default ``1 / sqrt(D)``.
        cu_seqlens_q, cu_seqlens_k: int ``[B+1]`` sequence starts (both or neither).
        seqlens_k: padded layout only: ``(B,)`` number of valid keys per batch element (a KV cache
            filled to that length); the mask aligns to it.
        upcast: compute in fp32 and return fp32 (the reference); ``False`` runs the same math in the
            inputs' dtype, which the tests use to measure low-precision rounding.

    Returns:
        ``out`` shaped like ``q`` and ``lse`` ``(B, H, Lq)`` (padded) or ``(H, Tq)`` (packed).
    """
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    if alibi_slopes is not None:
        alibi_slopes = alibi_slopes.float()
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    kw = {"scale": scale, "causal": causal, "window_size": window_size, "softcap": softcap}
    if cu_seqlens_q is not None:
        outs, lses = [], []
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        for b in range(len(cq) - 1):
            o, l = _attention_one(
                q[cq[b] : cq[b + 1]], k[ck[b] : ck[b + 1]], v[ck[b] : ck[b + 1]],
                slopes=_slopes_for(alibi_slopes, b), **kw,
            )  # fmt: skip
            outs.append(o)
            lses.append(l)
        return torch.cat(outs, 0), torch.cat(lses, 1)  # (Tq, H, D), (H, Tq)
    outs, lses = [], []
    for b in range(q.shape[0]):
        n = k.shape[1] if seqlens_k is None else int(seqlens_k[b])
        o, l = _attention_one(q[b], k[b, :n], v[b, :n], slopes=_slopes_for(alibi_slopes, b), **kw)
        outs.append(o)
        lses.append(l)
    return torch.stack(outs, 0), torch.stack(lses, 0)  # (B, Lq, H, D), (B, H, Lq)
