"""Mamba-2 SSD kernels vs the loop-over-time reference: outputs, final states and every gradient over
odd lengths, every chunk size, grouped B/C, packed resets, initial states and dtypes."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from longseq.kernels._common import interpreting
from longseq.kernels.ssd import mamba_chunk_scan_combined, ssd_chunked_ref, ssd_ref, ssd_step
from longseq.kernels.testing import EPSILON, assert_close, compile_backend

GRAD_NAMES = ("x", "dt", "A", "B", "C", "D", "z", "dt_bias", "initial_states")
DTYPES = [torch.float32, torch.bfloat16] if interpreting() else [torch.float32, torch.float16, torch.bfloat16]
ALL_CHUNKS = (16, 32, 64, 128, 256)
# (batch, L, H, P, G, N, chunk_size): lengths below, at and past chunk boundaries.
CPU_CASES = [
    (1, 1, 2, 4, 1, 4, 16),
    (1, 37, 4, 3, 2, 5, 16),
    (1, 33, 2, 16, 1, 16, 32),
    (2, 70, 2, 8, 2, 8, 64),
    (1, 130, 2, 4, 1, 4, 128),
]
_F32, _BF16, _F16 = torch.float32, torch.bfloat16, torch.float16
# On the GPU: every chunk size in every dtype on short rows, L=1000 in fp32/bf16, two 8K rows, odd shapes.
GPU_RUNS = (
    [((2, 1, 4, 64, 1, 128, Q), dt) for Q in ALL_CHUNKS for dt in (_F32, _BF16, _F16)]
    + [((2, Q + 1, 4, 64, 4, 128, Q), dt) for Q in ALL_CHUNKS for dt in (_F32, _BF16, _F16)]
    + [((2, 1000, 8, 64, 2, 128, Q), dt) for Q in ALL_CHUNKS for dt in (_F32, _BF16)]
    + [((1, 8192, 4, 64, 1, 128, 256), _F32), ((1, 8192, 4, 64, 1, 128, 256), _BF16)]
    + [
        ((1, 8192, 2, 64, 1, 128, 64), _BF16),
        ((1, 777, 6, 32, 3, 16, 64), _BF16),
        ((1, 777, 6, 32, 3, 16, 64), _F16),  # small tiles: the Hopper num_warps miscompile (kernels/ssd/triton.py)
        ((1, 777, 6, 64, 3, 32, 64), _BF16),
        ((1, 300, 2, 128, 1, 256, 128), _F32),
    ]
)
RUNS = [(c, dt) for c in CPU_CASES for dt in DTYPES] if interpreting() else GPU_RUNS


def make_inputs(batch, L, H, P, G, N, device, *, skip="h", z=True, bias=True, h0=False):
    """Random SSD inputs (fp32); ``skip`` is "h" for D (H,), "hp" for D (H, P), None for no D."""
    return {
        "x": torch.randn(batch, L, H, P, device=device),
        "dt": torch.randn(batch, L, H, device=device) - 1.0,
        "A": -(0.2 + torch.rand(H, device=device)),
        "B": torch.randn(batch, L, G, N, device=device) / N**0.25,
        "C": torch.randn(batch, L, G, N, device=device) / N**0.25,
        "D": {"h": torch.randn(H, device=device), "hp": torch.randn(H, P, device=device), None: None}[skip],
        "z": torch.randn(batch, L, H, P, device=device) if z else None,
        "dt_bias": 0.5 * torch.randn(H, device=device) if bias else None,
        "initial_states": torch.randn(batch, H, P, N, device=device) if h0 else None,
    }


def run_three(inputs, dtype, chunk_size, *, final_weight=0.0, **kwargs):
    """Kernel, fp32 reference and low-precision reference: ``(out, final_states, *grads)`` of each."""
    x = inputs["x"]
    gen = torch.Generator(device=x.device).manual_seed(1)
    w_out = torch.randn(x.shape, generator=gen, device=x.device)
    batch, _L, H, P = x.shape
    w_fin = torch.randn(batch, H, P, inputs["B"].shape[-1], generator=gen, device=x.device)
    runs = {
        "kernel": (lambda **a: mamba_chunk_scan_combined(chunk_size=chunk_size, **a), lambda t: t.to(dtype)),
        "ref": (ssd_ref, lambda t: t.to(dtype).float()),
        "lowp": (lambda **a: ssd_ref(upcast=False, **a), lambda t: t.to(dtype)),
    }
    results = {}
    for key, (fn, cast) in runs.items():
        leaves = {k: None if v is None else cast(v).detach().requires_grad_() for k, v in inputs.items()}
        out, final = fn(**leaves, return_final_states=True, **kwargs)
        loss = (out.float() * w_out).sum() + final_weight * (final.float() * w_fin).sum()
        grads = iter(torch.autograd.grad(loss, [v for v in leaves.values() if v is not None]))
        results[key] = (out.detach(), final.detach(), *(None if v is None else next(grads) for v in leaves.values()))
    return results


def check_three(results, dtype):
    kernel, ref = results["kernel"], results["ref"]
    lowp = results["lowp"] if dtype != torch.float32 else (None,) * len(ref)
    assert kernel[0].dtype == dtype and kernel[1].dtype == torch.float32
    for name, a, r, lp in zip(("out", "final_states", *GRAD_NAMES), kernel, ref, lowp):
        if r is None:
            assert a is None, f"{name}: gradient for an absent input"
            continue
        eps = None
        if name == "final_states":  # fp32, but summed from products of operands rounded to `dtype` (tensor cores)
            eps = EPSILON[dtype] * max(1.0, r.abs().max().item())
        assert_close(a, r, lp, eps=eps, name=name)


def _sorted_seq_idx(batch, L, device, n_max=4):
    return torch.sort(torch.randint(0, n_max, (batch, L), device=device), dim=1).values.to(torch.int32)


@pytest.mark.parametrize(("case", "dtype"), RUNS, ids=str)
def test_ssd_matches_reference(case, dtype, device):
    """Every feature on: groups, z, D, dt bias + softplus, initial and final states."""
    *shape, chunk = case
    inputs = make_inputs(*shape, device, h0=True)
    check_three(run_three(inputs, dtype, chunk, final_weight=1.0, dt_softplus=True), dtype)


FEATURES = {
    "plain": ({"skip": None, "z": False, "bias": False}, {}),
    "D_per_channel": ({"skip": "hp"}, {"dt_softplus": True}),
    "dt_limit": ({}, {"dt_softplus": True, "dt_limit": (0.1, 0.5)}),
    "no_gate": ({"z": False}, {"dt_softplus": True}),
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_ssd_feature_combinations(feature, device):
    opts, kwargs = FEATURES[feature]
    inputs = make_inputs(1, 37, 4, 3, 2, 5, device, **opts)
    if not kwargs.get("dt_softplus"):
        inputs["dt"] = 0.3 * inputs["dt"].abs()  # a raw dt must be positive
    check_three(run_three(inputs, torch.float32, 16, final_weight=0.5, **kwargs), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("chunk", [16, 32])
def test_ssd_seq_idx_resets(chunk, dtype, device):
    """Packed rows: resets inside chunks and on chunk boundaries, initial and final states."""
    inputs = make_inputs(2, 50, 2, 4, 1, 4, device, h0=True)
    seq_idx = _sorted_seq_idx(2, 50, device, n_max=6)
    seq_idx[1, 32:] += 10  # a new sequence exactly at a chunk start
    check_three(run_three(inputs, dtype, chunk, final_weight=1.0, dt_softplus=True, seq_idx=seq_idx), dtype)


def test_ssd_packed_equals_per_sequence(device):
    """cu_seqlens packing gives each sequence's own outputs and gradients."""
    lengths = [20, 1, 17]
    H, P, G, N = 2, 4, 1, 8
    shared = {
        "A": -(0.2 + torch.rand(H, device=device)).requires_grad_(),
        "D": torch.randn(H, device=device, requires_grad=True),
        "dt_bias": torch.randn(H, device=device, requires_grad=True),
    }
    per_seq = []
    for n in lengths:
        inp = make_inputs(1, n, H, P, G, N, device)
        per_seq.append({k: inp[k].requires_grad_() for k in ("x", "dt", "B", "C", "z")})
    packed = {k: torch.cat([s[k] for s in per_seq], dim=1) for k in per_seq[0]}
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    leaves = [t for s in per_seq for t in s.values()] + list(shared.values())
    y_packed = mamba_chunk_scan_combined(**packed, **shared, chunk_size=16, dt_softplus=True, cu_seqlens=cu)
    dy = torch.randn_like(y_packed)
    g_packed = torch.autograd.grad(y_packed, leaves, dy)
    y_alone = torch.cat(
        [mamba_chunk_scan_combined(**s, **shared, chunk_size=16, dt_softplus=True) for s in per_seq], dim=1
    )
    g_alone = torch.autograd.grad(y_alone, leaves, dy)
    assert_close(y_packed, y_alone, name="y")
    for i, (gp, ga) in enumerate(zip(g_packed, g_alone)):
        assert_close(gp, ga, name=f"grad {i}")


@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_chunked_reference_equals_loop_reference(chunk):
    """The readable chunked algorithm (also the CPU fallback) is the loop recurrence."""
    inputs = make_inputs(2, 45, 4, 3, 2, 5, "cpu", skip="hp", h0=True)
    seq_idx = _sorted_seq_idx(2, 45, "cpu")
    kwargs = {"seq_idx": seq_idx, "dt_softplus": True, "dt_limit": (0.05, 2.0), "return_final_states": True}
    out, final = ssd_chunked_ref(**inputs, chunk_size=chunk, **kwargs)
    ref, ref_final = ssd_ref(**inputs, **kwargs)
    assert_close(out, ref, name="out")
    assert_close(final, ref_final, name="final")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ssd_step_by_step_equals_full(dtype, device):
    """Decoding token by token from the final state of a prompt reproduces the full forward."""
    inputs = {k: None if v is None else v.to(dtype) for k, v in make_inputs(2, 12, 4, 3, 2, 5, device).items()}
    full = ssd_ref(**inputs, dt_softplus=True)
    lowp = ssd_ref(**inputs, dt_softplus=True, upcast=False)
    prompt = {k: v[:, :5] if k in ("x", "dt", "B", "C", "z") else v for k, v in inputs.items()}
    y_prompt, state = mamba_chunk_scan_combined(**prompt, chunk_size=16, dt_softplus=True, return_final_states=True)
    steps = [y_prompt]
    for t in range(5, 12):
        y_t = ssd_step(
            state, inputs["x"][:, t], inputs["dt"][:, t], inputs["A"], inputs["B"][:, t], inputs["C"][:, t],
            inputs["D"], inputs["z"][:, t], inputs["dt_bias"], dt_softplus=True,
        )  # fmt: skip
        steps.append(y_t[:, None])
    y = torch.cat(steps, dim=1)
    assert y.dtype == dtype
    assert_close(y, full, lowp if dtype != torch.float32 else None, name="prompt + steps")


def test_ssd_writes_every_output(device, monkeypatch):
    """Poison every buffer the launchers allocate: any element the kernels forget stays NaN."""
    from longseq.kernels.ssd import triton as tri
    from longseq.kernels.testing import poison

    real_empty, real_empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(tri.torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    monkeypatch.setattr(tri.torch, "empty_like", lambda *a, **kw: poison(real_empty_like(*a, **kw)))
    inputs = make_inputs(2, 45, 4, 3, 2, 5, device, h0=True)
    leaves = {k: v.requires_grad_() for k, v in inputs.items()}
    out, final = mamba_chunk_scan_combined(
        **leaves, chunk_size=32, dt_softplus=True, seq_idx=_sorted_seq_idx(2, 45, device), return_final_states=True
    )
    (out.sum() + final.sum()).backward()
    assert not out.isnan().any() and not final.isnan().any()
    for k, v in leaves.items():
        assert not v.grad.isnan().any(), k


def _bad(**overrides):
    base = {k: v for k, v in make_inputs(2, 8, 4, 3, 2, 5, "cpu").items() if k in ("x", "dt", "A", "B", "C")}
    return base | {"chunk_size": 16} | overrides


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        (_bad(x=torch.randn(2, 8, 4, 3, dtype=torch.float64)), TypeError, "x must have dtype"),
        (_bad(x=torch.randn(2, 8, 12)), ValueError, r"x must be \(B, L, H, P\)"),
        (_bad(chunk_size=48), ValueError, "chunk_size must be one of"),
        (_bad(dt=torch.randn(2, 8, 3)), ValueError, r"dt must have shape \(B, L, H\)"),
        (_bad(A=torch.randn(4, 1)), ValueError, r"A must have shape \(H,\)"),
        (_bad(B=torch.randn(2, 8, 3, 5)), ValueError, "with G dividing H=4"),
        (_bad(C=torch.randn(2, 8, 2, 6)), ValueError, "C must have B's shape"),
        (_bad(D=torch.randn(4, 2)), ValueError, r"D must have shape \(4,\) or \(4, 3\), got \(4, 2\)"),
        (_bad(initial_states=torch.randn(2, 4, 3, 4)), ValueError, "initial_states must have shape"),
        (_bad(seq_idx=torch.zeros(2, 8, dtype=torch.int64)), TypeError, "seq_idx must have dtype"),
        (_bad(x=torch.randn(2, 0, 4, 3), dt=torch.randn(2, 0, 4)), ValueError, "at least one token"),
    ],
)
def test_ssd_bad_input(inputs, error, match):
    with pytest.raises(error, match=match):
        mamba_chunk_scan_combined(**inputs)


def test_ssd_runs_the_triton_path(device, monkeypatch):
    import longseq.kernels.ssd as mod

    def _fail(*args, **kwargs):
        raise AssertionError("the reference fallback ran instead of the Triton kernel")

    monkeypatch.setattr(mod, "ssd_chunked_ref", _fail)
    x = _bad()
    y = mamba_chunk_scan_combined(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in x.items()})
    assert not y.isnan().any()


def test_ssd_cpu_without_interpreter_uses_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    inputs = make_inputs(1, 20, 2, 3, 1, 4, "cpu", h0=True)
    out, final = mamba_chunk_scan_combined(**inputs, chunk_size=16, dt_softplus=True, return_final_states=True)
    ref, ref_final = ssd_ref(**inputs, dt_softplus=True, return_final_states=True)
    assert_close(out, ref, name="out")
    assert_close(final, ref_final, name="final")


def test_ssd_opcheck(device):
    inputs = make_inputs(1, 17, 2, 3, 1, 4, device, h0=True)
    args = [v.requires_grad_() for v in inputs.values()]
    seq_idx = _sorted_seq_idx(1, 17, device)
    torch.library.opcheck(torch.ops.longseq.ssd_fwd.default, (*args, seq_idx, 16, True, False, 0.0, 0.0))


@pytest.mark.slow
def test_mamba_ops_torch_compile_fullgraph(device):
    """conv1d -> selective scan -> SSD in one compiled graph: no graph breaks, same values and grads."""
    from longseq.kernels.causal_conv1d import causal_conv1d_fn, causal_conv1d_ref
    from longseq.kernels.selective_scan import selective_scan_fn, selective_scan_ref

    torch._dynamo.reset()
    B, Dm, L, N = 1, 4, 12, 4
    u = torch.randn(B, Dm, L, device=device, requires_grad=True)
    w = torch.randn(Dm, 4, device=device, requires_grad=True)
    A = -(0.5 + torch.rand(Dm, N, device=device))
    Bm, Cm = torch.randn(B, 1, N, L, device=device), torch.randn(B, 1, N, L, device=device)
    dt = torch.randn(B, L, 2, device=device)
    A2 = -torch.rand(2, device=device) - 0.2
    B2 = torch.randn(B, L, 1, 4, device=device)

    def f(conv, scan, ssd, u, w):
        h = conv(u, w, activation="silu")  # (B, D, L)
        h = scan(h, torch.sigmoid(h), A, Bm, Cm, delta_softplus=True)
        y = ssd(h.transpose(1, 2).reshape(B, L, 2, 2), dt, A2, B2, B2, dt_softplus=True)
        return y.square().sum()

    def ours(u, w):
        return f(causal_conv1d_fn, selective_scan_fn, partial(mamba_chunk_scan_combined, chunk_size=16), u, w)

    def refs(u, w):
        return f(causal_conv1d_ref, selective_scan_ref, ssd_ref, u, w)

    out = torch.compile(ours, fullgraph=True, backend=compile_backend())(u, w)
    gu, gw = torch.autograd.grad(out, (u, w))
    eu, ew = u.detach().requires_grad_(), w.detach().requires_grad_()
    ref = refs(eu, ew)
    rgu, rgw = torch.autograd.grad(ref, (eu, ew))
    assert_close(out, ref, name="out")
    assert_close(gu, rgu, name="du")
    assert_close(gw, rgw, name="dw")


@pytest.mark.gpu
@pytest.mark.parametrize("chunk", ALL_CHUNKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_ssd_gpu_packed_every_chunk(chunk, dtype):
    """Packed rows at every chunk size: resets on and off chunk boundaries, initial and final states."""
    inputs = make_inputs(2, 1031, 4, 64, 2, 128, "cuda", h0=True)
    seq_idx = _sorted_seq_idx(2, 1031, "cuda", n_max=9)
    seq_idx[1, 512:] += 20  # a reset exactly at a chunk start for every chunk size
    check_three(run_three(inputs, dtype, chunk, final_weight=1.0, dt_softplus=True, seq_idx=seq_idx), dtype)
