"""The attention backend interface: a frozen :class:`AttentionSpec`, the :class:`AttentionBackend` base
class and the backend registry.

Layout (flash-attn's, so the Triton kernel drops in): padded ``q`` is ``(B, Lq, H, D)`` and ``k``/``v``
are ``(B, Lk, H_kv, D)``; packed ``q`` is ``(Tq, H, D)`` and ``k``/``v`` are ``(Tk, H_kv, D)`` with
``cu_seqlens_q``/``cu_seqlens_k``. ``H_kv`` divides ``H`` (GQA/MQA): query head ``h`` reads key/value
head ``h // (H // H_kv)``. Outputs have ``q``'s shape.

Semantics (those of flash-attn; the ``math`` backend is their executable spec):

* Scores are ``s = (q . k) * scale`` with ``scale = 1/sqrt(D)`` by default, then, in this order:
  ``softcap * tanh(s / softcap)`` when ``softcap > 0``; ``- slope[b, h] * |i - j|`` with ALiBi;
  ``+ bias[b, h, i, j]``; ``score_mod(s, b, h, i, j)``; finally disallowed pairs get ``-inf``.
* Query row ``r`` of a sequence with ``Lq`` queries and ``Lk`` keys sits at position ``i = r + Lk - Lq``
  on the key axis (bottom-right alignment). Every index function (``mask_mod``, ``score_mod``) and every
  relative position sees this *key coordinate* ``i``, so a decoding step sees the same indices as the
  full forward. For packed inputs indices are local to each sequence and ``b`` is the sequence index.
* ``causal`` allows ``j <= i``; ``window=(left, right)`` allows ``i - left <= j <= i + right`` where
  ``-1`` means unlimited; ``causal`` forces ``right = 0``.
* A query row with no allowed key outputs zeros (and passes no gradient).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

#: ``mask_mod(b, h, q_idx, kv_idx) -> bool tensor`` (FlexAttention's signature); ``q_idx`` is in key coordinates.
MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: ``score_mod(score, b, h, q_idx, kv_idx) -> score`` (FlexAttention's signature); ``q_idx`` in key coordinates.
ScoreMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: Every feature a spec can request, in the order the support matrix shows them.
FEATURES: tuple[str, ...] = (
    "causal",
    "window",
    "gqa",
    "varlen",
    "kv_seqlens",
    "alibi",
    "softcap",
    "bias",
    "score_mod",
    "mask_mod",
    "dropout",
    "backward",
)

#: One line per feature, for the docs and ``longseq info``.
FEATURE_DOCS: dict[str, str] = {
    "causal": "causal mask (bottom-right aligned when Lq != Lk)",
    "window": "sliding window (left, right), -1 = unlimited",
    "gqa": "grouped/multi-query attention (H_kv < H)",
    "varlen": "packed sequences via cu_seqlens (T, H, D)",
    "kv_seqlens": "padded keys with a valid length per batch row (KV-cache decoding)",
    "alibi": "ALiBi slopes per head",
    "softcap": "tanh soft-capping of the scores",
    "bias": "dense additive bias broadcastable to (B, H, Lq, Lk)",
    "score_mod": "FlexAttention-style score_mod(score, b, h, q_idx, kv_idx)",
    "mask_mod": "FlexAttention-style mask_mod(b, h, q_idx, kv_idx) (longformer, bigbird, ...)",
    "dropout": "dropout on the attention probabilities",
    "backward": "gradients",
}


def normalize_window(window: int | tuple[int, int] | None, causal: bool = False) -> tuple[int, int]:
    """``(left, right)`` with ``-1`` = unlimited; an int ``w`` means ``(w, w)``; ``causal`` sets ``right = 0``."""
    if window is None:
        left, right = -1, -1
    elif isinstance(window, int):
        left, right = window, window
    else:
        if len(window) != 2:
            raise ValueError(f"window must be an int or a (left, right) pair, got {window!r}")
        left, right = (int(w) for w in window)
    for side, w in (("left", left), ("right", right)):
        if w < -1:
            raise ValueError(f"window {side} must be >= 0 or -1 (unlimited), got {w}")
    return (left, 0) if causal else (left, right)


@dataclass(frozen=True, eq=False)
class AttentionSpec:
    """What an attention call computes, apart from ``q``, ``k``, ``v`` (see the module docstring).

    Attributes:
        causal: mask keys after the query (bottom-right aligned).
        window: ``(left, right)`` sliding window, ``-1`` = unlimited (``causal`` forces ``right = 0``);
            an int ``w`` or ``None`` is accepted and stored as ``(w, w)`` or ``(-1, -1)``.
        scale: score scale; ``None`` means ``1 / sqrt(D)``.
        softcap: ``> 0`` applies ``softcap * tanh(s / softcap)`` to the scaled scores.
        alibi_slopes: ``(H,)`` or ``(B, H)`` fp32 slopes; adds ``-slope * |i - j|``.
        bias: dense additive bias broadcastable to ``(B, H, Lq, Lk)`` (padded layout only).
        score_mod: ``score_mod(score, b, h, q_idx, kv_idx)``, applied after the bias.
        mask_mod: ``mask_mod(b, h, q_idx, kv_idx) -> bool``, ANDed with causal/window.
        cu_seqlens_q, cu_seqlens_k: int32 ``[N+1]`` boundaries of packed inputs (both or neither).
        max_seqlen_q, max_seqlen_k: the longest packed sequence (as flash-attn requires).
        kv_seqlens: int32 ``(B,)`` valid keys per batch row of padded ``k``/``v`` (a KV cache); queries
            are aligned to the last valid key.
        dropout_p: dropout on the attention probabilities (pass 0 in eval).
    """

    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    scale: float | None = None
    softcap: float = 0.0
    alibi_slopes: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    score_mod: ScoreMod | None = None
    mask_mod: MaskMod | None = None
    cu_seqlens_q: torch.Tensor | None = None
    cu_seqlens_k: torch.Tensor | None = None
    max_seqlen_q: int | None = None
    max_seqlen_k: int | None = None
    kv_seqlens: torch.Tensor | None = None
    dropout_p: float = 0.0
    _features: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", normalize_window(self.window, self.causal))
        if self.softcap < 0:
            raise ValueError(f"softcap must be >= 0 (0 disables it), got {self.softcap}")
        if not 0.0 <= self.dropout_p < 1.0:
            raise ValueError(f"dropout_p must be in [0, 1), got {self.dropout_p}")
        if (self.cu_seqlens_q is None) != (self.cu_seqlens_k is None):
            raise ValueError("give both cu_seqlens_q and cu_seqlens_k for packed inputs, or neither")
        if self.varlen and (self.max_seqlen_q is None or self.max_seqlen_k is None):
            raise ValueError("packed inputs need max_seqlen_q and max_seqlen_k with cu_seqlens")
        if self.varlen and self.bias is not None:
            raise ValueError("a dense bias needs the padded (B, L, H, D) layout; use score_mod for packed inputs")
        if self.varlen and self.kv_seqlens is not None:
            raise ValueError("kv_seqlens is for padded (B, L, H, D) keys; packed inputs carry cu_seqlens_k")
        feats = {
            "causal": self.causal,
            "window": self.window != (-1, -1) and (not self.causal or self.window[0] >= 0),
            "varlen": self.varlen,
            "kv_seqlens": self.kv_seqlens is not None,
            "alibi": self.alibi_slopes is not None,
            "softcap": self.softcap > 0,
            "bias": self.bias is not None,
            "score_mod": self.score_mod is not None,
            "mask_mod": self.mask_mod is not None,
            "dropout": self.dropout_p > 0,
        }
        object.__setattr__(self, "_features", frozenset(k for k, on in feats.items() if on))

    @property
    def varlen(self) -> bool:
        """Whether the inputs are packed (``cu_seqlens`` given)."""
        return self.cu_seqlens_q is not None

    def features(self, q: torch.Tensor, k: torch.Tensor | None = None) -> frozenset[str]:
        """The features this call needs, as names from :data:`FEATURES`."""
        out = set(self._features)
        if k is not None and k.shape[-2] != q.shape[-2]:
            out.add("gqa")
        if torch.is_grad_enabled() and q.requires_grad:
            out.add("backward")
        return frozenset(out)


class AttentionBackend(ABC):
    """One way of computing attention. Subclasses set ``name`` and ``features`` and implement
    :meth:`forward`; they override :meth:`unavailable` when they cannot run on some devices."""

    #: Registry name (``"math"``, ``"sdpa"``, ...).
    name: ClassVar[str]
    #: Features from :data:`FEATURES` this backend implements.
    features: ClassVar[frozenset[str]]

    def unavailable(self, device: torch.device, needs: frozenset[str] = frozenset()) -> str | None:
        """Why this backend cannot run on ``device`` for a call needing ``needs``, or ``None``."""
        return None

    def supports(self, spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor | None = None) -> str | None:
        """``None`` when this backend can run ``spec`` on ``q``/``k``, else the reason naming what is missing."""
        needs = spec.features(q, k)
        reason = self.unavailable(q.device, needs)
        if reason is not None:
            return reason
        missing = [f for f in FEATURES if f in needs and f not in self.features]
        if missing:
            return f"{self.name} does not support {', '.join(missing)}"
        return None

    def efficient(self, spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor) -> bool:
        """Whether this backend runs ``spec`` without materialising an ``Lq x Lk`` mask; ``auto`` prefers
        backends for which this is true."""
        return True

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
        """Attention output with ``q``'s shape; inputs are validated by the caller."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_BACKENDS: dict[str, AttentionBackend] = {}

#: Modules whose import registers the built-in backends.
BUILTIN_BACKEND_MODULES: tuple[str, ...] = (
    "longseq.core.attention.math",
    "longseq.core.attention.sdpa",
    "longseq.core.attention.flex",
    "longseq.core.attention.flash",
)


def register_backend(cls: type[AttentionBackend]) -> type[AttentionBackend]:
    """Class decorator registering an instance of ``cls`` under ``cls.name``."""
    name = cls.name
    if name in _BACKENDS and type(_BACKENDS[name]) is not cls:
        raise ValueError(f"attention backend {name!r} is already registered (by {type(_BACKENDS[name]).__module__})")
    unknown = set(cls.features) - set(FEATURES)
    if unknown:
        raise ValueError(f"backend {name!r} claims unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}")
    _BACKENDS[name] = cls()
    return cls


_BUILTINS_LOADED: list[bool] = [False]


def _import_builtins() -> None:
    if _BUILTINS_LOADED[0]:  # also keeps importlib out of torch.compile traces
        return
    for mod in BUILTIN_BACKEND_MODULES:
        importlib.import_module(mod)
    _BUILTINS_LOADED[0] = True


#: The built-in backends, in the order listings show them.
BUILTIN_BACKENDS: tuple[str, ...] = ("math", "sdpa", "flex", "flash")


def list_backends() -> list[str]:
    """Names of the registered backends: the built-ins (``math, sdpa, flex, flash``), then others."""
    _import_builtins()
    builtin = [n for n in BUILTIN_BACKENDS if n in _BACKENDS]
    return builtin + [n for n in _BACKENDS if n not in BUILTIN_BACKENDS]


def get_backend(name: str) -> AttentionBackend:
    """The backend registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    _import_builtins()
    try:
        return _BACKENDS[name]
    except KeyError:
        valid = ", ".join(["auto", *list_backends()])
        raise ValueError(f"unknown attention backend {name!r}; valid: {valid}") from None
