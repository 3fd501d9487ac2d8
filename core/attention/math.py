"""The ``math`` backend: plain PyTorch attention, the executable spec every other backend is tested against.

It materialises the ``(B, H, Lq, Lk)`` scores, so it is for tests, CPU fallbacks and short sequences.
Packed inputs are computed one sequence at a time, which is slow but obviously right.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from longseq.core.attention.base import FEATURES, AttentionBackend, AttentionSpec, register_backend
from longseq.core.attention.masks import Offset, spec_mask_mod


def alibi_scores(slopes: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
    """ALiBi's additive term ``-slope[b, h] * |q_idx - kv_idx|`` on index grids; ``slopes`` is ``(H,)`` or ``(B, H)``."""
    slope = slopes[h] if slopes.dim() == 1 else slopes[b, h]
    return -slope * (q_idx - kv_idx).abs()


def _attention_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    *,
    upcast: bool,
    batch_index: torch.Tensor,
    q_offset: Offset,
    kv_len: torch.Tensor | None,
) -> torch.Tensor:
    """``q`` ``(B, Lq, H, D)``, ``k``/``v`` ``(B, Lk, H_kv, D)`` -> ``(B, Lq, H, D)``.

    ``batch_index`` ``(B,)`` is the ``b`` that index functions and per-batch tables see; ``q_offset``
    maps query rows to key coordinates (per row of ``batch_index`` when a tensor); ``kv_len`` masks keys.
    """
    dtype = torch.float32 if upcast else q.dtype
    B, Lq, H, D = q.shape
    Lk, H_kv = k.shape[1], k.shape[2]
    if Lk == 0:  # no keys at all: every row is empty
        return q.new_zeros(q.shape, dtype=dtype)
    qh = q.to(dtype).transpose(1, 2)  # (B, H, Lq, D)
    kh = k.to(dtype).transpose(1, 2).repeat_interleave(H // H_kv, dim=1)  # (B, H, Lk, D)
    vh = v.to(dtype).transpose(1, 2).repeat_interleave(H // H_kv, dim=1)  # (B, H, Lk, D)
    scale = spec.scale if spec.scale is not None else 1.0 / math.sqrt(D)
    s = (qh @ kh.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)

    b = batch_index.view(-1, 1, 1, 1)
    h = torch.arange(H, device=q.device).view(1, H, 1, 1)
    q_row = torch.arange(Lq, device=q.device).view(1, 1, Lq, 1)
    q_idx = q_row + (q_offset[b] if isinstance(q_offset, torch.Tensor) else q_offset)  # key coordinates
    kv_idx = torch.arange(Lk, device=q.device).view(1, 1, 1, Lk)

    if spec.softcap > 0:
        s = spec.softcap * torch.tanh(s / spec.softcap)
    if spec.alibi_slopes is not None:
        s = s + alibi_scores(spec.alibi_slopes, b, h, q_idx, kv_idx).to(s.dtype)
    if spec.bias is not None:
        s = s + spec.bias.to(s.dtype)
    if spec.score_mod is not None:
        s = spec.score_mod(s, b, h, q_idx, kv_idx).to(dtype)  # a captured fp32 table must not upcast
    mask_mod = spec_mask_mod(spec, q_offset, kv_len)
    if mask_mod is not None:
        s = s.masked_fill(~mask_mod(b, h, q_row, kv_idx), float("-inf"))

    # Rows without an allowed key output 0; zeroing their scores first keeps NaN out of every gradient.
    row_ok = s.amax(dim=-1, keepdim=True) > float("-inf")  # (B, H, Lq, 1)
    p = torch.softmax(s.masked_fill(~row_ok, 0.0), dim=-1) * row_ok
    if spec.dropout_p > 0:
        p = F.dropout(p, spec.dropout_p)
    return (p @ vh).transpose(1, 2)  # (B, Lq, H, D)


def attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec, *, upcast: bool = True
) -> torch.Tensor:
    """Attention as specified in :mod:`longseq.core.attention.base`, in plain PyTorch.

    Args:
        q: ``(B, Lq, H, D)`` or packed ``(Tq, H, D)``.
        k, v: ``(B, Lk, H_kv, D)`` or packed ``(Tk, H_kv, D)``.
        spec: what to compute.
        upcast: compute in fp32 and return fp32 (the reference); ``False`` runs the same math in
            ``q.dtype``, which the tolerance rule uses to measure low-precision rounding.
    """
    if not spec.varlen:
        B, Lq, Lk = q.shape[0], q.shape[1], k.shape[1]
        kv_len = spec.kv_seqlens
        q_offset: Offset = Lk - Lq if kv_len is None else kv_len.long() - Lq
        return _attention_padded(
            q, k, v, spec, upcast=upcast, batch_index=torch.arange(B, device=q.device), q_offset=q_offset, kv_len=kv_len
        )
    cu_q, cu_k = spec.cu_seqlens_q.tolist(), spec.cu_seqlens_k.tolist()
    outs = []
    for i in range(len(cu_q) - 1):
        qi = q[cu_q[i] : cu_q[i + 1]].unsqueeze(0)  # (1, Lq_i, H, D)
        ki = k[cu_k[i] : cu_k[i + 1]].unsqueeze(0)  # (1, Lk_i, H_kv, D)
        vi = v[cu_k[i] : cu_k[i + 1]].unsqueeze(0)
        index = torch.tensor([i], device=q.device)
        off = ki.shape[1] - qi.shape[1]
        outs.append(_attention_padded(qi, ki, vi, spec, upcast=upcast, batch_index=index, q_offset=off, kv_len=None))
    return (
        torch.cat(outs, dim=1).squeeze(0) if outs else q.new_zeros(q.shape, dtype=torch.float32 if upcast else q.dtype)
    )


@register_backend
class MathBackend(AttentionBackend):
    """Reference attention in PyTorch (fp32 internally); supports every feature on every device."""

    name = "math"
    features = frozenset(FEATURES)

    def efficient(self, spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor) -> bool:
        return False  # always materialises the scores

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
        return attention_ref(q, k, v, spec, upcast=True).to(q.dtype)
