"""Helpers shared by the attention tests: random inputs, a hand-written loop reference, and comparisons
of outputs and gradients under the project's tolerance rule."""

from __future__ import annotations

import math

import torch

from longseq.core.attention import AttentionSpec, attention_ref, get_backend
from longseq.core.attention.masks import global_tokens, longformer_mask, prefix_lm_mask
from longseq.core.attention.positions import t5_bucket
from longseq.kernels.testing import assert_close


def make_qkv(
    B: int, Lq: int, Lk: int, H: int, H_kv: int, D: int, *, dtype=torch.float32, device="cpu", grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random padded ``q (B, Lq, H, D)``, ``k``/``v`` ``(B, Lk, H_kv, D)``."""
    q = torch.randn(B, Lq, H, D, dtype=dtype, device=device)
    k = torch.randn(B, Lk, H_kv, D, dtype=dtype, device=device)
    v = torch.randn(B, Lk, H_kv, D, dtype=dtype, device=device)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def packed_qkv(lens_q: list[int], lens_k: list[int], H: int, H_kv: int, D: int, *, dtype=torch.float32, device="cpu"):
    """Random packed ``q (Tq, H, D)``, ``k``/``v`` ``(Tk, H_kv, D)`` and the spec's varlen fields."""
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32, device=device)
    q = torch.randn(int(cu_q[-1]), H, D, dtype=dtype, device=device, requires_grad=True)
    k = torch.randn(int(cu_k[-1]), H_kv, D, dtype=dtype, device=device, requires_grad=True)
    v = torch.randn(int(cu_k[-1]), H_kv, D, dtype=dtype, device=device, requires_grad=True)
    varlen = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k))
    return q, k, v, varlen


def outputs_and_grads(
    fn, inputs: tuple[torch.Tensor, ...], dout: torch.Tensor, grads: bool
) -> tuple[torch.Tensor, ...]:
    """``(out, d input for each of inputs that requires grad)`` of the closure ``fn()``, or ``(out,)``
    computed under ``no_grad`` when ``grads`` is false."""
    if not grads:
        with torch.no_grad():
            return (fn(),)
    out = fn()
    leaves = [t for t in inputs if t.requires_grad]
    return (out.detach(), *torch.autograd.grad(out, leaves, dout))


def check_against_math(backend, q, k, v, spec: AttentionSpec, *, extra: tuple[torch.Tensor, ...] = (), grads=True):
    """Compare ``backend.forward`` with the fp32 math reference: the output and, when ``grads``, the
    gradient of every input that requires grad (q, k, v and the tensors in ``extra`` the spec closes
    over). Low-precision inputs are also run through the low-precision reference (the tolerance rule)."""
    with torch.set_grad_enabled(grads):
        reason = backend.supports(spec, q, k)
    assert reason is None, reason
    inputs = (q, k, v, *extra)
    dout = torch.randn(q.shape, dtype=q.dtype, device=q.device)
    got = outputs_and_grads(lambda: backend.forward(q, k, v, spec), inputs, dout, grads)
    ref = outputs_and_grads(lambda: attention_ref(q, k, v, spec, upcast=True), inputs, dout, grads)
    lowp = None
    if q.dtype != torch.float32:
        lowp = outputs_and_grads(lambda: attention_ref(q, k, v, spec, upcast=False), inputs, dout, grads)
    names = ["out", "dq", "dk", "dv", *(f"d_extra{i}" for i in range(len(extra)))]
    assert len(got) == len(ref)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_close(g, r, None if lowp is None else lowp[i], name=f"{backend.name} {names[i]}")


def naive_attention(
    q, k, v, *, causal=False, window=(-1, -1), scale=None, softcap=0.0, alibi=None, bias=None, kv_len=None
):
    """Attention by explicit loops over (b, h, i, j) with flash-attn's rules, for tiny fp32 inputs."""
    q, k, v = (t.detach() for t in (q, k, v))
    B, Lq, H, D = q.shape
    Lk, H_kv = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(D) if scale is None else scale
    left, right = window
    if causal:
        right = 0
    out = torch.zeros(B, Lq, H, D, dtype=torch.float64)
    for b in range(B):
        n_k = Lk if kv_len is None else int(kv_len[b])
        for h in range(H):
            hk = h // (H // H_kv)
            for r in range(Lq):
                i = r + n_k - Lq  # bottom-right alignment
                scores, values = [], []
                for j in range(n_k):
                    if (left >= 0 and j < i - left) or (right >= 0 and j > i + right):
                        continue
                    s = float(q[b, r, h].double() @ k[b, j, hk].double()) * scale
                    if softcap > 0:
                        s = softcap * math.tanh(s / softcap)
                    if alibi is not None:
                        s -= float(alibi[h]) * abs(i - j)
                    if bias is not None:
                        s += float(bias[b, h, r, j])
                    scores.append(s)
                    values.append(v[b, j, hk].double())
                if scores:
                    p = torch.softmax(torch.tensor(scores, dtype=torch.float64), 0)
                    out[b, r, h] = sum(pi * vi for pi, vi in zip(p, values))
    return out


# feature cases shared by the CPU and GPU backend grids


def t5_like_score_mod(table: torch.Tensor):
    """A learned relative bias as score_mod (closes over ``table`` ``(buckets, H)``)."""
    return lambda s, b, h, qi, ki: s + table[t5_bucket(ki - qi, True, table.shape[0], 16), h]


def padded_case(name: str, B: int, Lq: int, Lk: int, H: int, device="cpu") -> tuple[dict, tuple[torch.Tensor, ...]]:
    """Spec kwargs and the extra differentiable tensors for feature ``name`` (padded layout) on ``device``."""
    if name == "plain":
        return {}, ()
    if name == "causal":
        return dict(causal=True), ()
    if name == "window":
        return dict(window=(3, 2)), ()
    if name == "causal_window":
        return dict(causal=True, window=(4, 0)), ()
    if name == "alibi":
        return dict(causal=True, alibi_slopes=torch.rand(B, H, device=device)), ()
    if name == "bias":
        bias = torch.randn(B, 1, Lq, Lk, device=device, requires_grad=True)
        return dict(bias=bias, window=(-1, 3)), (bias,)
    if name == "kv_seqlens":
        lens = torch.tensor([Lk, max(1, Lk // 2)] * B, dtype=torch.int32, device=device)[:B]
        return dict(causal=True, kv_seqlens=lens), ()
    if name == "mask_mod":
        return dict(mask_mod=longformer_mask(1, global_tokens(Lk, [0, Lk - 1], device=device))), ()
    if name == "softcap":
        return dict(softcap=0.8, causal=True), ()
    if name == "score_mod":
        table = torch.randn(8, H, device=device, requires_grad=True)
        return dict(score_mod=t5_like_score_mod(table)), (table,)
    raise KeyError(name)


def packed_case(name: str, n: int, H: int, device="cpu") -> dict:
    """Extra spec kwargs for packed feature ``name`` on ``device``."""
    return {
        "varlen": {},
        "varlen_causal": dict(causal=True),
        "varlen_window": dict(causal=True, window=(2, 0)),
        "varlen_alibi": dict(alibi_slopes=torch.rand(H, device=device)),
        "varlen_mask_mod": dict(mask_mod=prefix_lm_mask(torch.tensor([2, 0, 1, 3][:n], device=device))),
        "varlen_softcap": dict(softcap=1.1, causal=True),
    }[name]


PADDED = [
    "plain",
    "causal",
    "window",
    "causal_window",
    "alibi",
    "bias",
    "kv_seqlens",
    "mask_mod",
    "softcap",
    "score_mod",
]
PACKED = ["varlen", "varlen_causal", "varlen_window", "varlen_alibi", "varlen_mask_mod", "varlen_softcap"]
LENS = ([5, 1, 0, 11], [5, 3, 2, 11])  # per-sequence query and key lengths


def claims(backend: str, feature: str) -> bool:
    """Whether ``backend`` claims the feature a case name exercises."""
    base = feature.removeprefix("varlen_") if feature.startswith("varlen_") else feature
    needed = {"plain": set(), "varlen": {"varlen"}, "causal_window": {"causal", "window"}}.get(base, {base})
    if feature.startswith("varlen"):
        needed = needed | {"varlen"}
    return needed <= get_backend(backend).features
