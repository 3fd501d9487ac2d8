"""The ``flash`` backend: longseq's Triton FlashAttention kernel (``longseq.kernels.flash_attn``).

The kernel has flash-attn's API (``flash_attn_func``, ``flash_attn_varlen_func``,
``flash_attn_with_kvcache``) and semantics, which are this package's semantics, so the spec maps onto
it one to one. Arbitrary biases, ``score_mod`` and ``mask_mod`` are not expressible; padded keys with
per-row lengths (a KV cache) go through ``flash_attn_with_kvcache``, which has no backward.
The backend stays registered while the kernel is missing and says so in :meth:`supports`. The kernel
implements no dropout, so neither does this backend.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from longseq.core.attention.base import AttentionBackend, AttentionSpec, register_backend
from longseq.kernels._common import interpreting

KERNEL_MODULE = "longseq.kernels.flash_attn"
#: Largest head dim the kernel takes (flash-attn's limit).
MAX_HEAD_DIM = 256


_KERNEL: dict[str, ModuleType | str] = {}


def _kernel() -> ModuleType | str:
    """The kernel module, or why it cannot be imported (looked up once per process)."""
    if "module" not in _KERNEL:
        try:
            _KERNEL["module"] = importlib.import_module(KERNEL_MODULE)
        except ImportError as exc:
            _KERNEL["module"] = f"flash kernel {KERNEL_MODULE} is not importable ({type(exc).__name__}: {exc})"
    return _KERNEL["module"]


@register_backend
class FlashBackend(AttentionBackend):
    """Triton FlashAttention-2: causal, windows, GQA, packed, ALiBi, softcap, KV cache (no dropout)."""

    name = "flash"
    features = frozenset({"causal", "window", "gqa", "varlen", "kv_seqlens", "alibi", "softcap", "backward"})

    def unavailable(self, device: torch.device, needs: frozenset[str] = frozenset()) -> str | None:
        kernel = _kernel()
        if isinstance(kernel, str):
            return kernel
        if device.type != "cuda" and not interpreting():
            return f"flash needs CUDA tensors (or TRITON_INTERPRET=1), got {device.type}"
        if {"kv_seqlens", "backward"} <= needs:
            return "flash does not support backward with kv_seqlens (flash_attn_with_kvcache is forward-only)"
        return None

    def supports(self, spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor | None = None) -> str | None:
        reason = super().supports(spec, q, k)
        if reason is None and q.shape[-1] > MAX_HEAD_DIM:
            return f"flash supports head dims up to {MAX_HEAD_DIM}, got {q.shape[-1]}"
        return reason

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
        kernel = _kernel()
        if isinstance(kernel, str):
            raise RuntimeError(kernel)
        common = dict(
            softmax_scale=spec.scale,
            causal=spec.causal,
            window_size=spec.window,
            softcap=spec.softcap,
            alibi_slopes=spec.alibi_slopes,
        )
        if spec.kv_seqlens is not None:
            return kernel.flash_attn_with_kvcache(q, k, v, cache_seqlens=spec.kv_seqlens, **common)
        if spec.varlen:
            return kernel.flash_attn_varlen_func(
                q,
                k,
                v,
                spec.cu_seqlens_q,
                spec.cu_seqlens_k,
                spec.max_seqlen_q,
                spec.max_seqlen_k,
                dropout_p=spec.dropout_p,
                **common,
            )
        return kernel.flash_attn_func(q, k, v, dropout_p=spec.dropout_p, **common)
