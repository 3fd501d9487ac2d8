"""RMSNorm kernel vs its fp32 reference: outputs and every gradient, over a grid of shapes and dtypes."""

from __future__ import annotations

import pytest
import torch

from longseq.kernels._common import interpreting
from longseq.kernels.rmsnorm import rms_norm, rms_norm_ref
from longseq.kernels.testing import assert_close, compile_backend

# Interpreter runs stay small; the GPU grid adds wide rows and many of them.
CPU_SHAPES = [(1, 1), (3, 7), (17, 64), (33, 113), (2, 5, 96), (64, 1000)]
GPU_SHAPES = CPU_SHAPES + [(4096, 1024), (1000, 4097), (257, 8192), (3, 65536), (8, 12, 2049)]
SHAPES = CPU_SHAPES if interpreting() else GPU_SHAPES
DTYPES = [torch.float32, torch.bfloat16] if interpreting() else [torch.float32, torch.float16, torch.bfloat16]


def _run_both(shape, dtype, with_weight, device, eps=1e-6):
    """Run kernel, fp32 reference and low-precision reference; return outputs and grads of each."""
    x = torch.randn(shape, device=device).to(dtype)
    w = (torch.rand(shape[-1], device=device) + 0.5).to(dtype) if with_weight else None
    dy = torch.randn(shape, device=device).to(dtype)
    results = {}
    for key, fn, cast in (
        ("kernel", lambda a, b: rms_norm(a, b, eps), lambda t: t.detach().clone()),
        ("ref", lambda a, b: rms_norm_ref(a, b, eps), lambda t: t.detach().float()),
        ("lowp", lambda a, b: rms_norm_ref(a, b, eps, upcast=False), lambda t: t.detach().clone()),
    ):
        xi = cast(x).requires_grad_()
        wi = cast(w).requires_grad_() if w is not None else None
        y = fn(xi, wi)
        y.backward(cast(dy))
        results[key] = (y.detach(), xi.grad, None if wi is None else wi.grad)
    return results


@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rmsnorm_matches_reference(shape, dtype, with_weight, device):
    r = _run_both(shape, dtype, with_weight, device)
    lowp = r["lowp"] if dtype != torch.float32 else (None, None, None)
    (y, dx, dw), (ry, rdx, rdw) = r["kernel"], r["ref"]
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, ry, lowp[0], name="y")
    assert_close(dx, rdx, lowp[1], name="dx")
    if with_weight:
        assert dw.dtype == dtype
        assert_close(dw, rdw, lowp[2], name="dweight")


def test_rmsnorm_fp32_weight_with_bf16_input(device):
    """Mixed precision: bf16 activations with an fp32 weight (as under autocast)."""
    x = torch.randn(9, 130, device=device, dtype=torch.bfloat16)
    w = torch.rand(130, device=device, requires_grad=True)
    y = rms_norm(x, w)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32
    ref = rms_norm_ref(x, w.detach())
    assert_close(y, ref, rms_norm_ref(x, w.detach().bfloat16(), upcast=False), name="y")


def test_rmsnorm_eps_changes_result(device):
    x = torch.full((2, 8), 1e-3, device=device)
    assert not torch.allclose(rms_norm(x, eps=0.0), rms_norm(x, eps=1.0))
    assert_close(rms_norm(x, eps=1.0), rms_norm_ref(x, eps=1.0), name="eps=1")


def test_rmsnorm_noncontiguous_input(device):
    base = torch.randn(16, 40, device=device)
    x = base[:, ::2]  # last-dim stride 2
    assert_close(rms_norm(x), rms_norm_ref(x), name="strided")


def test_rmsnorm_empty_batch(device):
    x = torch.randn(0, 32, device=device, requires_grad=True)
    y = rms_norm(x)
    y.sum().backward()
    assert y.shape == (0, 32) and x.grad.shape == (0, 32)


def test_rmsnorm_writes_every_output(device, monkeypatch):
    """Poison the output buffers: any element the kernel forgets stays NaN."""
    from longseq.kernels.rmsnorm import triton as tri
    from longseq.kernels.testing import poison

    real_empty_like = torch.empty_like
    monkeypatch.setattr(tri.torch, "empty_like", lambda t, **kw: poison(real_empty_like(t, **kw)))
    x = torch.randn(37, 77, device=device, requires_grad=True)
    w = torch.randn(77, device=device, requires_grad=True)
    y = rms_norm(x, w)
    y.backward(torch.randn_like(y))
    assert not y.isnan().any() and not x.grad.isnan().any() and not w.grad.isnan().any()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": torch.randn(4, 8, dtype=torch.float64)}, TypeError, "x must have dtype"),
        ({"x": torch.ones(4, 8, dtype=torch.int32)}, TypeError, "got int32"),
        ({"x": torch.randn(4, 8), "weight": torch.randn(7)}, ValueError, r"weight must have shape \(8,\)"),
        ({"x": torch.randn(4, 0)}, ValueError, "non-empty last dimension"),
        ({"x": torch.tensor(1.0)}, ValueError, "at least one dimension"),
        ({"x": torch.randn(4, 8), "eps": -1.0}, ValueError, "eps must be >= 0"),
        ({"x": torch.randn(1, 65537)}, ValueError, "exceeds the kernel's maximum"),
    ],
)
def test_rmsnorm_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        rms_norm(**kwargs)


def test_rmsnorm_runs_the_triton_path(device, monkeypatch):
    """Proof that the tests exercise Triton (the interpreter on CPU), not the PyTorch fallback."""
    import longseq.kernels.rmsnorm as mod

    def _fail(*args, **kwargs):
        raise AssertionError("the reference fallback ran instead of the Triton kernel")

    monkeypatch.setattr(mod, "rms_norm_ref", _fail)
    y = rms_norm(torch.randn(3, 16, device=device))
    assert y.shape == (3, 16) and not y.isnan().any()


def test_rmsnorm_cpu_without_interpreter_uses_reference(monkeypatch):
    """Plain CPU tensors (no interpreter) take the reference path and still give right gradients."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(5, 12, requires_grad=True)
    y = rms_norm(x)
    y.sum().backward()
    assert_close(y, rms_norm_ref(x.detach()), name="y")
    assert x.grad is not None


@pytest.mark.slow
def test_rmsnorm_torch_compile_fullgraph(device):
    """The custom op compiles without graph breaks and gives the same values and gradients."""
    torch._dynamo.reset()
    x = torch.randn(6, 48, device=device, requires_grad=True)
    w = torch.randn(48, device=device, requires_grad=True)

    def f(a, b):
        return (rms_norm(a, b) * 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend=compile_backend())
    out = compiled(x, w)
    gx, gw = torch.autograd.grad(out, (x, w))
    ex, ew = x.detach().requires_grad_(), w.detach().requires_grad_()
    ref = (rms_norm_ref(ex, ew) * 2).sum()
    rgx, rgw = torch.autograd.grad(ref, (ex, ew))
    assert_close(out, ref, name="out")
    assert_close(gx, rgx, name="dx")
    assert_close(gw, rgw, name="dweight")


def test_rmsnorm_opcheck(device):
    """torch.library's own consistency checks of the custom op (schema, fake impl, autograd)."""
    x = torch.randn(5, 24, device=device, requires_grad=True)
    w = torch.randn(24, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.longseq.rms_norm_fwd.default, (x, w, 1e-6))
    torch.library.opcheck(torch.ops.longseq.rms_norm_fwd.default, (x, None, 1e-6))


@pytest.mark.gpu
def test_rmsnorm_gpu_large_rows_bf16():
    """A benchmark-sized shape on the GPU, checked against the reference."""
    x = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.rand(4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = rms_norm(x, w)
    y.backward(torch.ones_like(y))
    ref = rms_norm_ref(x.detach(), w.detach())
    assert_close(y, ref, rms_norm_ref(x.detach(), w.detach(), upcast=False), name="y")
