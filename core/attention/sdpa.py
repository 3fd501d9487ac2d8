"""The ``sdpa`` backend: ``torch.nn.functional.scaled_dot_product_attention``.

Plain and square-causal attention run SDPA's fused kernels (flash / memory-efficient / CPU flash).
Every other mask, ALiBi and a dense bias become one ``(B|1, H|1, Lq, Lk)`` ``attn_mask`` built by the
same mask functions the other backends use, so they cost O(Lq * Lk) memory. Packed inputs are padded
to ``(N, max_seqlen)`` and unpadded after. No softcap and no ``score_mod``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from longseq.core.attention.base import FEATURES, AttentionBackend, AttentionSpec, register_backend
from longseq.core.attention.masks import Offset, doc_ids, index_grids, spec_mask_mod
from longseq.core.attention.math import alibi_scores

#: Features that force a materialised mask.
_DENSE = frozenset({"window", "varlen", "kv_seqlens", "alibi", "mask_mod"})


def pad_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
    """Packed ``(T, ...)`` -> zero-padded ``(N, max_seqlen, ...)`` (differentiable)."""
    doc = doc_ids(cu_seqlens, x.shape[0]).long()
    pos = torch.arange(x.shape[0], device=x.device) - cu_seqlens.long()[doc]
    out = x.new_zeros(cu_seqlens.numel() - 1, max_seqlen, *x.shape[1:])
    return out.index_put((doc, pos), x)


def unpad_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Padded ``(N, L, ...)`` -> packed ``(T, ...)``, the inverse of :func:`pad_packed`."""
    doc = doc_ids(cu_seqlens, total).long()
    pos = torch.arange(total, device=x.device) - cu_seqlens.long()[doc]
    return x[doc, pos]


def _square_causal_only(spec: AttentionSpec, Lq: int, Lk: int, kv_len: torch.Tensor | None) -> bool:
    """Whether SDPA's own ``is_causal`` (top-left aligned) expresses the whole mask."""
    plain = spec.mask_mod is None and kv_len is None and spec.alibi_slopes is None and spec.bias is None
    return spec.causal and spec.window == (-1, 0) and Lq == Lk and plain


def _sdpa_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    q_offset: Offset,
    kv_len: torch.Tensor | None,
) -> torch.Tensor:
    """``q`` ``(B, Lq, H, D)``, ``k``/``v`` ``(B, Lk, H_kv, D)`` -> ``(B, Lq, H, D)``."""
    B, Lq, H, _ = q.shape
    Lk, H_kv = k.shape[1], k.shape[2]
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|H_kv, L, D)
    is_causal = _square_causal_only(spec, Lq, Lk, kv_len)
    attn_mask = None
    if not is_causal:
        b, h, q_row, kv_idx = index_grids(B, H, Lq, Lk, q.device, q_offset=0)
        mask_mod = spec_mask_mod(spec, q_offset, kv_len)
        allowed = None if mask_mod is None else mask_mod(b, h, q_row, kv_idx)  # (B|1, H|1, Lq, Lk) bool
        additive = None
        if spec.alibi_slopes is not None:
            q_idx = q_row + (q_offset[b] if isinstance(q_offset, torch.Tensor) else q_offset)
            additive = alibi_scores(spec.alibi_slopes, b, h, q_idx, kv_idx).to(q.dtype)
        if spec.bias is not None:
            additive = spec.bias.to(q.dtype) if additive is None else additive + spec.bias.to(q.dtype)
        if additive is not None:
            attn_mask = additive if allowed is None else additive.masked_fill(~allowed, float("-inf"))
        else:
            attn_mask = allowed
    row_ok = None
    if attn_mask is not None:
        # Rows without an allowed key: let SDPA see any key, then zero them (flash-attn's semantics).
        allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask > float("-inf")
        row_ok = allowed.any(dim=-1, keepdim=True)  # (B|1, H|1, Lq, 1)
        fill = True if attn_mask.dtype == torch.bool else 0.0
        attn_mask = attn_mask.masked_fill(~row_ok, fill)
    gqa = H_kv != H
    if gqa and attn_mask is not None:  # SDPA's fused kernels take GQA only without a mask
        kh = kh.repeat_interleave(H // H_kv, dim=1)
        vh = vh.repeat_interleave(H // H_kv, dim=1)
    out = F.scaled_dot_product_attention(
        qh,
        kh,
        vh,
        attn_mask=attn_mask,
        dropout_p=spec.dropout_p,
        is_causal=is_causal,
        scale=spec.scale,
        enable_gqa=gqa and attn_mask is None,
    )  # (B, H, Lq, D)
    if row_ok is not None:
        out = out * row_ok
    return out.transpose(1, 2)


@register_backend
class SDPABackend(AttentionBackend):
    """``F.scaled_dot_product_attention``; masks other than square causal are materialised densely."""

    name = "sdpa"
    features = frozenset(FEATURES) - {"softcap", "score_mod"}

    def efficient(self, spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor) -> bool:
        needs = spec.features(q, k)
        square = q.shape[-3] == k.shape[-3]
        return not (needs & _DENSE) and (not spec.causal or square)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
        if not spec.varlen:
            Lq, Lk = q.shape[1], k.shape[1]
            kv_len = spec.kv_seqlens
            q_offset: Offset = Lk - Lq if kv_len is None else kv_len.long() - Lq
            return _sdpa_padded(q, k, v, spec, q_offset, kv_len)
        cu_q, cu_k = spec.cu_seqlens_q, spec.cu_seqlens_k
        len_q, len_k = (cu_q[1:] - cu_q[:-1]).long(), (cu_k[1:] - cu_k[:-1]).long()
        qp = pad_packed(q, cu_q, spec.max_seqlen_q)  # (N, Lq_max, H, D)
        kp, vp = pad_packed(k, cu_k, spec.max_seqlen_k), pad_packed(v, cu_k, spec.max_seqlen_k)
        out = _sdpa_padded(qp, kp, vp, spec, len_k - len_q, len_k)
        return unpad_packed(out, cu_q, q.shape[0])
