"""Heads: chunked cross-entropy == full cross-entropy (value and gradients, bounded memory), LM head
weight tying, sequence pooling packed == padded, per-token head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from longseq.core.heads import (
    POOLS,
    AttentionPool,
    ClassificationHead,
    LMHead,
    TokenRegressionHead,
    chunked_cross_entropy,
    pool_sequences,
)
from longseq.core.packing import pack, packed_to_pad
from longseq.kernels.testing import assert_close


def _ce_inputs(t, d, v, dtype, with_bias, ignore_frac=0.25):
    hidden = torch.randn(t, d).to(dtype)
    weight = (torch.randn(v, d) / d**0.5).to(dtype)
    bias = torch.randn(v).to(dtype) if with_bias else None
    targets = torch.randint(0, v, (t,))
    targets[torch.rand(t) < ignore_frac] = -100
    return hidden, weight, bias, targets


def _ce_with_grads(fn, hidden, weight, bias, targets, cast, reduction):
    leaves = [cast(t).requires_grad_() for t in (hidden, weight, bias) if t is not None]
    h, w = leaves[:2]
    b = leaves[2] if bias is not None else None
    loss = fn(h, w, b, targets, reduction)
    grad_out = torch.linspace(-1, 1, loss.numel()).view(loss.shape) if reduction == "none" else torch.ones(())
    loss.backward(grad_out.to(loss.dtype))
    return [loss.detach()] + [t.grad for t in leaves]


def _full(h, w, b, targets, reduction):
    return F.cross_entropy(F.linear(h, w, b).float(), targets, ignore_index=-100, reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 33, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_chunked_cross_entropy_matches_full(chunk, with_bias, reduction, dtype):
    inputs = _ce_inputs(33, 16, 37, dtype, with_bias)
    targets = inputs[3]

    def chunked(h, w, b, t, red):
        return chunked_cross_entropy(h, w, t, bias=b, chunk_size=chunk, reduction=red)

    ours = _ce_with_grads(chunked, *inputs, lambda t: t.detach().clone(), reduction)
    ref = _ce_with_grads(_full, *inputs, lambda t: t.detach().float(), reduction)
    lowp = _ce_with_grads(_full, *inputs, lambda t: t.detach().clone(), reduction) if dtype != torch.float32 else None
    names = ["loss", "d_hidden", "d_weight", "d_bias"]
    for i, (a, r) in enumerate(zip(ours, ref)):
        assert a.dtype == (torch.float32 if i == 0 else dtype)
        assert_close(a, r, None if lowp is None else lowp[i], name=names[i])
    if reduction == "none":
        assert bool((ours[0][targets == -100] == 0).all())


def test_chunked_cross_entropy_3d_and_all_ignored():
    h, w, _, t = _ce_inputs(12, 8, 5, torch.float32, False)
    loss = chunked_cross_entropy(h.view(3, 4, 8), w, t.view(3, 4), chunk_size=5)
    assert_close(loss, _full(h, w, None, t, "mean"), name="3-D input")
    assert chunked_cross_entropy(h, w, torch.full((12,), -100)).item() == 0.0


def test_chunked_cross_entropy_never_materialises_full_logits():
    """Every tensor an op produces stays below the full (T, V) logits when chunks are small."""
    t, d, v, chunk = 256, 8, 64, 16

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(o, torch.Tensor):
                    LargestOutput.largest = max(LargestOutput.largest, o.numel())
            return out

    h = torch.randn(t, d, requires_grad=True)
    w = torch.randn(v, d, requires_grad=True)
    targets = torch.randint(0, v, (t,))
    with LargestOutput():
        chunked_cross_entropy(h, w, targets, chunk_size=chunk).backward()
    assert LargestOutput.largest <= max(chunk * v, t * d, v * d) < t * v
    with LargestOutput():
        LargestOutput.largest = 0
        _full(h, w, None, targets, "mean").backward()
    assert LargestOutput.largest >= t * v  # the check can see full logits


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"targets": torch.tensor([0, 1, 7])}, "lie in \\[0, 5\\) or equal ignore_index=-100, got \\[7\\]"),
        ({"targets": torch.tensor([0, 1])}, "leading shape \\(3,\\)"),
        ({"targets": torch.tensor([0, 1, 2], dtype=torch.int32)}, "int64"),
        ({"weight": torch.randn(5, 3)}, "weight must be \\(V, 4\\)"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_chunked_cross_entropy_errors(kwargs, msg):
    args = {"hidden": torch.randn(3, 4), "weight": torch.randn(5, 4), "targets": torch.tensor([0, 1, 2])}
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        chunked_cross_entropy(**args)


def test_lm_head_tying_and_loss():
    emb = torch.nn.Embedding(11, 6)
    head = LMHead(6, 11, tie_weight=emb.weight, chunk_size=4)
    assert head.proj.weight is emb.weight
    h = torch.randn(2, 5, 6)
    targets = torch.randint(0, 11, (2, 5))
    assert_close(head.loss(h, targets), F.cross_entropy(head(h).flatten(0, 1), targets.flatten()), name="loss")
    head.loss(h, targets).backward()
    assert emb.weight.grad is not None
    with pytest.raises(ValueError, match="tied weight must be \\(11, 7\\)"):
        LMHead(7, 11, tie_weight=emb.weight)


# ------------------------------------------------------------------ pooling


LENGTHS = [4, 1, 6, 3]


@pytest.mark.parametrize("prefix", [0, 1])
@pytest.mark.parametrize("pool", POOLS)
def test_pooling_packed_equals_padded(pool, prefix):
    d = 8
    head = ClassificationHead(d, 3, pool, num_prefix_tokens=prefix, attn_heads=2)
    seqs = [torch.randn(n + prefix, d, dtype=torch.float64) for n in LENGTHS]
    head = head.double()
    batch = pack(seqs)
    xp = batch.x.clone().requires_grad_()
    out_p = head(xp, packed=batch)
    padded, mask = packed_to_pad(batch, max_len=max(LENGTHS) + prefix + 2)
    xd = padded.clone().requires_grad_()
    out_d = head(xd, mask=mask)
    torch.testing.assert_close(out_p, out_d)
    w = torch.randn_like(out_p)
    gp = torch.autograd.grad((out_p * w).sum(), [xp, *head.parameters()])
    gd = torch.autograd.grad((out_d * w).sum(), [xd, *head.parameters()])
    torch.testing.assert_close(gp[0], gd[0][mask])
    assert bool((gd[0][~mask] == 0).all()), "padding gets no gradient"
    for a, b in zip(gp[1:], gd[1:]):
        torch.testing.assert_close(a, b)
    alone = torch.cat([head(s[None]) for s in seqs])
    torch.testing.assert_close(out_p, alone)


def test_pooling_values():
    x = torch.arange(12.0).view(1, 4, 3)
    mask = torch.tensor([[False, True, True, False]])  # left and right padding
    assert pool_sequences(x, "mean", mask=mask).tolist() == [[4.5, 5.5, 6.5]]
    assert pool_sequences(x, "cls", mask=mask).tolist() == [[3.0, 4.0, 5.0]]
    assert pool_sequences(x, "last", mask=mask).tolist() == [[6.0, 7.0, 8.0]]
    assert pool_sequences(x, "mean", num_prefix_tokens=2).tolist() == [[7.5, 8.5, 9.5]]
    attn = AttentionPool(3, 1)
    torch.nn.init.zeros_(attn.key.weight)
    torch.nn.init.zeros_(attn.key.bias)  # equal scores: attention pooling is the mean
    torch.testing.assert_close(
        pool_sequences(x, "attention", mask=mask, attn=attn), pool_sequences(x, "mean", mask=mask)
    )


def test_pooling_errors():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool_sequences(x, "max")
    with pytest.raises(ValueError, match="needs its AttentionPool"):
        pool_sequences(x, "attention")
    with pytest.raises(ValueError, match="mask must be bool \\(2, 3\\)"):
        pool_sequences(x, "mean", mask=torch.ones(2, 3))
    empty = pack([torch.randn(2, 4), torch.randn(0, 4)])
    with pytest.raises(ValueError, match="needs every sequence non-empty"):
        pool_sequences(empty.x, "last", packed=empty)
    with pytest.raises(ValueError, match="unknown pooling"):
        ClassificationHead(4, 2, "max")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        AttentionPool(6, 4)


def test_classification_and_token_heads_shapes():
    x = torch.randn(2, 5, 8)
    assert ClassificationHead(8, 0)(x).shape == (2, 8)
    assert ClassificationHead(8, 3, "cls")(x, pre_logits=True).shape == (2, 8)
    reg = TokenRegressionHead(8, 2)
    assert reg(x).shape == (2, 5, 2) and reg(x[0]).shape == (5, 2)
    assert torch.equal(TokenRegressionHead(8, 0)(x), x)


@pytest.mark.gpu
def test_chunked_cross_entropy_large_batch_memory_on_gpu():
    """131k tokens x 32k vocabulary: full fp32 logits would take 16 GiB; the chunked loss stays near
    one chunk's logits, and its value and hidden-state gradients match a per-slice reference."""
    dev = torch.device("cuda")
    t, d, v, chunk = 131072, 256, 32000, 4096
    gen = torch.Generator(device=dev).manual_seed(0)
    hidden = torch.randn(t, d, device=dev, generator=gen).bfloat16().requires_grad_()
    weight = (torch.randn(v, d, device=dev, generator=gen) / d**0.5).bfloat16().requires_grad_()
    targets = torch.randint(0, v, (t,), device=dev, generator=gen)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_size=chunk)
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    chunk_logits = chunk * v * 4
    assert extra < 6 * chunk_logits + 2 * hidden.numel() * 2, f"peak extra {extra / 2**30:.2f} GiB"
    with torch.no_grad():

        def sliced_loss(cast):
            return (
                sum(
                    F.cross_entropy(
                        F.linear(cast(hidden[s : s + chunk]), cast(weight)).float(),
                        targets[s : s + chunk],
                        reduction="sum",
                    )
                    for s in range(0, t, chunk)
                )
                / t
            )

        ref, lowp = sliced_loss(lambda x: x.float()), sliced_loss(lambda x: x)
    assert_close(loss, ref, lowp, name="loss (131k tokens)")
    n = 2048  # d_hidden of a slice only depends on that slice's logits
    h_ref = hidden[:n].detach().float().requires_grad_()
    (F.cross_entropy(F.linear(h_ref, weight.detach().float()), targets[:n], reduction="sum") / t).backward()
    h_low = hidden[:n].detach().clone().requires_grad_()
    (F.cross_entropy(F.linear(h_low, weight.detach()).float(), targets[:n], reduction="sum") / t).backward()
    assert_close(hidden.grad[:n], h_ref.grad, h_low.grad, name="d_hidden slice")
