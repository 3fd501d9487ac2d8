"""The public, flash-attn-compatible functions (same names, arguments, layouts and defaults).

Swap ``from flash_attn import flash_attn_func`` for ``from longseq.kernels.flash_attn import
flash_attn_func``. The differences:

- ``dropout_p > 0`` and ``return_attn_probs=True`` raise ``NotImplementedError``; so do the paged /
  rotary / batch-indexed cache arguments of :func:`flash_attn_with_kvcache`.
- ``deterministic`` works as in flash-attn: ``False`` (default) accumulates dq with fp32 atomics
  (faster, summation order not fixed); ``True`` uses a separate dq kernel and is bitwise
  reproducible. The forward is always deterministic.
- ``return_softmax_lse=True`` (keyword) returns ``(out, lse)`` from every function, not only the
  KV-cache one; the log-sum-exp is differentiable.
- rows that see no key (``Lq > Lk`` with causal, or an empty window) give ``out = 0`` and
  ``lse = -inf`` (flash-attn 2's non-split forward reports ``+inf`` there, flash-attn 3 ``-inf``).
- ``softmax_scale`` must be positive (flash-attn's kernels assume it too, silently).
- ``window_size`` entries are used as given: flash-attn 2 also treats ``left``/``right >= seqlen_k``
  as unbounded, which differs only when ``seqlen_q > seqlen_k + right``.

CUDA tensors and every tensor under ``TRITON_INTERPRET=1`` run the Triton kernels; other CPU tensors
run :func:`~longseq.kernels.flash_attn.reference.attention_ref` (same results, differentiable), so
layers built on these functions work everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from longseq.kernels._common import use_triton
from longseq.kernels.flash_attn import checks
from longseq.kernels.flash_attn.ops import flash_attn_decode_op, flash_attn_fwd_op
from longseq.kernels.flash_attn.reference import attention_ref

Tensor = torch.Tensor
Output = Tensor | tuple[Tensor, Tensor]

__all__ = [
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_with_kvcache",
]


def _last_dim_contiguous(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _slopes(alibi_slopes: Tensor | None) -> Tensor | None:
    return None if alibi_slopes is None else alibi_slopes.to(torch.float32).contiguous()


def _attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None,
    max_seqlen_q: int | None,
    max_seqlen_k: int | None,
    *,
    dropout_p: float,
    softmax_scale: float | None,
    causal: bool,
    window_size: Any,
    softcap: float,
    alibi_slopes: Tensor | None,
    deterministic: bool,
    return_attn_probs: bool,
    return_softmax_lse: bool,
) -> Output:
    """Validate, then run the kernel (or the reference on plain CPU tensors)."""
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    checks.check_unsupported(dropout_p, return_attn_probs)
    checks.check_qkv(q, k, v, varlen=varlen)
    checks.check_options(softcap, softmax_scale)
    left, right = checks.check_window(window_size)
    if causal:
        right = 0
    if varlen:
        if cu_seqlens_q is None or cu_seqlens_k is None:
            raise ValueError("cu_seqlens_q and cu_seqlens_k must be given together")
        max_seqlen_q, max_seqlen_k = int(max_seqlen_q), int(max_seqlen_k)
        checks.check_cu_seqlens(
            cu_seqlens_q, cu_seqlens_k, q.shape[0], k.shape[0], max_seqlen_q, max_seqlen_k, q.device
        )
        batch = cu_seqlens_q.numel() - 1
    else:
        batch, max_seqlen_q, max_seqlen_k = q.shape[0], q.shape[1], k.shape[1]
    checks.check_alibi(alibi_slopes, batch, q.shape[-2], q.device)
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    if use_triton(q):
        q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
        out, lse = flash_attn_fwd_op(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
            scale, left, right, float(softcap), _slopes(alibi_slopes), bool(deterministic),
        )  # fmt: skip
    else:
        out, lse = attention_ref(
            q, k, v, causal=causal, window_size=(left, right), softcap=softcap, alibi_slopes=alibi_slopes,
            softmax_scale=scale, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
        )  # fmt: skip
        out = out.to(q.dtype)
    return (out, lse) if return_softmax_lse else out


def flash_attn_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    return_softmax_lse: bool = False,
) -> Output:
    """Attention over padded batches, as ``flash_attn.flash_attn_func``.

    Args:
        q: ``(B, Lq, H, D)`` fp16, bf16 (or fp32); ``D <= 256``, any value (padded internally).
        k, v: ``(B, Lk, H_kv, D)`` with ``H_kv`` dividing ``H`` (GQA/MQA).
        dropout_p: must be 0 (dropout is not implemented).
        softmax_scale: default ``1 / sqrt(D)``; must be positive.
        causal: causal mask aligned to the bottom-right corner when ``Lq != Lk``.
        window_size: ``(left, right)`` sliding window, ``-1`` for unbounded; key ``j`` is visible from
            query ``i`` iff ``i + Lk - Lq - left <= j <= i + Lk - Lq + right``. Cost grows with the window.
        softcap: ``> 0`` applies ``softcap * tanh(scores / softcap)`` before masking.
        alibi_slopes: ``(H,)`` or ``(B, H)``; adds ``-slope * |i + Lk - Lq - j|`` to the scores.
        deterministic: ``True`` makes the backward bitwise reproducible (a separate dq kernel instead of
            fp32 atomics, somewhat slower). The forward always is.
        return_attn_probs: must be False (not supported).
        return_softmax_lse: also return the log-sum-exp ``(B, H, Lq)`` fp32 (differentiable).

    Returns:
        ``out`` ``(B, Lq, H, D)``, or ``(out, lse)``. Differentiable in q, k, v.
    """
    return _attention(
        q, k, v, None, None, None, None, dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal,
        window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes, deterministic=deterministic,
        return_attn_probs=return_attn_probs, return_softmax_lse=return_softmax_lse,
    )  # fmt: skip


def flash_attn_varlen_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: Tensor | None = None,
    *,
    return_softmax_lse: bool = False,
) -> Output:
    """Attention over packed sequences, as ``flash_attn.flash_attn_varlen_func``.

    Args:
        q: ``(Tq, H, D)``, the queries of all sequences back to back.
        k, v: ``(Tk, H_kv, D)``.
        cu_seqlens_q, cu_seqlens_k: int32 ``[B+1]`` sequence starts (sequence ``b`` is
            ``[cu[b], cu[b+1])``; empty sequences are allowed).
        max_seqlen_q, max_seqlen_k: at least the longest sequence (sizes the launch grid).
        block_table: paged KV is not supported (must be None).
        Other arguments: as :func:`flash_attn_func`; masks align per sequence. ``alibi_slopes`` may
        be ``(B, H)`` with B the number of sequences.

    Returns:
        ``out`` ``(Tq, H, D)``, or ``(out, lse)`` with ``lse`` ``(H, Tq)`` fp32.
    """
    if block_table is not None:
        raise NotImplementedError("block_table (paged KV) is not supported by longseq's flash_attn_varlen_func")
    return _attention(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=dropout_p,
        softmax_scale=softmax_scale, causal=causal, window_size=window_size, softcap=softcap,
        alibi_slopes=alibi_slopes, deterministic=deterministic, return_attn_probs=return_attn_probs,
        return_softmax_lse=return_softmax_lse,
    )  # fmt: skip


def _unpack(packed: Tensor, n: int, dim: int, name: str, layout: str) -> tuple[Tensor, ...]:
    if packed.dim() <= dim or packed.shape[dim] != n:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(packed.shape)}")
    return packed.unbind(dim)


def flash_attn_qkvpacked_func(
    qkv: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    return_softmax_lse: bool = False,
) -> Output:
    """:func:`flash_attn_func` on ``qkv`` ``(B, L, 3, H, D)``."""
    q, k, v = _unpack(qkv, 3, 2, "qkv", "(batch, seqlen, 3, nheads, headdim)")
    return flash_attn_func(
        q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
        return_attn_probs, return_softmax_lse=return_softmax_lse,
    )  # fmt: skip


def flash_attn_kvpacked_func(
    q: Tensor,
    kv: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    return_softmax_lse: bool = False,
) -> Output:
    """:func:`flash_attn_func` on ``q`` ``(B, Lq, H, D)`` and ``kv`` ``(B, Lk, 2, H_kv, D)``."""
    k, v = _unpack(kv, 2, 2, "kv", "(batch, seqlen_k, 2, nheads_k, headdim)")
    return flash_attn_func(
        q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
        return_attn_probs, return_softmax_lse=return_softmax_lse,
    )  # fmt: skip


def flash_attn_varlen_qkvpacked_func(
    qkv: Tensor,
    cu_seqlens: Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    return_softmax_lse: bool = False,
) -> Output:
    """:func:`flash_attn_varlen_func` on ``qkv`` ``(T, 3, H, D)`` with one ``cu_seqlens``."""
    q, k, v = _unpack(qkv, 3, 1, "qkv", "(total_tokens, 3, nheads, headdim)")
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, softmax_scale, causal, window_size,
        softcap, alibi_slopes, deterministic, return_attn_probs, return_softmax_lse=return_softmax_lse,
    )  # fmt: skip


def flash_attn_varlen_kvpacked_func(
    q: Tensor,
    kv: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    return_softmax_lse: bool = False,
) -> Output:
    """:func:`flash_attn_varlen_func` on ``q`` ``(Tq, H, D)`` and ``kv`` ``(Tk, 2, H_kv, D)``."""
    k, v = _unpack(kv, 2, 1, "kv", "(total_tokens_k, 2, nheads_k, headdim)")
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
        window_size, softcap, alibi_slopes, deterministic, return_attn_probs, return_softmax_lse=return_softmax_lse,
    )  # fmt: skip


def _append_to_cache(k_cache: Tensor, v_cache: Tensor, k: Tensor, v: Tensor, cache_seqlens: Tensor) -> None:
    """Write ``k``/``v`` ``(B, Lnew, H_kv, D)`` into the caches at rows ``cache_seqlens[b] + t``, in place."""
    batch, n_new = k.shape[:2]
    rows = cache_seqlens.long()[:, None] + torch.arange(n_new, device=k.device)  # (B, Lnew)
    bidx = torch.arange(batch, device=k.device)[:, None].expand(batch, n_new)
    k_cache[bidx, rows] = k
    v_cache[bidx, rows] = v


def flash_attn_with_kvcache(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    k: Tensor | None = None,
    v: Tensor | None = None,
    rotary_cos: Tensor | None = None,
    rotary_sin: Tensor | None = None,
    cache_seqlens: int | Tensor | None = None,
    cache_batch_idx: Tensor | None = None,
    cache_leftpad: Tensor | None = None,
    block_table: Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    rotary_interleaved: bool = True,
    alibi_slopes: Tensor | None = None,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
) -> Output:
    """Attention of new queries against a KV cache (generation), as ``flash_attn.flash_attn_with_kvcache``.

    The key range is split into ``num_splits`` chunks processed in parallel ("flash decoding") and
    merged by their log-sum-exps; tuned for query lengths 1..16, correct for any. Forward only.

    Args:
        q: ``(B, Lq, H, D)``.
        k_cache, v_cache: ``(B, L_cache, H_kv, D)``; batch element ``b`` holds ``cache_seqlens[b]`` keys.
        k, v: optional ``(B, Lnew, H_kv, D)`` new keys/values, written into the caches **in place** at
            rows ``cache_seqlens[b] ..`` before attending (``cache_seqlens`` itself is not updated).
        cache_seqlens: int or int32 ``(B,)``; ``None`` means the whole cache. Required with ``k``/``v``.
        causal, window_size, softcap, alibi_slopes, softmax_scale: as :func:`flash_attn_func`, aligned
            so the last query sits at the last valid key.
        num_splits: ``0`` chooses from the GPU's SM count; ``1`` disables splitting; at most 128 are used.
        return_softmax_lse: also return the log-sum-exp ``(B, H, Lq)``.
        rotary_cos, rotary_sin, cache_batch_idx, cache_leftpad, block_table: not supported (must be None);
            ``rotary_interleaved`` is then irrelevant.
    """
    unsupported = {
        "rotary_cos": rotary_cos,
        "rotary_sin": rotary_sin,
        "cache_batch_idx": cache_batch_idx,
        "cache_leftpad": cache_leftpad,
        "block_table": block_table,
    }
    for name, value in unsupported.items():
        if value is not None:
            raise NotImplementedError(
                f"{name} is not supported by longseq's flash_attn_with_kvcache; apply rotary embeddings before the "
                "call and keep one contiguous cache per batch element"
            )
    batch, cache_len = k_cache.shape[0], k_cache.shape[1] if k_cache.dim() > 1 else 0
    if cache_seqlens is None:
        if k is not None:
            raise ValueError("cache_seqlens is required when new k and v are appended to the cache")
        cache_seqlens = cache_len
    if isinstance(cache_seqlens, int):
        cache_seqlens = torch.full((batch,), cache_seqlens, dtype=torch.int32, device=k_cache.device)
    checks.check_cache(q, k_cache, v_cache, k, v, cache_seqlens)
    checks.check_options(softcap, softmax_scale)
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 0:
        raise ValueError(f"num_splits must be an int >= 0 (0: automatic), got {num_splits!r}")
    left, right = checks.check_window(window_size)
    if causal:
        right = 0
    checks.check_alibi(alibi_slopes, batch, q.shape[2], q.device)
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else float(softmax_scale)
    seqlens_k = cache_seqlens
    if k is not None:
        _append_to_cache(k_cache, v_cache, k, v, cache_seqlens)
        seqlens_k = cache_seqlens + k.shape[1]
    if use_triton(q):
        out, lse = flash_attn_decode_op(
            _last_dim_contiguous(q), _last_dim_contiguous(k_cache), _last_dim_contiguous(v_cache), seqlens_k,
            scale, left, right, float(softcap), _slopes(alibi_slopes), num_splits,
        )  # fmt: skip
    else:
        out, lse = attention_ref(
            q, k_cache, v_cache, causal=causal, window_size=(left, right), softcap=softcap,
            alibi_slopes=alibi_slopes, softmax_scale=scale, seqlens_k=seqlens_k,
        )  # fmt: skip
        out = out.to(q.dtype)
    return (out, lse) if return_softmax_lse else out
