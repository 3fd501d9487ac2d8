"""Causal conv1d kernels vs the fp32 reference: outputs and every gradient, packed resets, decoding."""

from __future__ import annotations

import pytest
import torch

from longseq.kernels._common import interpreting
from longseq.kernels.causal_conv1d import (
    causal_conv1d_fn,
    causal_conv1d_ref,
    causal_conv1d_update,
    causal_conv1d_update_ref,
)
from longseq.kernels.testing import assert_close

CPU_SHAPES = [(1, 1, 1), (2, 5, 7), (2, 8, 33), (1, 3, 130)]
GPU_SHAPES = CPU_SHAPES + [(2, 1536, 2049), (1, 768, 8192), (3, 100, 1000)]
SHAPES = CPU_SHAPES if interpreting() else GPU_SHAPES
DTYPES = [torch.float32, torch.bfloat16] if interpreting() else [torch.float32, torch.float16, torch.bfloat16]
NAMES = ("x", "weight", "bias")


def _random_seq_idx(batch: int, L: int, device, n_max: int = 4) -> torch.Tensor:
    """Sorted int32 sequence ids (B, L): packed rows with a few sequences each."""
    return torch.sort(torch.randint(0, n_max, (batch, L), device=device), dim=1).values.to(torch.int32)


def _conv_all(x, w, b, dy, activation, seq_idx):
    """Outputs and gradients of kernel, fp32 reference and low-precision reference."""
    runs = {
        "kernel": (lambda a, c, d: causal_conv1d_fn(a, c, d, seq_idx=seq_idx, activation=activation), lambda t: t),
        "ref": (lambda a, c, d: causal_conv1d_ref(a, c, d, activation, seq_idx), lambda t: t.float()),
        "lowp": (lambda a, c, d: causal_conv1d_ref(a, c, d, activation, seq_idx, upcast=False), lambda t: t),
    }
    out = {}
    for key, (fn, cast) in runs.items():
        leaves = [None if t is None else cast(t.detach()).clone().requires_grad_() for t in (x, w, b)]
        y = fn(*leaves)
        grads = torch.autograd.grad(y, [t for t in leaves if t is not None], cast(dy))
        out[key] = (y.detach(), *grads)
    return out


def _check(r, dtype, names=("y", *NAMES)):
    lowp = r["lowp"] if dtype != torch.float32 else (None,) * len(r["ref"])
    for name, a, ref, lp in zip(names, r["kernel"], r["ref"], lowp):
        assert a.dtype == dtype, f"{name} dtype {a.dtype}"
        assert_close(a, ref, lp, name=name)


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_conv_matches_reference(shape, dtype, width, activation, device):
    B, D, L = shape
    x = torch.randn(shape, device=device).to(dtype)
    w = (torch.randn(D, width, device=device) / width**0.5).to(dtype)
    b = torch.randn(D, device=device).to(dtype)
    dy = torch.randn(shape, device=device).to(dtype)
    _check(_conv_all(x, w, b, dy, activation, None), dtype)


@pytest.mark.parametrize("width", [1, 5, 8])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_other_widths_and_no_bias(width, with_bias, device):
    x = torch.randn(2, 6, 19, device=device)
    w = torch.randn(6, width, device=device)
    b = torch.randn(6, device=device) if with_bias else None
    dy = torch.randn_like(x)
    r = _conv_all(x, w, b, dy, "silu", None)
    _check(r, torch.float32, ("y", "x", "weight", "bias")[: len(r["ref"])])


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_conv_seq_idx_resets(dtype, activation, device):
    """Packed rows (seq_idx) against the reference, which masks taps across sequences."""
    x = torch.randn(2, 7, 45, device=device).to(dtype)
    w, b = torch.randn(7, 4, device=device).to(dtype), torch.randn(7, device=device).to(dtype)
    dy = torch.randn_like(x)
    _check(_conv_all(x, w, b, dy, activation, _random_seq_idx(2, 45, device)), dtype)


def test_conv_packed_equals_per_sequence(device):
    """(1, D, T) + seq_idx gives the same outputs and gradients as each sequence alone."""
    lengths = [5, 1, 12, 3]
    D, W = 6, 4
    w = torch.randn(D, W, device=device, requires_grad=True)
    b = torch.randn(D, device=device, requires_grad=True)
    seqs = [torch.randn(1, D, n, device=device, requires_grad=True) for n in lengths]
    seq_idx = torch.cat([torch.full((n,), i, dtype=torch.int32, device=device) for i, n in enumerate(lengths)])[None]
    packed = torch.cat(seqs, dim=-1)
    y_packed = causal_conv1d_fn(packed, w, b, seq_idx=seq_idx, activation="silu")
    dy = torch.randn_like(y_packed)
    g_packed = torch.autograd.grad(y_packed, (*seqs, w, b), dy)
    y_alone = torch.cat([causal_conv1d_fn(s, w, b, activation="silu") for s in seqs], dim=-1)
    g_alone = torch.autograd.grad(y_alone, (*seqs, w, b), dy)
    assert_close(y_packed, y_alone, name="y")
    for i, (gp, ga) in enumerate(zip(g_packed, g_alone)):
        assert_close(gp, ga, name=f"grad {i}")


def test_conv_channel_last_layout(device):
    """A channel-last view (a slice of a (B, L, D') projection, as Mamba-2 passes it) works and the
    output is channel-last too."""
    proj = torch.randn(2, 29, 16, device=device, requires_grad=True)
    x = proj[:, :, 3:13].transpose(1, 2)  # (B, D, L), stride(1) == 1, not dense
    w = torch.randn(10, 4, device=device, requires_grad=True)
    y = causal_conv1d_fn(x, w, activation="silu")
    assert y.stride() == (290, 1, 10)
    dy = torch.randn(2, 29, 10, device=device).transpose(1, 2)  # non-contiguous gradient too
    gx, gw = torch.autograd.grad(y, (proj, w), dy)
    gx = gx[:, :, 3:13].transpose(1, 2)
    ex, ew = x.detach().requires_grad_(), w.detach().requires_grad_()
    ref = causal_conv1d_ref(ex, ew, activation="silu")
    rgx, rgw = torch.autograd.grad(ref, (ex, ew), dy)
    assert_close(y, ref, name="y")
    assert_close(gx, rgx, name="dx")
    assert_close(gw, rgw, name="dweight")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("width", [2, 4])
def test_update_step_by_step_equals_full(width, dtype, device):
    """Decoding token by token from a (B, D, W-1) state reproduces the full convolution."""
    B, D, L = 2, 9, 11
    x = torch.randn(B, D, L, device=device).to(dtype)
    w, b = torch.randn(D, width, device=device).to(dtype), torch.randn(D, device=device).to(dtype)
    full = causal_conv1d_ref(x, w, b, "silu")
    lowp = causal_conv1d_ref(x, w, b, "silu", upcast=False)
    state = torch.zeros(B, D, width - 1, device=device, dtype=dtype)
    steps = torch.stack([causal_conv1d_update(x[:, :, t], state, w, b, "silu") for t in range(L)], dim=-1)
    assert steps.dtype == dtype
    assert_close(steps, full, lowp if dtype != torch.float32 else None, name="steps")
    assert torch.equal(state, x[:, :, L - (width - 1) :])


def test_update_multi_token_and_long_state(device):
    """Several tokens per call, a state longer than W-1, vs the functional reference."""
    B, D, W, S = 3, 5, 3, 6
    w, b = torch.randn(D, W, device=device), torch.randn(D, device=device)
    state = torch.randn(B, D, S, device=device)
    x = torch.randn(B, D, 4, device=device)
    ref_out, ref_state = causal_conv1d_update_ref(x, state, w, b, None)
    out = causal_conv1d_update(x, state, w, b, None)
    assert_close(out, ref_out, name="out")
    assert_close(state, ref_state, name="state")


def test_conv_writes_every_output(device, monkeypatch):
    """Poison the output buffers: any element the kernels forget stays NaN."""
    from longseq.kernels.causal_conv1d import triton as tri
    from longseq.kernels.testing import poison

    real_empty_like, real_empty = torch.empty_like, torch.empty
    monkeypatch.setattr(tri.torch, "empty_like", lambda t, **kw: poison(real_empty_like(t, **kw)))
    monkeypatch.setattr(tri.torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    x = torch.randn(2, 7, 37, device=device, requires_grad=True)
    w = torch.randn(7, 4, device=device, requires_grad=True)
    b = torch.randn(7, device=device, requires_grad=True)
    y = causal_conv1d_fn(x, w, b, seq_idx=_random_seq_idx(2, 37, device), activation="silu")
    y.backward(torch.randn_like(y))
    out = causal_conv1d_update(torch.randn(2, 7, 3, device=device), torch.randn(2, 7, 3, device=device), w, b, "silu")
    for name, t in (("y", y), ("dx", x.grad), ("dweight", w.grad), ("dbias", b.grad), ("update", out)):
        assert not t.isnan().any(), name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": torch.randn(2, 4, 8, dtype=torch.float64)}, TypeError, "x must have dtype"),
        ({"x": torch.randn(4, 8)}, ValueError, r"x must be \(B, D, L\)"),
        ({"weight": torch.randn(3, 4)}, ValueError, r"weight must have shape \(D=4, W\)"),
        ({"weight": torch.randn(4, 9)}, ValueError, r"conv width W must be in \[1, 8\], got 9"),
        ({"bias": torch.randn(5)}, ValueError, r"bias must have shape \(4,\)"),
        ({"activation": "relu"}, ValueError, "activation must be one of"),
        ({"seq_idx": torch.zeros(2, 8, dtype=torch.int64)}, TypeError, "seq_idx must have dtype in \\(int32\\)"),
        ({"seq_idx": torch.zeros(2, 7, dtype=torch.int32)}, ValueError, r"seq_idx must have shape \(B, L\)"),
    ],
)
def test_conv_bad_input(kwargs, error, match):
    args = {"x": torch.randn(2, 4, 8), "weight": torch.randn(4, 3)} | kwargs
    with pytest.raises(error, match=match):
        causal_conv1d_fn(**args)


@pytest.mark.parametrize(
    ("state_shape", "x_shape", "match"),
    [
        ((2, 4, 1), (2, 4), r"S >= W-1 = 2"),
        ((2, 5, 2), (2, 4), r"conv_state must have shape"),
        ((2, 4, 2), (2, 4, 300), "at most 256"),
    ],
)
def test_update_bad_input(state_shape, x_shape, match):
    with pytest.raises(ValueError, match=match):
        causal_conv1d_update(torch.randn(x_shape), torch.zeros(state_shape), torch.randn(4, 3))


def test_conv_runs_the_triton_path(device, monkeypatch):
    """Proof that the tests exercise Triton (the interpreter on CPU), not the PyTorch fallback."""
    import longseq.kernels.causal_conv1d as mod

    def _fail(*args, **kwargs):
        raise AssertionError("the reference fallback ran instead of the Triton kernel")

    monkeypatch.setattr(mod, "causal_conv1d_ref", _fail)
    monkeypatch.setattr(mod, "causal_conv1d_update_ref", _fail)
    assert not causal_conv1d_fn(torch.randn(1, 3, 5, device=device), torch.randn(3, 2, device=device)).isnan().any()
    causal_conv1d_update(
        torch.randn(1, 3, device=device), torch.zeros(1, 3, 1, device=device), torch.randn(3, 2, device=device)
    )


def test_conv_cpu_without_interpreter_uses_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(2, 3, 9, requires_grad=True)
    w = torch.randn(3, 4)
    y = causal_conv1d_fn(x, w, activation="silu")
    y.sum().backward()
    assert_close(y, causal_conv1d_ref(x.detach(), w, activation="silu"), name="y")
    state = torch.zeros(2, 3, 3)
    out = causal_conv1d_update(x.detach()[:, :, 0], state, w, activation="silu")
    assert_close(out, y.detach()[:, :, 0], name="update")


def test_conv_opcheck(device):
    x = torch.randn(2, 4, 10, device=device, requires_grad=True)
    w = torch.randn(4, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    seq_idx = _random_seq_idx(2, 10, device)
    torch.library.opcheck(torch.ops.longseq.causal_conv1d_fwd.default, (x, w, b, seq_idx, True))
    torch.library.opcheck(torch.ops.longseq.causal_conv1d_fwd.default, (x, w, None, None, False))
    state = torch.randn(2, 4, 2, device=device)
    torch.library.opcheck(
        torch.ops.longseq.causal_conv1d_update.default, (x.detach()[:, :, :1], state, w.detach(), None, True)
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_conv_gpu_long_packed(dtype):
    """A benchmark-sized packed row on the GPU (channel-last, SiLU, seq_idx) vs the reference."""
    D, T = 1536, 8192
    x = torch.randn(1, T, D, device="cuda", dtype=dtype).transpose(1, 2)
    w = torch.randn(D, 4, device="cuda", dtype=dtype) / 2
    b = torch.randn(D, device="cuda", dtype=dtype)
    seq_idx = _random_seq_idx(1, T, "cuda", n_max=9)
    r = _conv_all(x, w, b, torch.randn_like(x), "silu", seq_idx)
    _check(r, dtype)
