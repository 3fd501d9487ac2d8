"""The ``flex`` backend: ``torch.nn.attention.flex_attention`` with a block mask built from the spec.

Masks (causal, window, ``mask_mod``, key lengths, packing) become one ``mask_mod`` for
``create_block_mask``, so fully masked blocks are skipped; softcap, ALiBi, a dense bias and the user's
``score_mod`` become one ``score_mod``. Packed inputs run as one ``(1, H, T, D)`` sequence with a
document mask, and indices are translated back to each sequence's local ones before the user's
functions see them. On CUDA the op is compiled once per process (``torch.compile(flex_attention)``);
inside a compiled model it is traced with the model. On CPU it runs eagerly (forward only: FlexAttention
has no CPU backward), which materialises the scores but checks the same mask and score functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from longseq.core.attention.base import FEATURES, AttentionBackend, AttentionSpec, MaskMod, ScoreMod, register_backend
from longseq.core.attention.masks import Offset, _lookup, _per_batch, doc_ids, spec_mask_mod
from longseq.core.attention.math import alibi_scores

_COMPILED: dict[str, Callable] = {}


def _flex_attention() -> Callable:
    """The FlexAttention callable for the current context (traced, compiled or eager)."""
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def _run_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    fn = _flex_attention()
    if q.device.type == "cpu":  # inductor's CPU flex rejects q, k, v that are views of one buffer (fused qkv)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if torch.compiler.is_compiling():
        return fn(q, k, v, **kwargs)
    if q.is_cuda:
        if "cuda" not in _COMPILED:
            _COMPILED["cuda"] = torch.compile(fn)
        return _COMPILED["cuda"](q, k, v, **kwargs)
    with warnings.catch_warnings():  # eager flex warns that it materialises the scores: known, see above
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return fn(q, k, v, **kwargs)


def _kernel_options(spec: AttentionSpec, Lq: int) -> dict | None:
    """Inductor options for the compiled CUDA kernels (``None``: its defaults).

    * Queries longer than 16 rows always take the main FlexAttention kernel: inductor's decoding kernel
      (which it picks below 128 rows) finds no valid config for GQA groups with tens of rows (torch 2.11).
    * A score_mod that closes over tensors (a dense bias, a learned table) needs extra shared memory for
      their gradients; the default pipelining then asks for more than the 227 KiB of an H100 SM, so one
      fewer stage is used forward and backward.
    """
    opts: dict = {}
    if Lq > 16:
        opts["FORCE_USE_FLEX_ATTENTION"] = True
    if spec.bias is not None or spec.score_mod is not None:
        opts.update(fwd_num_stages=2, bwd_num_stages=1)
    return opts or None


def _block_mask(mask_mod: MaskMod | None, B: int | None, H: int | None, Lq: int, Lk: int, device: torch.device):
    if mask_mod is None:
        return None
    from torch.nn.attention.flex_attention import create_block_mask

    compile_mask = device.type == "cuda" and not torch.compiler.is_compiling()
    return create_block_mask(mask_mod, B, H, Lq, Lk, device=device, _compile=compile_mask)


def _bias_reader(bias: torch.Tensor) -> Callable:
    """``read(b, h, q_row, kv_idx)`` of a 4-D bias with size-1 (broadcast) dims, without expanding it
    (FlexAttention allocates a gradient buffer the size of each captured tensor)."""
    Bb, Hb, Qb, Kb = bias.shape

    def read(b, h, q_row, kv_idx):
        return bias[b if Bb > 1 else 0, h if Hb > 1 else 0, q_row if Qb > 1 else 0, kv_idx if Kb > 1 else 0]

    return read


def spec_score_mod(spec: AttentionSpec, q_offset: Offset) -> ScoreMod | None:
    """Softcap, ALiBi, the dense bias and ``spec.score_mod``, in the spec's order, as one score_mod in
    *row* coordinates. ``None`` when the scores are left alone."""
    softcap, slopes, user = spec.softcap, spec.alibi_slopes, spec.score_mod
    bias = None if spec.bias is None else _bias_reader(spec.bias)
    if softcap <= 0 and slopes is None and bias is None and user is None:
        return None

    def score_mod(score, b, h, q_row, kv_idx):
        q_idx = q_row + _per_batch(q_offset, b)
        if softcap > 0:
            score = softcap * torch.tanh(score / softcap)
        if slopes is not None:
            score = score + alibi_scores(slopes, b, h, q_idx, kv_idx)
        if bias is not None:
            score = score + bias(b, h, q_row, kv_idx)
        if user is not None:
            score = user(score, b, h, q_idx, kv_idx)
        return score

    return score_mod


def _packed_mods(spec: AttentionSpec, total_q: int, total_k: int) -> tuple[MaskMod, ScoreMod | None]:
    """Mask and score mods over global packed indices that call the spec's per-sequence ones with
    ``b`` = sequence index and local indices."""
    cu_q, cu_k = spec.cu_seqlens_q.long(), spec.cu_seqlens_k.long()
    doc_q, doc_k = doc_ids(spec.cu_seqlens_q, total_q), doc_ids(spec.cu_seqlens_k, total_k)
    offset = (cu_k[1:] - cu_k[:-1]) - (cu_q[1:] - cu_q[:-1])  # (N,) key-coordinate shift per sequence
    inner_mask = spec_mask_mod(spec, offset)
    inner_score = spec_score_mod(spec, offset)

    def local(b, q_idx, kv_idx):
        seq = _lookup(doc_q, b, q_idx)
        same = seq == _lookup(doc_k, b, kv_idx)
        return seq, same, q_idx - cu_q[seq], kv_idx - cu_k[seq]

    def mask_mod(b, h, q_idx, kv_idx):
        seq, same, q_row, kv_loc = local(b, q_idx, kv_idx)
        return same if inner_mask is None else same & inner_mask(seq, h, q_row, kv_loc)

    if inner_score is None:
        return mask_mod, None

    def score_mod(score, b, h, q_idx, kv_idx):
        seq, _, q_row, kv_loc = local(b, q_idx, kv_idx)
        return inner_score(score, seq, h, q_row, kv_loc)

    return mask_mod, score_mod


@register_backend
class FlexBackend(AttentionBackend):
    """FlexAttention with block masks: every feature but dropout; no backward on CPU."""

    name = "flex"
    features = frozenset(FEATURES) - {"dropout"}

    def unavailable(self, device: torch.device, needs: frozenset[str] = frozenset()) -> str | None:
        if device.type not in ("cuda", "cpu"):
            return f"flex runs on CUDA and CPU, got {device.type}"
        if device.type == "cpu" and "backward" in needs:
            return "flex does not support backward on CPU (FlexAttention has no CPU backward)"
        return None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: AttentionSpec) -> torch.Tensor:
        if q.device.type == "cpu" and not torch.is_grad_enabled():  # flex refuses CPU inputs requiring grad
            q, k, v = q.detach(), k.detach(), v.detach()
        if spec.varlen:
            Tq, Tk, H = q.shape[0], k.shape[0], q.shape[1]
            mask_mod, score_mod = _packed_mods(spec, Tq, Tk)
            block_mask = _block_mask(mask_mod, None, H if spec.mask_mod is not None else None, Tq, Tk, q.device)
            qh, kh, vh = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H|H_kv, T, D)
            return self._flex(qh, kh, vh, spec, score_mod, block_mask).squeeze(0).transpose(0, 1)  # (Tq, H, D)
        B, Lq, H, _ = q.shape
        Lk = k.shape[1]
        kv_len = spec.kv_seqlens
        q_offset: Offset = Lk - Lq if kv_len is None else kv_len.long() - Lq
        mask_mod = spec_mask_mod(spec, q_offset, kv_len)
        per_bh = spec.mask_mod is not None or kv_len is not None
        block_mask = _block_mask(mask_mod, B if per_bh else None, H if per_bh else None, Lq, Lk, q.device)
        score_mod = spec_score_mod(spec, q_offset)
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|H_kv, L, D)
        return self._flex(qh, kh, vh, spec, score_mod, block_mask).transpose(1, 2)  # (B, Lq, H, D)

    @staticmethod
    def _flex(qh, kh, vh, spec: AttentionSpec, score_mod: ScoreMod | None, block_mask) -> torch.Tensor:
        """FlexAttention on ``(B, H|H_kv, L, D)`` with the spec's scale, GQA and CUDA kernel options."""
        return _run_flex(
            qh,
            kh,
            vh,
            score_mod=score_mod,
            block_mask=block_mask,
            scale=spec.scale,
            enable_gqa=kh.shape[1] != qh.shape[1],
            kernel_options=_kernel_options(spec, qh.shape[2]) if qh.is_cuda else None,
        )
