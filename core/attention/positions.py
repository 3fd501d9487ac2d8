"""Positional schemes for attention, behind one small interface and registered by name.

A scheme acts at up to three points of an attention layer (each default is the identity):

* :meth:`PositionScheme.encode` adds an absolute embedding to the layer's input (``learned``,
  ``sinusoidal``); the residual stream is left alone.
* :meth:`PositionScheme.rotate` rotates queries and keys by their ``position_ids`` (``rope``).
* :meth:`PositionScheme.terms` adds score terms to the attention spec: ALiBi slopes (``alibi``), a
  ``score_mod`` (``t5``; ``music`` on packed/cached inputs) or a dense bias (``music`` on padded inputs,
  computed with the skewing trick).

``encode`` and ``rotate`` use ``position_ids``, which restart at 0 per packed sequence. Score terms use
indices in key coordinates (see :mod:`longseq.core.attention.base`), which are local to each packed
sequence and continue across decoding steps, so packed == per-sequence and cached == full forward hold.

>>> pos = create_positions("rope", head_dim=64, theta=1e4, scaling="ntk", factor=4.0)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from longseq.core.attention.base import AttentionSpec, ScoreMod


@dataclass(frozen=True)
class PositionTerms:
    """What a scheme adds to the attention spec (``None`` fields add nothing)."""

    alibi_slopes: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    score_mod: ScoreMod | None = None


class PositionScheme(nn.Module):
    """Base class: no positional information. Subclasses override some of the three hooks."""

    #: Registry name.
    name: ClassVar[str] = "none"

    def encode(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The attention input with absolute positions added: ``x`` ``(B, L, C)`` or ``(T, C)``."""
        return x

    def rotate(self, t: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Queries or keys ``(B, L, H, D)`` / ``(T, H, D)`` rotated by ``position_ids`` ``(B, L)`` / ``(T,)``."""
        return t

    def terms(self, q: torch.Tensor, spec: AttentionSpec, kv_len: int) -> PositionTerms:
        """Score terms for a call with queries ``q`` (after :meth:`rotate`) against ``kv_len`` keys
        (padded) or the packed boundaries in ``spec``."""
        return PositionTerms()


_POSITIONS: dict[str, type[PositionScheme]] = {}


def register_positions(cls: type[PositionScheme]) -> type[PositionScheme]:
    """Class decorator registering a scheme under ``cls.name``."""
    if cls.name in _POSITIONS and _POSITIONS[cls.name] is not cls:
        raise ValueError(f"positional scheme {cls.name!r} is already registered")
    _POSITIONS[cls.name] = cls
    return cls


def list_positions() -> list[str]:
    """Names of the registered positional schemes."""
    return list(_POSITIONS)


def create_positions(name: str, **kwargs: Any) -> PositionScheme:
    """Build the scheme ``name``. Context arguments a scheme does not take (``dim``, ``num_heads``,
    ``head_dim``, ``causal``) are dropped; any other unknown argument raises ``TypeError``."""
    try:
        cls = _POSITIONS[name]
    except KeyError:
        raise ValueError(f"unknown positional scheme {name!r}; valid: {', '.join(_POSITIONS)}") from None
    params = inspect.signature(cls).parameters
    context = {"dim", "num_heads", "head_dim", "causal"}
    return cls(**{k: v for k, v in kwargs.items() if k in params or k not in context})


register_positions(PositionScheme)


# --------------------------------------------------------------------------------------------
# rotary
# --------------------------------------------------------------------------------------------


@register_positions
class RoPE(PositionScheme):
    """Rotary embeddings (rotate-half layout) with optional length-extrapolation scaling.

    Args:
        head_dim: D.
        theta: base of the frequencies.
        rotary_dim: leading dims rotated (even, <= D); the rest pass through. Default D.
        scaling: ``None``; ``"linear"`` (position interpolation: positions / factor) or ``"ntk"``
            (NTK-aware: ``theta * factor ** (rd / (rd - 2))``, stretching low frequencies only).
        factor: the scaling factor (context extension ratio), >= 1.
    """

    name = "rope"

    def __init__(
        self,
        head_dim: int,
        theta: float = 10000.0,
        rotary_dim: int | None = None,
        scaling: str | None = None,
        factor: float = 1.0,
    ) -> None:
        super().__init__()
        rd = head_dim if rotary_dim is None else rotary_dim
        if rd % 2 or not 2 <= rd <= head_dim:
            raise ValueError(f"rotary_dim must be even and in [2, head_dim={head_dim}], got {rd}")
        if scaling not in (None, "linear", "ntk"):
            raise ValueError(f"rope scaling must be None, 'linear' or 'ntk', got {scaling!r}")
        if factor < 1:
            raise ValueError(f"rope scaling factor must be >= 1, got {factor}")
        base = theta * factor ** (rd / (rd - 2)) if scaling == "ntk" and rd > 2 else theta
        self.rotary_dim, self.pos_scale = rd, (1.0 / factor if scaling == "linear" else 1.0)
        inv_freq = 1.0 / base ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)  # (rd/2,)

    def rotate(self, t: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        freqs = (position_ids.float() * self.pos_scale).unsqueeze(-1) * self.inv_freq  # (..., L, rd/2)
        cos, sin = freqs.cos().unsqueeze(-2), freqs.sin().unsqueeze(-2)  # (..., L, 1, rd/2)
        half = self.rotary_dim // 2
        x1, x2 = t[..., :half].float(), t[..., half : self.rotary_dim].float()
        rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(t.dtype)
        return torch.cat((rotated, t[..., self.rotary_dim :]), dim=-1)


# --------------------------------------------------------------------------------------------
# absolute
# --------------------------------------------------------------------------------------------


@register_positions
class LearnedAbsolute(PositionScheme):
    """A learned embedding per position (``max_len`` of them) added to the layer input."""

    name = "learned"

    def __init__(self, dim: int, max_len: int = 4096) -> None:
        super().__init__()
        self.max_len = max_len
        self.table = nn.Embedding(max_len, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def encode(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() and position_ids.numel() and int(position_ids.max()) >= self.max_len:
            raise ValueError(f"position {int(position_ids.max())} exceeds learned positions max_len={self.max_len}")
        return x + self.table(position_ids.long()).to(x.dtype)


def sinusoid(position_ids: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Vaswani et al.'s table rows: ``(..., dim)`` fp32 with sin on even and cos on odd channels."""
    inv = base ** (-torch.arange(0, dim, 2, device=position_ids.device, dtype=torch.float32) / dim)
    ang = position_ids.float().unsqueeze(-1) * inv  # (..., dim/2)
    return torch.stack((ang.sin(), ang.cos()), dim=-1).flatten(-2)


@register_positions
class Sinusoidal(PositionScheme):
    """Fixed sinusoidal embeddings added to the layer input (any length)."""

    name = "sinusoidal"

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even dim, got {dim}")
        self.dim, self.base = dim, base

    def encode(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return x + sinusoid(position_ids, self.dim, self.base).to(x.dtype)


# --------------------------------------------------------------------------------------------
# relative biases
# --------------------------------------------------------------------------------------------


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Press et al.'s geometric slopes, fp32 ``(num_heads,)`` (with their rule for non powers of 2)."""

    def pow2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start**i * start for i in range(n)]

    if math.log2(num_heads).is_integer():
        return torch.tensor(pow2(num_heads), dtype=torch.float32)
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = alibi_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.cat((torch.tensor(pow2(closest), dtype=torch.float32), extra))


@register_positions
class ALiBi(PositionScheme):
    """ALiBi: ``-slope_h * |i - j|`` added to the scores (passed to backends as ``alibi_slopes``)."""

    name = "alibi"

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)  # (H,)

    def terms(self, q: torch.Tensor, spec: AttentionSpec, kv_len: int) -> PositionTerms:
        return PositionTerms(alibi_slopes=self.slopes)


def t5_bucket(rel: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bucket of relative position ``rel = kv_idx - q_idx``: exact for small distances, log-spaced
    up to ``max_distance``, one bucket beyond; separate halves for the two directions if bidirectional."""
    ret = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        ret = ret + (rel > 0).to(rel.dtype) * num_buckets
        n = rel.abs()
    else:
        n = (-rel).clamp(min=0)
    max_exact = num_buckets // 2
    log_ratio = torch.log(n.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + log_ratio * (num_buckets - max_exact)).to(rel.dtype).clamp(max=num_buckets - 1)
    return ret + torch.where(n < max_exact, n, large)


@register_positions
class T5Relative(PositionScheme):
    """T5 relative position buckets with a learned scalar bias per (bucket, head), as a ``score_mod``."""

    name = "t5"

    def __init__(self, num_heads: int, causal: bool = False, num_buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        if num_buckets < 4 or max_distance <= num_buckets // 2:
            raise ValueError(
                f"t5 needs num_buckets >= 4 and max_distance > num_buckets // 2, got {num_buckets}, {max_distance}"
            )
        self.bidirectional, self.num_buckets, self.max_distance = not causal, num_buckets, max_distance
        self.table = nn.Parameter(torch.zeros(num_buckets, num_heads))  # (buckets, H)

    def terms(self, q: torch.Tensor, spec: AttentionSpec, kv_len: int) -> PositionTerms:
        table, args = self.table, (self.bidirectional, self.num_buckets, self.max_distance)

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + table[t5_bucket(kv_idx - q_idx, *args), h].to(score.dtype)

        return PositionTerms(score_mod=score_mod)


def skew(rel_logits: torch.Tensor, kv_len: int) -> torch.Tensor:
    """Music Transformer's skewing: ``(..., Lq, Lq + Lk - 1)`` logits by relative distance -> ``(..., Lq, Lk)``
    by absolute key, without gathering: ``out[i, j] = rel_logits[i, j - i + Lq - 1]``.

    Pads one column, flattens each ``(Lq, W + 1)`` block and reads it back with row stride ``W``:
    element ``(i, j)`` lands at ``Lq - 1 + i * W + j`` = row ``i``, column ``j + Lq - 1 - i``.
    """
    *lead, Lq, W = rel_logits.shape
    if Lq + kv_len - 1 != W:
        raise ValueError(f"skew needs Lq + Lk - 1 = {Lq + kv_len - 1} relative columns, got {W}")
    flat = torch.nn.functional.pad(rel_logits, (0, 1)).flatten(-2)  # (..., Lq * (W + 1))
    return flat[..., Lq - 1 : Lq - 1 + Lq * W].unflatten(-1, (Lq, W))[..., :kv_len]


@register_positions
class MusicRelative(PositionScheme):
    """Music-Transformer (Shaw-style) learned relative embeddings: ``q_i . E_h[clip(j - i)]`` is added to
    the scores, with a per-head table ``E`` of ``2 * max_distance + 1`` rows of size D.

    Padded inputs use the skewing trick (:func:`skew`): ``Q @ E^T`` over the ``Lq + Lk - 1`` distances,
    then a pad-and-reshape; no ``Lq x Lk x D`` tensor exists, the extra memory is O(L * D) besides the
    logits. Packed and cached inputs gather ``(Q @ E^T)[row, h, clip(j - i)]`` in a ``score_mod``.
    """

    name = "music"

    def __init__(self, num_heads: int, head_dim: int, max_distance: int = 512) -> None:
        super().__init__()
        if max_distance < 1:
            raise ValueError(f"music max_distance must be >= 1, got {max_distance}")
        self.max_distance = max_distance
        self.rel = nn.Parameter(torch.randn(num_heads, 2 * max_distance + 1, head_dim) * head_dim**-0.5)

    def relative_logits(self, q: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Dense ``(B, H, Lq, Lk)`` term for padded ``q`` ``(B, Lq, H, D)``, bottom-right aligned (skewing)."""
        Lq, M = q.shape[1], self.max_distance
        dist = torch.arange(Lq + kv_len - 1, device=q.device) - (kv_len - 1)  # column c: j - i = c - (Lk - 1)
        table = self.rel[:, dist.clamp(-M, M) + M]  # (H, Lq + Lk - 1, D)
        rel_logits = torch.einsum("blhd,hwd->bhlw", q, table.to(q.dtype))  # (B, H, Lq, Lq + Lk - 1)
        return skew(rel_logits, kv_len)

    def terms(self, q: torch.Tensor, spec: AttentionSpec, kv_len: int) -> PositionTerms:
        if not spec.varlen and spec.kv_seqlens is None:
            return PositionTerms(bias=self.relative_logits(q, kv_len))
        M = self.max_distance
        qe = torch.einsum("...hd,hmd->...hm", q, self.rel.to(q.dtype))  # (B, Lq, H, 2M+1) or (T, H, 2M+1)
        row_of = _row_lookup(spec, q.shape[-3], kv_len)

        def score_mod(score, b, h, q_idx, kv_idx):
            rel = (kv_idx - q_idx).clamp(-M, M) + M
            return score + row_of(qe, b, h, q_idx, rel).to(score.dtype)

        return PositionTerms(score_mod=score_mod)


def _row_lookup(spec: AttentionSpec, q_rows: int, kv_len: int) -> Callable:
    """``fn(table, b, h, q_idx, col)`` reading ``table`` (per query row: ``(B, Lq, H, C)`` or packed
    ``(T, H, C)``) at the row of the query whose key coordinate is ``q_idx`` in batch row/sequence ``b``."""
    if spec.varlen:
        cu_q, cu_k = spec.cu_seqlens_q.long(), spec.cu_seqlens_k.long()
        shift = cu_q[:-1] - ((cu_k[1:] - cu_k[:-1]) - (cu_q[1:] - cu_q[:-1]))  # global row = q_idx + shift[b]
        return lambda t, b, h, q_idx, col: t[(q_idx + shift[b]).clamp(0, q_rows - 1), h, col]
    kv = spec.kv_seqlens
    if kv is None:
        return lambda t, b, h, q_idx, col: t[b, (q_idx - (kv_len - q_rows)).clamp(0, q_rows - 1), h, col]
    return lambda t, b, h, q_idx, col: t[b, (q_idx - (kv.long()[b] - q_rows)).clamp(0, q_rows - 1), h, col]
