"""The ``Attention`` mixer: projections, heads (GQA/MQA), optional qk-norm, a positional scheme, a
mask, and a backend chosen per call; plus its KV cache for decoding.

Registered as mixers ``"attention"`` and ``"probsparse_attention"`` (Informer's variant)::

    layer = create_mixer("attention", dim=512, num_heads=8, num_kv_heads=2, causal=True, window=1024)
    y = layer(x)                                   # (B, L, 512)
    y = layer(packed.x, packed=packed)             # (T, 512), sequences never see each other
    cache = layer.allocate_cache(B, 4096, x.dtype, x.device)
    y = layer(prompt, cache=cache)                 # prefill
    y_t, cache = layer.step(x_t, cache)            # one token (B, 512)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from longseq.core.attention.base import AttentionSpec, MaskMod, normalize_window
from longseq.core.attention.functional import attend, requested_backend
from longseq.core.attention.masks import and_masks
from longseq.core.attention.positions import create_positions, list_positions
from longseq.core.attention.probsparse import probsparse_attention
from longseq.core.norms import RMSNorm
from longseq.core.packing import PackedBatch
from longseq.core.registry import register_mixer

VARIANTS = ("full", "probsparse")
#: Schemes that add score terms, which ProbSparse's sampled scores do not include.
_SCORE_TERM_POSITIONS = ("alibi", "t5", "music")


@dataclass
class AttentionConfig:
    """Configuration of :class:`Attention` (validated on construction).

    Attributes:
        dim: model width C (input and output features).
        num_heads: query heads H.
        num_kv_heads: key/value heads (divides H; 1 = MQA); default H.
        head_dim: D; default ``dim // num_heads``.
        qkv_bias, out_bias: biases of the fused q/k/v projection and of the output projection.
        qk_norm: RMSNorm over D of queries and keys (before rotary).
        norm_eps: epsilon of the qk-norm.
        backend: ``"auto"`` or a backend name (``$LONGSEQ_ATTN_BACKEND`` overrides it).
        strict_backend: raise instead of falling back when the named backend cannot run a call.
        positions: positional scheme name (``"rope"``, ``"alibi"``, ``"t5"``, ``"music"``, ``"learned"``,
            ``"sinusoidal"``, ``"none"``).
        positions_kwargs: extra arguments of the scheme (e.g. ``{"scaling": "ntk", "factor": 4.0}``).
        rope_theta: RoPE base (used when ``positions == "rope"`` and not set in ``positions_kwargs``).
        causal: causal self-attention.
        window: sliding window, an int ``w`` (= ``(w, w)``, ``(w, 0)`` when causal) or ``(left, right)``.
        softcap: tanh soft-capping of the scores (0 = off).
        mask_mod: a mask pattern from :mod:`longseq.core.attention.masks` applied to every call.
        attn_dropout: dropout on the attention probabilities (training only).
        proj_dropout: dropout on the output.
        variant: ``"full"`` or ``"probsparse"`` (Informer).
        factor: ProbSparse sampling factor ``c``.
    """

    dim: int
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: bool = False
    norm_eps: float = 1e-6
    backend: str = "auto"
    strict_backend: bool = False
    positions: str = "rope"
    positions_kwargs: dict[str, Any] = field(default_factory=dict)
    rope_theta: float = 10000.0
    causal: bool = False
    window: int | tuple[int, int] | None = None
    softcap: float = 0.0
    mask_mod: MaskMod | None = None
    attn_dropout: float = 0.0
    proj_dropout: float = 0.0
    variant: str = "full"
    factor: float = 5.0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.num_heads < 1:
            raise ValueError(f"dim and num_heads must be >= 1, got {self.dim}, {self.num_heads}")
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads must divide num_heads={self.num_heads}, got {self.num_kv_heads}")
        if self.head_dim is None:
            if self.dim % self.num_heads:
                raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}; give head_dim")
            self.head_dim = self.dim // self.num_heads
        if self.positions not in list_positions():
            raise ValueError(f"unknown positional scheme {self.positions!r}; valid: {', '.join(list_positions())}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown attention variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        normalize_window(self.window, self.causal)  # raises on malformed windows
        if self.variant == "probsparse":
            unsupported = {
                "window": self.window is not None,
                "mask_mod": self.mask_mod is not None,
                "softcap": self.softcap > 0,
                f"positions={self.positions!r}": self.positions in _SCORE_TERM_POSITIONS,
                "attn_dropout": self.attn_dropout > 0,
            }
            bad = [name for name, on in unsupported.items() if on]
            if bad:
                raise ValueError(f"the probsparse variant does not support {', '.join(bad)}")


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, per batch row.

    Attributes:
        k, v: ``(B, max_len, H_kv, D)`` buffers (rotary already applied to ``k``).
        seqlens: int32 ``(B,)`` tokens stored per row; new tokens go to ``k[b, seqlens[b]:]``.
        filled: host-side count of the tokens appended to the fullest row, so the overflow check
            needs no device sync (keep it in step if you edit ``seqlens``; not updated, and the check
            skipped, inside ``torch.compile``).
    """

    k: torch.Tensor
    v: torch.Tensor
    seqlens: torch.Tensor
    filled: int = 0

    @property
    def max_len(self) -> int:
        """Capacity in tokens."""
        return self.k.shape[1]


@register_mixer("attention")
class Attention(nn.Module):
    """Multi-head attention mixer; see :class:`AttentionConfig` for the options.

    Implements the mixer protocol (:mod:`longseq.core.mixers.base`): ``forward(x, *, packed=None,
    cache=None, attn_bias=None, mask_mod=None)`` on ``(B, L, C)`` or packed ``(T, C)``,
    ``allocate_cache`` and ``step``. ``attn_bias`` (padded only) is added to the scores, broadcast to
    ``(B, H, Lq, Lk)``; ``mask_mod`` is ANDed with the configured mask for this call.
    """

    def __init__(self, dim: int, num_heads: int, **options: Any) -> None:
        super().__init__()
        cfg = self.config = AttentionConfig(dim=dim, num_heads=num_heads, **options)
        H, H_kv, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.qkv = nn.Linear(dim, (H + 2 * H_kv) * D, bias=cfg.qkv_bias)
        self.out = nn.Linear(H * D, dim, bias=cfg.out_bias)
        self.q_norm = RMSNorm(D, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(D, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        kwargs = dict(cfg.positions_kwargs)
        if cfg.positions == "rope":
            kwargs.setdefault("theta", cfg.rope_theta)
        self.positions = create_positions(cfg.positions, dim=dim, num_heads=H, head_dim=D, causal=cfg.causal, **kwargs)
        self.proj_drop = nn.Dropout(cfg.proj_dropout)

    @property
    def backend(self) -> str:
        """The backend this layer asks for (after ``$LONGSEQ_ATTN_BACKEND``)."""
        return requested_backend(self.config.backend)

    def allocate_cache(self, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` rows of up to ``max_len`` tokens."""
        cfg = self.config
        shape = (batch_size, max_len, cfg.num_kv_heads, cfg.head_dim)
        return KVCache(
            k=torch.zeros(shape, dtype=dtype, device=device),
            v=torch.zeros(shape, dtype=dtype, device=device),
            seqlens=torch.zeros(batch_size, dtype=torch.int32, device=device),
        )

    def step(self, x_t: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        """Decode one token per row: ``x_t`` ``(B, C)`` -> ``(y_t (B, C), cache)``; equals the full forward."""
        if x_t.dim() != 2:
            raise ValueError(f"step takes one token per row, x_t of shape (B, C), got {tuple(x_t.shape)}")
        return self.forward(x_t.unsqueeze(1), cache=cache).squeeze(1), cache

    def _positions(self, x: torch.Tensor, packed: PackedBatch | None, cache: KVCache | None) -> torch.Tensor:
        """``position_ids``: packed ``(T,)``, else ``(B, L)`` continuing from the cache."""
        if packed is not None:
            return packed.position_ids
        B, L = x.shape[:2]
        start = torch.zeros(B, dtype=torch.long, device=x.device) if cache is None else cache.seqlens.long()
        return start.unsqueeze(1) + torch.arange(L, device=x.device)  # (B, L)

    def _check_input(self, x: torch.Tensor, packed: PackedBatch | None, cache: KVCache | None) -> None:
        C = self.config.dim
        if packed is not None:
            if x.dim() != 2 or x.shape != (packed.x.shape[0], C):
                raise ValueError(f"packed input must be (T, C) = ({packed.x.shape[0]}, {C}), got {tuple(x.shape)}")
            if cache is not None:
                raise ValueError("a KV cache needs padded (B, L, C) input, got packed input")
        elif x.dim() != 3 or x.shape[-1] != C:
            raise ValueError(f"input must be (B, L, C) with C = {C}, or (T, C) with packed=, got {tuple(x.shape)}")
        if cache is not None:
            if self.config.variant == "probsparse":
                raise NotImplementedError(
                    "probsparse attention has no KV-cache decoding: its query choice needs the whole sequence"
                )
            if not torch.compiler.is_compiling() and cache.filled + x.shape[1] > cache.max_len:
                raise ValueError(f"KV cache overflow: {cache.filled} + {x.shape[1]} tokens > max_len {cache.max_len}")

    def forward(
        self,
        x: torch.Tensor,
        *,
        packed: PackedBatch | None = None,
        cache: KVCache | None = None,
        attn_bias: torch.Tensor | None = None,
        mask_mod: MaskMod | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` ``(B, L, C)`` or packed ``(T, C)``; with ``cache``, append to it and attend over it."""
        self._check_input(x, packed, cache)
        cfg = self.config
        H, H_kv, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        pos = self._positions(x, packed, cache)
        qkv = self.qkv(self.positions.encode(x, pos))  # (..., L, (H + 2 H_kv) D)
        q, k, v = qkv.split((H * D, H_kv * D, H_kv * D), dim=-1)
        q = self.q_norm(q.unflatten(-1, (H, D)))  # (B, L, H, D) or (T, H, D)
        k = self.k_norm(k.unflatten(-1, (H_kv, D)))  # (B, L, H_kv, D) or (T, H_kv, D)
        v = v.unflatten(-1, (H_kv, D))
        q, k = self.positions.rotate(q, pos), self.positions.rotate(k, pos)
        if cache is not None:
            k, v = _append(cache, k, v)  # (B, max_len, H_kv, D): everything cached so far
        if cfg.variant == "probsparse":
            cu = None if packed is None else packed.cu_seqlens
            out = probsparse_attention(q, k, v, causal=cfg.causal, factor=cfg.factor, cu_seqlens=cu)
        else:
            out = self._attend(q, k, v, packed, cache, attn_bias, mask_mod)
        return self.proj_drop(self.out(out.flatten(-2)))  # (..., L, C)

    def _attend(self, q, k, v, packed, cache, attn_bias, mask_mod) -> torch.Tensor:
        cfg = self.config
        masks = [m for m in (cfg.mask_mod, mask_mod) if m is not None]
        spec = AttentionSpec(
            causal=cfg.causal,
            window=cfg.window,
            softcap=cfg.softcap,
            mask_mod=and_masks(*masks) if len(masks) > 1 else (masks[0] if masks else None),
            cu_seqlens_q=None if packed is None else packed.cu_seqlens,
            cu_seqlens_k=None if packed is None else packed.cu_seqlens,
            max_seqlen_q=None if packed is None else packed.max_seqlen,
            max_seqlen_k=None if packed is None else packed.max_seqlen,
            kv_seqlens=None if cache is None else cache.seqlens,
            dropout_p=cfg.attn_dropout if self.training else 0.0,
        )
        terms = self.positions.terms(q, spec, k.shape[-3])
        bias = attn_bias
        if terms.bias is not None:
            bias = terms.bias if bias is None else bias + terms.bias
        spec = dataclasses.replace(spec, alibi_slopes=terms.alibi_slopes, bias=bias, score_mod=terms.score_mod)
        return attend(q, k, v, spec, backend=cfg.backend, strict=cfg.strict_backend, validate=packed is None)


def _append(cache: KVCache, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``k``/``v`` ``(B, L, H_kv, D)`` after each row's cached tokens; advance ``seqlens``."""
    B, L = k.shape[:2]
    rows = torch.arange(B, device=k.device).unsqueeze(1)  # (B, 1)
    cols = cache.seqlens.long().unsqueeze(1) + torch.arange(L, device=k.device)  # (B, L)
    cache.k[rows, cols] = k.to(cache.k.dtype)
    cache.v[rows, cols] = v.to(cache.v.dtype)
    cache.seqlens = cache.seqlens + L
    if not torch.compiler.is_compiling():  # a Python int: reading it in a trace would recompile every step
        cache.filled += L
    return cache.k, cache.v


@register_mixer("probsparse_attention")
def probsparse_attention_mixer(dim: int, num_heads: int, **options: Any) -> Attention:
    """:class:`Attention` with Informer's ProbSparse variant (``variant="probsparse"``)."""
    return Attention(dim, num_heads, variant="probsparse", **options)
