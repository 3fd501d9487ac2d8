"""Flash attention in Triton with flash-attn's API: forward, backward, varlen, GQA, windows, ALiBi,
softcap and a split-KV decode path.

>>> out = flash_attn_func(q, k, v, causal=True)  # q (B, L, H, D), k/v (B, L, H_kv, D)
>>> out = flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, causal=True)
>>> out = flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens=lens, causal=True)

Files: ``reference.py`` (the fp32 spec, :func:`attention_ref`), ``triton.py`` (forward and backward
kernels and launchers), ``decode.py`` (split-KV decode), ``tiles.py`` (device helpers they share),
``tuning.py`` (autotuning candidates), ``ops.py`` (``torch.library`` custom ops
``longseq::flash_attn_fwd``/``_bwd``/``_decode`` with fake impls, so ``torch.compile(fullgraph=True)``
does not break), ``checks.py`` (input validation) and ``interface.py`` (the public functions, whose
docstring lists the few differences from flash-attn).
"""

from __future__ import annotations

from longseq.kernels.flash_attn.interface import (
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_attn_with_kvcache,
)
from longseq.kernels.flash_attn.reference import attention_ref, visible_mask

__all__ = [
    "attention_ref",
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_with_kvcache",
    "visible_mask",
]
