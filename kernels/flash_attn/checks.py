"""Input validation of the flash attention functions: shapes, dtypes, devices and option values.

Static properties (shapes, dtypes, devices) are checked on every call. Checks that read tensor
*values* (``cu_seqlens`` monotone and ending at the token count, ``max_seqlen`` covering the longest
sequence, ``cache_seqlens`` in range) copy a few integers to the host, so they run once per tensor
object and version (a second call with the same ``cu_seqlens`` tensor costs nothing) and are skipped
while ``torch.compile`` traces or a CUDA graph is being captured.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from longseq.kernels._common import FLOAT_DTYPES, check_dtype, check_same_device
from longseq.kernels.flash_attn.triton import MAX_HEADDIM

_CHECKED: dict[int, tuple[Any, int, set[tuple[Any, ...]]]] = {}


def _version(t: torch.Tensor) -> int:
    return -1 if t.is_inference() else t._version


def _values_checkable(t: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def check_values_once(t: torch.Tensor, key: tuple[Any, ...], check: Callable[[], None]) -> None:
    """Run ``check()`` (which may sync with the device) unless ``t`` at this version already passed with ``key``."""
    if not _values_checkable(t):
        return
    tid = id(t)
    entry = _CHECKED.get(tid)
    if entry is None or entry[0]() is not t or entry[1] != _version(t):
        entry = (weakref.ref(t, lambda _r, tid=tid: _CHECKED.pop(tid, None)), _version(t), set())
    if key in entry[2]:
        return
    check()
    entry[2].add(key)
    _CHECKED[tid] = entry


def check_window(window_size: Any) -> tuple[int, int]:
    """``(left, right)`` as ints, each ``>= -1`` (``-1``: unbounded)."""
    try:
        left, right = (int(w) for w in window_size)
    except (TypeError, ValueError):
        raise ValueError(f"window_size must be a pair of ints (left, right), got {window_size!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window_size entries must be >= -1 (-1 means unbounded), got {window_size!r}")
    return left, right


def check_unsupported(dropout_p: float, return_attn_probs: bool) -> None:
    """flash-attn arguments this implementation does not provide raise ``NotImplementedError``."""
    if dropout_p != 0.0:
        raise NotImplementedError(
            f"dropout_p={dropout_p}: attention dropout is not implemented by longseq's flash attention; "
            "pass dropout_p=0.0 (apply dropout elsewhere, e.g. on the attention output)"
        )
    if return_attn_probs:
        raise NotImplementedError(
            "return_attn_probs=True is not supported by longseq's flash attention (the probabilities are never "
            "materialised); use return_softmax_lse=True for the log-sum-exp, or longseq.kernels.flash_attn.attention_ref"
        )


def check_options(softcap: float, softmax_scale: float | None) -> None:
    if not softcap >= 0:
        raise ValueError(f"softcap must be >= 0 (0 disables it), got {softcap}")
    if softmax_scale is not None and not (isinstance(softmax_scale, (int, float)) and softmax_scale > 0):
        raise ValueError(f"softmax_scale must be a float > 0 or None (1/sqrt(headdim)), got {softmax_scale!r}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, varlen: bool) -> None:
    """Dtypes, ranks, head counts and head dims of q, k, v (padded ``(B, L, H, D)`` or packed ``(T, H, D)``)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_dtype(name, t, FLOAT_DTYPES)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    rank, layout = (3, "(total_tokens, nheads, headdim)") if varlen else (4, "(batch, seqlen, nheads, headdim)")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != rank:
            raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")
    check_same_device(q=q, k=k, v=v)
    d = q.shape[-1]
    if not 1 <= d <= MAX_HEADDIM:
        raise ValueError(f"head dim must be in [1, {MAX_HEADDIM}], got {d}")
    if k.shape[-1] != d or v.shape[-1] != d:
        raise ValueError(f"q, k and v must share the head dim, got {d}, {k.shape[-1]}, {v.shape[-1]}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    h, h_kv = q.shape[-2], k.shape[-2]
    if h_kv == 0 or h % h_kv != 0:
        raise ValueError(f"the number of k/v heads ({h_kv}) must divide the number of q heads ({h})")
    if not varlen and k.shape[0] != q.shape[0]:
        raise ValueError(f"q and k must have the same batch size, got {q.shape[0]} and {k.shape[0]}")


def check_alibi(alibi_slopes: torch.Tensor | None, batch: int, nheads: int, device: torch.device) -> None:
    if alibi_slopes is None:
        return
    check_dtype("alibi_slopes", alibi_slopes, FLOAT_DTYPES)
    if tuple(alibi_slopes.shape) not in ((nheads,), (batch, nheads)):
        raise ValueError(
            f"alibi_slopes must have shape ({nheads},) or ({batch}, {nheads}), got {tuple(alibi_slopes.shape)}"
        )
    check_same_device(q=torch.empty(0, device=device), alibi_slopes=alibi_slopes)


def _cu_values(name: str, cu: torch.Tensor, total: int, max_seqlen: int, max_name: str) -> None:
    vals = cu.tolist()
    if vals[0] != 0:
        raise ValueError(f"{name} must start at 0, got {vals[0]}")
    if vals[-1] != total:
        raise ValueError(f"{name} must end at the total number of tokens {total}, got {vals[-1]}")
    lengths = [b - a for a, b in zip(vals[:-1], vals[1:])]
    if any(n < 0 for n in lengths):
        raise ValueError(f"{name} must be non-decreasing, got {vals}")
    longest = max(lengths, default=0)
    if longest > max_seqlen:
        raise ValueError(f"{max_name}={max_seqlen} is smaller than the longest sequence in {name} ({longest})")


def check_cu_seqlens(
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    total_q: int,
    total_k: int,
    max_seqlen_q: int,
    max_seqlen_k: int,
    device: torch.device,
) -> None:
    """int32 ``[B+1]`` on the inputs' device, same B, starting at 0, non-decreasing, ending at the totals."""
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 1:
            got = f"dtype {cu.dtype} shape {tuple(cu.shape)}" if isinstance(cu, torch.Tensor) else type(cu).__name__
            raise ValueError(f"{name} must be a 1-D int32 tensor [batch + 1], got {got}")
        if cu.device != device:
            raise ValueError(f"{name} must be on the device of q ({device}), got {cu.device}")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(
            f"cu_seqlens_q and cu_seqlens_k must describe the same number of sequences, "
            f"got {cu_seqlens_q.numel() - 1} and {cu_seqlens_k.numel() - 1}"
        )
    for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    check_values_once(
        cu_seqlens_q,
        ("q", total_q, max_seqlen_q),
        lambda: _cu_values("cu_seqlens_q", cu_seqlens_q, total_q, max_seqlen_q, "max_seqlen_q"),
    )
    check_values_once(
        cu_seqlens_k,
        ("k", total_k, max_seqlen_k),
        lambda: _cu_values("cu_seqlens_k", cu_seqlens_k, total_k, max_seqlen_k, "max_seqlen_k"),
    )


def check_cache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor | None,
    cache_seqlens: torch.Tensor,
) -> None:
    """Shapes of the KV cache, the new keys/values and ``cache_seqlens`` ``(B,)`` int32 (values in range)."""
    check_qkv(q, k_cache, v_cache, varlen=False)
    batch, cache_len = k_cache.shape[:2]
    n_new = 0
    if (k is None) != (v is None):
        raise ValueError("k and v must be given together (new keys and values to append to the cache)")
    if k is not None:
        for name, t in (("k", k), ("v", v)):
            want = (batch, t.shape[1], *k_cache.shape[2:])
            if t.dim() != 4 or tuple(t.shape) != want or t.dtype != k_cache.dtype:
                raise ValueError(
                    f"{name} must be (batch, seqlen_new, nheads_k, headdim) = {want} in {k_cache.dtype}, "
                    f"got {tuple(t.shape)} in {t.dtype}"
                )
        if k.shape != v.shape:
            raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
        check_same_device(q=q, k=k, v=v)
        n_new = k.shape[1]
    if cache_seqlens.dtype != torch.int32 or tuple(cache_seqlens.shape) != (batch,):
        raise ValueError(
            f"cache_seqlens must be an int or an int32 tensor of shape ({batch},), "
            f"got {cache_seqlens.dtype} {tuple(cache_seqlens.shape)}"
        )
    check_same_device(q=q, cache_seqlens=cache_seqlens)

    def values() -> None:
        vals = cache_seqlens.tolist()
        bad = [s for s in vals if s < 0 or s + n_new > cache_len]
        if bad:
            raise ValueError(
                f"cache_seqlens must lie in [0, {cache_len - n_new}] (cache length {cache_len} minus {n_new} new "
                f"tokens), got {vals}"
            )

    check_values_once(cache_seqlens, ("cache", cache_len, n_new), values)
