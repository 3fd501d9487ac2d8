"""fftconv kernels vs the direct O(L^2) reference: outputs and every gradient, over lengths, dtypes,
features, both transform schemes (fused and three-pass) and packed sequences."""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import torch

import longseq.kernels.fftconv as fftconv_mod
from longseq.kernels._common import interpreting
from longseq.kernels.fftconv import fftconv, fftconv_packed_ref, fftconv_ref
from longseq.kernels.fftconv import triton as tri
from longseq.kernels.testing import assert_close, poison

CPU_LENGTHS = [1, 7, 33, 100, 257]
GPU_LENGTHS = CPU_LENGTHS + [1000, 1025, 3000]
LENGTHS = CPU_LENGTHS if interpreting() else GPU_LENGTHS
DTYPES = [torch.float32, torch.bfloat16] if interpreting() else [torch.float32, torch.float16, torch.bfloat16]
# Three-pass lengths: under the interpreter the plan is shrunk (see `three_pass`) so small L exercise it.
THREE_PASS_CASES = (
    [(33, torch.float32), (100, torch.bfloat16), (257, torch.float32)]
    if interpreting()
    else [(2100, torch.float32), (40000, torch.bfloat16), (70001, torch.float32), (70001, torch.bfloat16)]
)
# Longer references convolve with torch.fft in fp64 (the direct sum is O(L^2)); lower under the
# interpreter so that path (and its fp32 torch.fft error bound) is exercised on CPU too.
DIRECT_MAX_L = 200 if interpreting() else 4096
GRADS = ("x", "h", "D", "gate", "pre_gate")


@pytest.fixture(autouse=True)
def _fp32_runs_the_kernels(monkeypatch):
    """These tests check the kernels in every dtype, fp32 included (which on CUDA runs torch.fft by default)."""
    monkeypatch.setattr(fftconv_mod, "FP32_USES_TORCH_FFT", False)


@pytest.fixture
def three_pass(monkeypatch):
    """Force the three-pass scheme at small L (and two-level column DFTs at the larger lengths).

    The kernels are written for any power-of-two sizes; the interpreter has no ``tl.dot`` minimum, so
    it runs them with 2-point DFTs to keep the CPU time down. On the GPU the real minimum (16) stays.
    """
    if interpreting():
        for name, value in (("MIN_DFT", 2), ("ROW_MAX", 64), ("COL_SINGLE_MAX", 2), ("COL_TILE", 512), ("MIN_COLS", 0)):
            monkeypatch.setattr(tri, name, value)
    else:
        monkeypatch.setattr(tri, "ROW_MAX", 256)
        monkeypatch.setattr(tri, "COL_SINGLE_MAX", 16)
        monkeypatch.setattr(tri, "MIN_COLS", 0)


def _inputs(B, D, L, Lh, dtype, device, features=GRADS, h_dtype=None):
    """Seeded inputs; filter scaled so outputs stay O(1) at any length."""
    t = {
        "x": torch.randn(B, D, L, device=device),
        "h": torch.randn(D, Lh, device=device) / Lh**0.5,
        "D": torch.randn(D, device=device),
        "gate": torch.randn(B, D, L, device=device),
        "pre_gate": torch.randn(B, D, L, device=device),
    }
    keep = {"x", "h", *features}
    t = {k: v.to((h_dtype or dtype) if k == "h" else dtype) for k, v in t.items() if k in keep}
    return t, torch.randn(B, D, L, device=device).to(dtype)


def _call(fn, t, dy, cast, **kw):
    """Run ``fn`` on cast copies of ``t``; returns the output and the gradient of every input."""
    leaves = {k: cast(v).requires_grad_() for k, v in t.items()}
    y = fn(leaves["x"], leaves["h"], leaves.get("D"), gate=leaves.get("gate"), pre_gate=leaves.get("pre_gate"), **kw)
    grads = torch.autograd.grad(y, list(leaves.values()), cast(dy))
    return y.detach(), dict(zip(leaves, grads))


def _ref(x, h, D=None, *, gate=None, pre_gate=None, upcast=True, method="direct"):
    return fftconv_ref(x, h, D, gate, pre_gate, upcast=upcast, method=method)


def _check(t, dy, dtype, **kw):
    """Kernel vs the fp32 reference, bounded by the same math in lower precision: the reference run in
    the 16-bit dtype, or for fp32 beyond ``DIRECT_MAX_L`` torch.fft in fp32 (against an fp64 torch.fft)."""
    y, g = _call(fftconv, t, dy, lambda v: v.detach().clone(), **kw)
    long = t["x"].shape[-1] > DIRECT_MAX_L
    method = "fft64" if long else "direct"
    ry, rg = _call(partial(_ref, method=method), t, dy, lambda v: v.detach().float())
    ly, lg = None, {}
    if dtype != torch.float32:
        ly, lg = _call(partial(_ref, upcast=False, method=method), t, dy, lambda v: v.detach().clone())
    elif long:
        ly, lg = _call(partial(_ref, method="fft"), t, dy, lambda v: v.detach().clone())
    assert y.dtype == t["x"].dtype
    assert_close(y, ry, ly, name="y")
    for k in g:
        assert g[k].dtype == t[k].dtype, k
        assert_close(g[k], rg[k], lg.get(k), name=f"d{k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("L", LENGTHS)
def test_fftconv_matches_reference(L, dtype, device):
    """Every feature on, odd channel count (a lone last channel), filter as long as the input."""
    t, dy = _inputs(2, 3, L, L, dtype, device)
    _check(t, dy, dtype)


@pytest.mark.parametrize(
    "features", [("x", "h"), ("x", "h", "D"), ("x", "h", "pre_gate"), ("x", "h", "gate")], ids="+".join
)
def test_fftconv_feature_subsets(features, device):
    t, dy = _inputs(3, 4, 50, 50, torch.float32, device, features)
    _check(t, dy, torch.float32)


@pytest.mark.parametrize("Lh", [1, 20, 90])
def test_fftconv_filter_shorter_or_longer_than_input(Lh, device):
    """A short filter is zero past its end; taps past L reach no output and get zero gradient."""
    t, dy = _inputs(2, 2, 40, Lh, torch.float32, device)
    _check(t, dy, torch.float32)


def _check_bf16_fp32_filter(L, device):
    """bf16 activations with an fp32 filter and skip (the Hyena mixer's mix): output and every gradient within
    the rule against the 16-bit reference, which rounds the filter to bf16 too; dtypes as given."""
    t, dy = _inputs(2, 3, L, L, torch.bfloat16, device, h_dtype=torch.float32)
    t["D"] = t["D"].float()
    y, g = _call(fftconv, t, dy, lambda v: v.detach().clone())
    method = "fft64" if L > DIRECT_MAX_L else "direct"
    ry, rg = _call(partial(_ref, method=method), t, dy, lambda v: v.detach().float())
    ly, lg = _call(partial(_ref, upcast=False, method=method), t, dy, lambda v: v.detach().clone())
    assert y.dtype == torch.bfloat16 and g["h"].dtype == torch.float32 and g["D"].dtype == torch.float32
    assert_close(y, ry, ly, name="y")
    for k in g:
        assert_close(g[k], rg[k], lg[k].to(g[k].dtype), name=f"d{k}")


def test_fftconv_bf16_input_fp32_filter(device):
    """Mixed precision as in the Hyena mixer: 16-bit activations, fp32 filter and skip."""
    _check_bf16_fp32_filter(64, device)


@pytest.mark.parametrize(("L", "dtype"), THREE_PASS_CASES, ids=str)
def test_fftconv_three_pass_matches_reference(L, dtype, device, three_pass):
    plan = tri.make_plan(L)
    assert not plan.fused
    B, D = (2, 3) if interpreting() else (2, 5)  # B = 2: the row pass sums dh over the batch
    t, dy = _inputs(B, D, L, L, dtype, device)
    _check(t, dy, dtype)


def test_fftconv_three_pass_uses_two_level_columns(three_pass):
    """The largest three-pass length above runs the two-level column DFT (both factors at least MIN_DFT)."""
    plan = tri.make_plan(THREE_PASS_CASES[-1][0])
    assert plan.P2 >= tri.MIN_DFT and plan.P1 >= tri.MIN_DFT and plan.P1 * plan.P2 == plan.N1


@pytest.mark.parametrize("L", [1, 7, 1024, 1025, 65536, 2**20, 2**22])
def test_fftconv_plan(L):
    """The transform covers 2L - 1 samples with the sizes the kernels assume."""
    p = tri.make_plan(L)
    assert p.N >= 2 * L - 1 and p.N == p.N1 * p.N2 == p.N1 * p.R1 * p.R2
    assert min(p.R1, p.R2) >= tri.MIN_DFT
    if not p.fused:
        assert p.N1 >= tri.MIN_DFT and p.P1 * p.P2 == p.N1 and p.N2 % p.C == 0
        assert p.P2 == 1 or min(p.P1, p.P2) >= tri.MIN_DFT


@pytest.mark.parametrize(
    ("L", "prec", "rows", "cols", "warps"),
    [
        (2**16, "tf32", 512, 16, 4),
        (2**17, "tf32", 512, 8, 4),
        (2**18, "tf32", 2048, 32, 8),
        (2**20, "tf32", 2048, 8, 8),
        (2**20, "tf32x3", 512, 1, 4),
    ],
)
def test_fftconv_plan_long_sequences(L, prec, rows, cols, warps):
    """Where rows of ROW_MAX would leave fewer than MIN_COLS adjacent columns per column program, the plan
    takes the long-sequence rows, column tiles and warps; not with tf32x3 (fp32, fp16), whose long rows spill."""
    p = tri.make_plan(L, prec)
    assert (p.N2, p.C, p.col_warps) == (rows, cols, warps)


@pytest.mark.parametrize("L", [37, 200])
def test_fftconv_long_sequence_plan_matches_reference(L, device, monkeypatch):
    """The long-sequence knobs give the same convolution (shrunk so a short L takes them, interpreter sizes
    on CPU): outputs and every gradient of bf16 inputs (the precision that takes them) against the reference."""
    small = {"MIN_DFT": 2, "ROW_MAX": 16, "COL_SINGLE_MAX": 2, "COL_TILE": 32, "MIN_COLS": 8}
    if not interpreting():
        small = {"ROW_MAX": 256, "COL_SINGLE_MAX": 16, "COL_TILE": 2048, "MIN_COLS": 16}
    for name, value in {**small, "LONG_ROW_MAX": 4 * small["ROW_MAX"], "LONG_COL_TILE": 2 * small["COL_TILE"]}.items():
        monkeypatch.setattr(tri, name, value)
    if not interpreting():
        L = 70001 + L
    assert tri.make_plan(L, tri.dot_precision(torch.bfloat16)).N2 == tri.LONG_ROW_MAX
    t, dy = _inputs(2, 3, L, L, torch.bfloat16, device)
    _check(t, dy, torch.bfloat16)


def test_fftconv_plan_rejects_too_long():
    with pytest.raises(ValueError, match=r"sequence length 8388609 exceeds the fftconv kernels' maximum 8388608"):
        tri.make_plan(2**23 + 1)


def _packed_inputs(lens, D, dtype, device):
    cu = torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32, device=device)
    T = int(cu[-1])
    t = {
        "x": torch.randn(D, T, device=device).to(dtype),
        "h": torch.randn(D, max(lens) + 3, device=device) / 4,
        "D": torch.randn(D, device=device),
        "gate": torch.randn(D, T, device=device).to(dtype),
        "pre_gate": torch.randn(D, T, device=device).to(dtype),
    }
    return t, torch.randn(D, T, device=device).to(dtype), cu


@pytest.mark.parametrize("lens", [[5, 0, 17, 1, 40], [64]], ids=str)
def test_fftconv_packed_matches_per_sequence(lens, device):
    """Packed output and every gradient equal the per-sequence reference (empty sequences included)."""
    t, dy, cu = _packed_inputs(lens, 3, torch.float32, device)
    y, g = _call(fftconv, t, dy, lambda v: v.detach().clone(), cu_seqlens=cu)

    def ref(x, h, D=None, *, gate=None, pre_gate=None):
        return fftconv_packed_ref(x, h, D, gate, pre_gate, cu)

    ry, rg = _call(ref, t, dy, lambda v: v.detach().float())
    assert_close(y, ry, name="y")
    for k in g:
        assert_close(g[k], rg[k], name=f"d{k}")


def test_fftconv_packed_never_crosses_boundaries(device):
    """The output of one sequence has zero gradient with respect to every other sequence's input."""
    lens = [9, 14, 6]
    t, _, cu = _packed_inputs(lens, 2, torch.float32, device)
    x = t["x"].clone().requires_grad_()
    y = fftconv(x, t["h"], t["D"], gate=t["gate"], pre_gate=t["pre_gate"], cu_seqlens=cu, max_seqlen=20)
    bounds = cu.tolist()
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        (gx,) = torch.autograd.grad(y[:, s:e].sum(), x, retain_graph=True)
        outside = torch.cat([gx[:, :s], gx[:, e:]], dim=1)
        assert outside.abs().max() == 0, f"sequence {i} reads another sequence"
        assert gx[:, s:e].abs().sum() > 0


@pytest.mark.parametrize("scheme", ["fused", "three_pass"])
def test_fftconv_writes_every_output(scheme, device, monkeypatch, request):
    """Poison every buffer the launchers allocate: anything a kernel forgets stays NaN."""
    if scheme == "three_pass":
        request.getfixturevalue("three_pass")
    real_empty, real_empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(tri.torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    monkeypatch.setattr(tri.torch, "empty_like", lambda t, **kw: poison(real_empty_like(t, **kw)))
    t, dy = _inputs(3, 5, 100, 100, torch.float32, device)
    y, g = _call(fftconv, t, dy, lambda v: v.detach().clone())
    assert not y.isnan().any()
    for k, v in g.items():
        assert not v.isnan().any(), f"d{k} has unwritten elements"


def _bad(**kw):
    base = {"x": torch.randn(2, 3, 8), "h": torch.randn(3, 8)}
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (_bad(x=torch.randn(3, 8)), ValueError, r"x must have shape \(B, D, L\), got \(3, 8\)"),
        (_bad(x=torch.randn(2, 3, 8, dtype=torch.float64)), TypeError, "x must have dtype"),
        (_bad(h=torch.randn(4, 8)), ValueError, r"h must have shape \(3, Lh\).*got \(4, 8\)"),
        (_bad(h=torch.randn(3, 0)), ValueError, "Lh >= 1"),
        (_bad(h=torch.ones(3, 8, dtype=torch.int32)), TypeError, "h must have dtype"),
        (_bad(D=torch.randn(2)), ValueError, r"D must have shape \(3,\)"),
        (_bad(gate=torch.randn(2, 3, 7)), ValueError, r"gate must have x's shape \(2, 3, 8\), got \(2, 3, 7\)"),
        (_bad(pre_gate=torch.randn(2, 3, 8).half()), TypeError, "pre_gate must have x's dtype"),
        (_bad(cu_seqlens=torch.tensor([0, 8], dtype=torch.int32)), ValueError, r"with cu_seqlens, x must have shape"),
        (
            _bad(x=torch.randn(3, 8), cu_seqlens=torch.tensor([0, 7], dtype=torch.int32)),
            ValueError,
            "must end at the total tokens T = 8 of x, got 7",
        ),
        (_bad(x=torch.randn(3, 8), cu_seqlens=torch.tensor([0, 8])), ValueError, "1-D int32"),
        (
            _bad(x=torch.randn(3, 8), cu_seqlens=torch.tensor([0, 5, 3, 8], dtype=torch.int32)),
            ValueError,
            "non-decreasing",
        ),
        (
            _bad(x=torch.randn(3, 8), cu_seqlens=torch.tensor([0, 5, 8], dtype=torch.int32), max_seqlen=4),
            ValueError,
            "max_seqlen 4 is shorter than the longest packed sequence",
        ),
    ],
)
def test_fftconv_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        fftconv(**kwargs)


def test_fftconv_runs_the_triton_path(device, monkeypatch):
    """Proof that these tests exercise Triton (the interpreter on CPU), not the torch.fft fallback."""
    import longseq.kernels.fftconv as mod

    def _fail(*args, **kwargs):
        raise AssertionError("the torch.fft fallback ran instead of the Triton kernels")

    monkeypatch.setattr(mod, "fftconv_torch", _fail)
    y = fftconv(torch.randn(1, 2, 9, device=device), torch.randn(2, 9, device=device))
    assert y.shape == (1, 2, 9) and not y.isnan().any()


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "kernels"), [(torch.float32, False), (torch.bfloat16, True), (torch.float16, True)])
def test_fftconv_fp32_on_cuda_runs_torch_fft(dtype, kernels, monkeypatch):
    """With ``FP32_USES_TORCH_FFT`` (the default), fp32 activations on CUDA take the torch.fft path, and
    16-bit ones the kernels; the result matches the reference either way."""
    monkeypatch.setattr(fftconv_mod, "FP32_USES_TORCH_FFT", True)
    calls = []
    real = fftconv_mod.fftconv_torch
    monkeypatch.setattr(fftconv_mod, "fftconv_torch", lambda *a, **k: calls.append(1) or real(*a, **k))
    t, dy = _inputs(2, 3, 300, 300, dtype, "cuda")
    _check(t, dy, dtype)
    assert bool(calls) != kernels


def test_fftconv_cpu_without_interpreter_uses_torch_fft(monkeypatch):
    """Plain CPU tensors take the torch.fft path, with the same values and gradients."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    t, dy = _inputs(2, 3, 30, 30, torch.float32, "cpu")
    _check(t, dy, torch.float32)


def test_fftconv_empty_inputs(device):
    x = torch.randn(2, 3, 0, device=device, requires_grad=True)
    h = torch.randn(3, 5, device=device, requires_grad=True)
    y = fftconv(x, h)
    y.sum().backward()
    assert y.shape == (2, 3, 0) and h.grad.shape == (3, 5) and h.grad.abs().max() == 0


def test_fftconv_opcheck(device):
    """torch.library's consistency checks of the custom op (schema, fake, autograd registration)."""
    x = torch.randn(2, 3, 8, device=device, requires_grad=True)
    h = torch.randn(3, 8, device=device, requires_grad=True)
    d = torch.randn(3, device=device, requires_grad=True)
    g = torch.randn(2, 3, 8, device=device, requires_grad=True)
    op = torch.ops.longseq.fftconv_fwd.default
    torch.library.opcheck(op, (x, h, d, g, g, True))
    torch.library.opcheck(op, (x, h, None, None, None, False))


@pytest.mark.slow
def test_fftconv_torch_compile_fullgraph(device):
    """The custom op compiles without graph breaks and gives the same values and gradients."""
    torch._dynamo.reset()
    t, _ = _inputs(2, 3, 24, 24, torch.float32, device)
    leaves = [t[k].clone().requires_grad_() for k in GRADS]

    def f(x, h, D, gate, pre_gate):
        return (fftconv(x, h, D, gate=gate, pre_gate=pre_gate) * 2).sum()

    out = torch.compile(f, fullgraph=True)(*leaves)
    grads = torch.autograd.grad(out, leaves)
    ref_leaves = [v.detach().clone().requires_grad_() for v in leaves]
    ref = (_ref(ref_leaves[0], ref_leaves[1], ref_leaves[2], gate=ref_leaves[3], pre_gate=ref_leaves[4]) * 2).sum()
    ref_grads = torch.autograd.grad(ref, ref_leaves)
    assert_close(out, ref, name="out")
    for k, a, r in zip(GRADS, grads, ref_grads):
        assert_close(a, r, name=f"d{k}")


# --------------------------------------------------------------------------------------------
# GPU: long sequences against torch.fft in fp64 (run by `make gpu-test`)
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("L", [16384 + 7, 2**18, 2**20])
def test_fftconv_gpu_long_fp32_against_torch_fft(L):
    """fp32 to one million tokens, output and every gradient, against torch.fft in fp64."""
    t, dy = _inputs(1, 4, L, L, torch.float32, "cuda")
    _check(t, dy, torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("L", [2**16, 2**20])
def test_fftconv_gpu_long_bf16(L):
    t, dy = _inputs(1, 4, L, L, torch.bfloat16, "cuda")
    _check(t, dy, torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.parametrize("L", [4099, 2**16, 2**20])
def test_fftconv_gpu_long_bf16_fp32_filter(L):
    """The Hyena mixer's mix (bf16 activations, fp32 filter and skip) runs tf32 products, to 1M tokens."""
    _check_bf16_fp32_filter(L, "cuda")


def test_fftconv_precision_follows_the_activations(device, monkeypatch):
    """bf16 activations with an fp32 filter run the bf16 (tf32) products, forward and backward;
    fp16 activations the fp32 ones (tf32x3)."""
    seen = []
    real = tri.dot_precision
    monkeypatch.setattr(tri, "dot_precision", lambda *dts: seen.append(real(*dts)) or seen[-1])
    for dtype, want in ((torch.bfloat16, tri.LOWP_DOT_PRECISION), (torch.float16, tri.FP32_DOT_PRECISION)):
        seen.clear()
        t, dy = _inputs(1, 2, 40, 40, dtype, device, h_dtype=torch.float32)
        _call(fftconv, t, dy, lambda v: v.detach().clone())
        assert seen == [want, want], (dtype, seen)
