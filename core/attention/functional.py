"""The functional entry ``attention(q, k, v, ...)`` and backend selection.

``backend="auto"`` takes the first backend of :data:`AUTO_ORDER` for the device that supports the
call, preferring those that need no dense ``Lq x Lk`` mask; a backend that was asked for (by name, or
through ``LONGSEQ_ATTN_BACKEND``, which overrides the argument) but cannot run the call falls back the
same way. Each fallback warns once per (backend, reason) with the reason naming the missing feature.
"""

from __future__ import annotations

import os
import warnings

import torch

from longseq.core.attention.base import AttentionBackend, AttentionSpec, MaskMod, ScoreMod, get_backend

#: Environment variable that overrides every ``backend`` argument.
ENV_VAR = "LONGSEQ_ATTN_BACKEND"

#: ``auto``'s preference per device type: fused kernels first, the reference last. Flex is not tried on
#: CPU (no backward there, and eager Flex materialises the scores); ask for it by name.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("flash", "sdpa", "flex", "math"),
    "cpu": ("sdpa", "math"),
}

_WARNED: set[tuple[str, str]] = set()


def reset_fallback_warnings() -> None:
    """Forget which fallbacks were warned about, so the next one warns again (for tests)."""
    _WARNED.clear()


def requested_backend(backend: str = "auto") -> str:
    """``$LONGSEQ_ATTN_BACKEND`` when set, else ``backend``."""
    return os.environ.get(ENV_VAR) or backend


def _warn_fallback(chosen: str, skipped: list[tuple[str, str]]) -> None:
    new = [(name, reason) for name, reason in skipped if (name, reason) not in _WARNED]
    if not new or torch.compiler.is_compiling():  # dynamo cannot trace warnings.warn
        return
    _WARNED.update(new)
    why = "; ".join(reason for _, reason in new)
    warnings.warn(f"attention: {why}; using backend {chosen!r}", UserWarning, stacklevel=4)


def select_backend(
    spec: AttentionSpec, q: torch.Tensor, k: torch.Tensor, backend: str = "auto", *, strict: bool = False
) -> AttentionBackend:
    """The backend that runs ``spec`` on ``q``/``k``.

    Args:
        backend: ``"auto"`` or a registered name; ``$LONGSEQ_ATTN_BACKEND`` overrides it.
        strict: raise ``ValueError`` instead of falling back when the named backend cannot run the call.
    """
    name = requested_backend(backend)
    skipped: list[tuple[str, str]] = []
    if name != "auto":
        try:
            chosen = get_backend(name)
        except ValueError as exc:
            source = f" (from ${ENV_VAR})" if os.environ.get(ENV_VAR) else ""
            raise ValueError(f"{exc}{source}") from None
        reason = chosen.supports(spec, q, k)
        if reason is None:
            return chosen
        if strict:
            raise ValueError(f"attention backend {name!r} cannot run this call: {reason}")
        skipped.append((name, reason))
    order = AUTO_ORDER.get(q.device.type, ("math",))
    reasons = {n: get_backend(n).supports(spec, q, k) for n in order}
    ok = [n for n in order if reasons[n] is None]
    efficient = [n for n in ok if get_backend(n).efficient(spec, q, k)]
    choice = (efficient or ok or ["math"])[0]
    skipped += [(n, reasons[n]) for n in order[: order.index(choice)] if reasons[n] is not None and n != name]
    if skipped:
        _warn_fallback(choice, skipped)
    return get_backend(choice)


def _check_same(what: str, got: object, expected: object) -> None:
    if got != expected:
        raise ValueError(f"{what}: expected {expected}, got {got}")


def validate_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec) -> None:
    """Raise ``ValueError``/``TypeError`` naming what was given and expected for malformed inputs."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.device == k.device == v.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    ndim = 3 if spec.varlen else 4
    layout = "packed (T, H, D) with cu_seqlens" if spec.varlen else "padded (B, L, H, D)"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != ndim:
            raise ValueError(f"{name} must be {layout}, got shape {tuple(t.shape)}")
    _check_same("v must have k's shape", tuple(v.shape), tuple(k.shape))
    _check_same("k's head dim must equal q's", k.shape[-1], q.shape[-1])
    H, H_kv = q.shape[-2], k.shape[-2]
    if H_kv < 1 or H % H_kv:
        raise ValueError(f"the number of k/v heads must divide the query heads {H}, got {H_kv}")
    if spec.varlen:
        n = spec.cu_seqlens_q.numel()
        for name, cu in (("cu_seqlens_q", spec.cu_seqlens_q), ("cu_seqlens_k", spec.cu_seqlens_k)):
            if cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() != n:
                raise ValueError(f"{name} must be int32 [N+1] with N+1 = {n}, got {cu.dtype} {tuple(cu.shape)}")
        if not torch.compiler.is_compiling():
            from longseq.core.packing import validate_cu_seqlens

            validate_cu_seqlens(spec.cu_seqlens_q, q.shape[0])
            validate_cu_seqlens(spec.cu_seqlens_k, k.shape[0])
        B = n - 1
    else:
        _check_same("k's batch size must equal q's", k.shape[0], q.shape[0])
        B = q.shape[0]
    if spec.alibi_slopes is not None:
        s = spec.alibi_slopes
        if s.dtype != torch.float32 or tuple(s.shape) not in ((H,), (B, H)):
            raise ValueError(f"alibi_slopes must be fp32 ({H},) or ({B}, {H}), got {s.dtype} {tuple(s.shape)}")
    if spec.bias is not None:
        full = (B, H, q.shape[1], k.shape[1])
        if spec.bias.dim() != 4 or any(d not in (1, f) for d, f in zip(spec.bias.shape, full)):
            raise ValueError(f"bias must broadcast to (B, H, Lq, Lk) = {full}, got {tuple(spec.bias.shape)}")
    if spec.kv_seqlens is not None and tuple(spec.kv_seqlens.shape) != (B,):
        raise ValueError(f"kv_seqlens must have shape ({B},), got {tuple(spec.kv_seqlens.shape)}")


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    *,
    backend: str = "auto",
    strict: bool = False,
    validate: bool = True,
) -> torch.Tensor:
    """Run ``spec`` on validated inputs through the selected backend (see :func:`attention`)."""
    if validate:
        validate_inputs(q, k, v, spec)
    return select_backend(spec, q, k, backend, strict=strict).forward(q, k, v, spec)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    window: int | tuple[int, int] | None = None,
    scale: float | None = None,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    score_mod: ScoreMod | None = None,
    mask_mod: MaskMod | None = None,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    kv_seqlens: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
    strict: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention with flash-attn's layout and semantics on any backend.

    Args:
        q: ``(B, Lq, H, D)``, or packed ``(Tq, H, D)`` with ``cu_seqlens_q``.
        k, v: ``(B, Lk, H_kv, D)`` or packed ``(Tk, H_kv, D)``; ``H_kv`` divides ``H``.
        causal: bottom-right aligned causal mask.
        window: ``(left, right)`` tokens each side (``-1`` unlimited); an int ``w`` means ``(w, w)``.
        scale: score scale, default ``1 / sqrt(D)``.
        softcap: ``> 0`` caps scores with ``softcap * tanh(s / softcap)``.
        alibi_slopes: fp32 ``(H,)`` or ``(B, H)``.
        bias: additive, broadcastable to ``(B, H, Lq, Lk)`` (padded inputs).
        score_mod, mask_mod: FlexAttention-style functions; ``q_idx`` is in key coordinates.
        cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k: packed boundaries (int32 ``[N+1]``).
        kv_seqlens: int32 ``(B,)`` valid keys per row of padded ``k``/``v`` (KV cache).
        cu_seqlens, max_seqlen: shorthand for self-attention on packed inputs (the same boundaries for
            queries and keys, as ``PackedBatch`` holds them).
        dropout_p: dropout on the attention probabilities.
        backend: ``"auto"``, ``"math"``, ``"sdpa"``, ``"flex"``, ``"flash"`` (``$LONGSEQ_ATTN_BACKEND`` overrides).
        strict: raise instead of falling back when the named backend cannot run the call.

    Returns:
        The output, shaped like ``q``. See :mod:`longseq.core.attention.base` for the exact semantics.
    """
    if cu_seqlens is not None:
        if cu_seqlens_q is not None or cu_seqlens_k is not None:
            raise ValueError("give cu_seqlens (self-attention) or cu_seqlens_q/cu_seqlens_k, not both")
        cu_seqlens_q = cu_seqlens_k = cu_seqlens
        max_seqlen_q = max_seqlen_k = max_seqlen
    spec = AttentionSpec(
        causal=causal,
        window=window,
        scale=scale,
        softcap=softcap,
        alibi_slopes=alibi_slopes,
        bias=bias,
        score_mod=score_mod,
        mask_mod=mask_mod,
        cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=max_seqlen_q,
        max_seqlen_k=max_seqlen_k,
        kv_seqlens=kv_seqlens,
        dropout_p=dropout_p,
    )
    return attend(q, k, v, spec, backend=backend, strict=strict)
