"""Selective scan kernels vs the loop-over-time reference: outputs, last state and every gradient over
odd lengths, chunk boundaries, grouped and per-channel B/C, packed resets, initial states and dtypes."""

from __future__ import annotations

import pytest
import torch

from longseq.kernels._common import interpreting
from longseq.kernels.selective_scan import (
    selective_scan_fn,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
    seq_idx_from_cu_seqlens,
)
from longseq.kernels.testing import assert_close

# (batch, D, N, L). N <= 8 scans in chunks of 64 tokens, N <= 32 in 32, larger N in 16: the lengths
# straddle those boundaries.
CPU_SHAPES = [(1, 2, 4, 1), (2, 4, 5, 7), (2, 4, 4, 67), (1, 4, 16, 33), (2, 2, 40, 19)]
GPU_SHAPES = [(2, 256, 4, 2049), (2, 256, 16, 8192), (1, 128, 64, 1031), (2, 64, 16, 1)]
SHAPES = CPU_SHAPES if interpreting() else GPU_SHAPES
DTYPES = [torch.float32, torch.bfloat16] if interpreting() else [torch.float32, torch.float16, torch.bfloat16]
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(batch, dim, N, L, device, *, groups=1, per_token=True, z=True, skip=True, bias=True, h0=False):
    """Random scan inputs (fp32) with a decaying A and moderate delta."""
    bc_shape = (batch, groups, N, L) if per_token else (dim, N)
    return {
        "u": torch.randn(batch, dim, L, device=device),
        "delta": 0.5 * torch.randn(batch, dim, L, device=device),
        "A": -(0.5 + torch.rand(dim, N, device=device)),
        "B": torch.randn(bc_shape, device=device),
        "C": torch.randn(bc_shape, device=device),
        "D": torch.randn(dim, device=device) if skip else None,
        "z": torch.randn(batch, dim, L, device=device) if z else None,
        "delta_bias": 0.5 * torch.randn(dim, device=device) if bias else None,
        "initial_state": torch.randn(batch, dim, N, device=device) if h0 else None,
    }


def run_three(inputs, dtype, *, softplus=True, seq_idx=None, last_weight=0.0):
    """Kernel, fp32 reference and low-precision reference: ``(out, last_state, *grads)`` of each.

    The loss is ``<out, w_out> + last_weight * <last_state, w_last>`` with fixed random weights,
    so the gradient of the last state is exercised when ``last_weight != 0``.
    """
    gen = torch.Generator(device=inputs["u"].device).manual_seed(1)
    u = inputs["u"]
    w_out = torch.randn(u.shape, generator=gen, device=u.device)
    w_last = torch.randn(u.shape[0], u.shape[1], inputs["A"].shape[1], generator=gen, device=u.device)
    runs = {
        "kernel": (selective_scan_fn, lambda t: t.to(dtype), {}),
        "ref": (selective_scan_ref, lambda t: t.to(dtype).float(), {}),
        "lowp": (selective_scan_ref, lambda t: t.to(dtype), {"upcast": False}),
    }
    results = {}
    for key, (fn, cast, extra) in runs.items():
        leaves = {k: None if v is None else cast(v).detach().requires_grad_() for k, v in inputs.items()}
        out, last = fn(
            **leaves, delta_softplus=softplus, return_last_state=True, seq_idx=seq_idx, **extra
        )  # fmt: skip
        loss = (out.float() * w_out).sum() + last_weight * (last.float() * w_last).sum()
        present = [v for v in leaves.values() if v is not None]
        grads = iter(torch.autograd.grad(loss, present))
        results[key] = (out.detach(), last.detach(), *(None if v is None else next(grads) for v in leaves.values()))
    return results


def check_three(results, dtype):
    kernel, ref = results["kernel"], results["ref"]
    lowp = results["lowp"] if dtype != torch.float32 else (None,) * len(ref)
    assert kernel[0].dtype == dtype and kernel[1].dtype == torch.float32
    for name, a, r, lp in zip(("out", "last_state", *GRAD_NAMES), kernel, ref, lowp):
        if r is None:
            assert a is None, f"{name}: gradient for an absent input"
            continue
        assert_close(a, r, lp, name=name)


#: (FWD_IMPL, BWD_IMPL) pairs: each forward feeds the other kind of backward (both save the same chunk
#: states), so both forwards and both backwards meet the reference in every test that takes ``scan_impls``;
#: test_segmented_backward_equals_chunked checks the two backwards against each other.
IMPLS = {"fwd_chunked-bwd_segmented": ("chunked", "segmented"), "fwd_segmented-bwd_chunked": ("segmented", "chunked")}


@pytest.fixture(params=sorted(IMPLS))
def scan_impls(request, monkeypatch):
    """Sets ``FWD_IMPL`` and ``BWD_IMPL`` to one pair of :data:`IMPLS`. Under the interpreter the segmented
    backward takes sub-steps of 16 tokens (1-4 per chunk; each interpreted sub-step costs the same whatever
    its size): test_segmented_backward_equals_chunked runs the default and the other sub-step sizes."""
    from longseq.kernels.selective_scan import segmented_bwd
    from longseq.kernels.selective_scan import triton as scan_triton

    fwd, bwd = IMPLS[request.param]
    if interpreting():
        monkeypatch.setattr(segmented_bwd, "BWD_CHUNK", 16)
    monkeypatch.setattr(scan_triton, "FWD_IMPL", fwd)
    monkeypatch.setattr(scan_triton, "BWD_IMPL", bwd)
    return fwd, bwd


def _sorted_seq_idx(batch, L, device, n_max=4):
    return torch.sort(torch.randint(0, n_max, (batch, L), device=device), dim=1).values.to(torch.int32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scan_matches_reference(shape, dtype, device, scan_impls):
    """Every feature on: grouped per-token B/C, z, D, delta bias + softplus, initial and last state."""
    batch, dim, N, L = shape
    inputs = make_inputs(batch, dim, N, L, device, groups=2 if dim % 2 == 0 else 1, h0=True)
    check_three(run_three(inputs, dtype, last_weight=1.0), dtype)


FEATURES = {
    "plain": {"z": False, "skip": False, "bias": False},
    "per_channel_BC": {"per_token": False},
    "groups_4": {"groups": 4},
    "odd_group_size": {"groups": 3},  # D=6: three channels per group, blocks of one channel
    "no_softplus": {"bias": False},
    "initial_state": {"h0": True},
    "z_only": {"skip": False, "bias": False},
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_scan_feature_combinations(feature, device, scan_impls):
    opts = FEATURES[feature]
    dim = 6 if feature == "odd_group_size" else 4
    inputs = make_inputs(2, dim, 5, 37, device, **opts)
    if feature == "no_softplus":
        inputs["delta"] = inputs["delta"].abs()  # without softplus a negative delta would grow the state
    check_three(run_three(inputs, torch.float32, softplus=feature != "no_softplus", last_weight=0.5), torch.float32)


@pytest.mark.parametrize("programs_per_hint", [0, 1000], ids=["one_segment", "one_segment_per_chunk"])
def test_segmented_forward_equals_chunked(programs_per_hint, device, monkeypatch):
    """The segmented forward's outputs, last state and saved per-chunk states (what the backward reads)
    equal the chunked forward's, with one segment and with as many segments as chunks."""
    from longseq.kernels.selective_scan import segmented
    from longseq.kernels.selective_scan import triton as scan_triton

    inputs = make_inputs(2, 4, 4, 200, device, groups=2, h0=True)  # N=4: chunks of 64, 4 of them
    seq_idx = _sorted_seq_idx(2, 200, device)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")]
    runs = {}
    for impl in ("chunked", "segmented"):
        monkeypatch.setattr(scan_triton, "FWD_IMPL", impl)
        monkeypatch.setattr(segmented, "PROGRAMS_PER_HINT", programs_per_hint)
        runs[impl] = scan_triton.selective_scan_fwd(*args, seq_idx, True, True)
    assert runs["segmented"][2].shape == runs["chunked"][2].shape == (2, 4, 4, 4)
    for name, a, b in zip(("out", "last_state", "chunk_states"), runs["segmented"], runs["chunked"]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5, msg=name)


#: id -> (PROGRAMS_PER_HINT, segments it gives, per-token B/C, BWD_CHUNK, BWD_STASH) for L=51 in chunks of 16.
SEGMENTED_BWD_CASES = {
    "one_segment": (0, 1, True, 8, True),
    "two_segments_recompute": (2, 2, True, 8, False),
    "segment_per_chunk": (1000, 4, True, 4, True),
    "segment_per_chunk_per_channel_recompute": (1000, 4, False, 8, False),
}


@pytest.mark.parametrize("case", sorted(SEGMENTED_BWD_CASES))
def test_segmented_backward_equals_chunked(case, device, monkeypatch):
    """Every gradient of the segmented backward equals the chunked backward's, from the same saved states:
    1, 2 and 4 segments (one per chunk), sub-steps from stashed or recomputed states, an odd length, resets
    inside segments and on their borders (tokens 16, 32, 48) and at the last token, an initial state, the
    last state's gradient, z, D, delta_bias + softplus, per-token B/C in 2 groups and per-channel B/C."""
    from longseq.kernels.selective_scan import segmented, segmented_bwd
    from longseq.kernels.selective_scan import triton as scan_triton

    pph, n_segs, per_token, bwd_chunk, stash = SEGMENTED_BWD_CASES[case]
    batch, dim, N, L = 2, 4, 40, 51  # N=40: chunks of 16 tokens, 4 of them
    monkeypatch.setattr(segmented, "num_programs_hint", lambda dev: 4)  # the segment count on any device
    monkeypatch.setattr(segmented, "PROGRAMS_PER_HINT", pph)
    monkeypatch.setattr(segmented_bwd, "BWD_CHUNK", bwd_chunk)
    monkeypatch.setattr(segmented_bwd, "BWD_STASH", stash)
    programs = batch * dim // segmented_bwd._block_d(dim, 2 if per_token else None)  # per segment
    assert scan_triton.chunk_size(L, N) == 16 and segmented.num_segments(L, 16, programs, device) == n_segs
    x = make_inputs(batch, dim, N, L, device, groups=2, per_token=per_token, h0=True)
    marks = torch.zeros(batch, L, dtype=torch.int32)
    marks[0, [16, 25, 32]] = 1
    marks[1, [38, 48, 50]] = 1
    seq_idx = marks.cumsum(1, dtype=torch.int32).to(device)
    keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    monkeypatch.setattr(scan_triton, "FWD_IMPL", "chunked")
    out, _last, states = scan_triton.selective_scan_fwd(*(x[k] for k in keys), x["initial_state"], seq_idx, True, True)
    dout, dlast = torch.randn_like(out), torch.randn(batch, dim, N, device=device)
    grads = {}
    for impl in ("chunked", "segmented"):
        monkeypatch.setattr(scan_triton, "BWD_IMPL", impl)
        grads[impl] = scan_triton.selective_scan_bwd(dout, dlast, *(x[k] for k in keys), seq_idx, states, True)
    for name, a, b in zip((*keys, "initial_state"), grads["segmented"], grads["chunked"]):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5, msg=name)


def test_scan_unknown_bwd_impl(device, monkeypatch):
    from longseq.kernels.selective_scan import triton as scan_triton

    monkeypatch.setattr(scan_triton, "BWD_IMPL", "fast")
    x = make_inputs(1, 2, 3, 5, device)
    leaves = {k: v if v is None else v.requires_grad_() for k, v in x.items()}
    with pytest.raises(ValueError, match="BWD_IMPL must be 'chunked' or 'segmented', got 'fast'"):
        selective_scan_fn(**leaves).sum().backward()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("per_token", [True, False])
def test_scan_seq_idx_resets(per_token, dtype, device, scan_impls):
    """Packed rows: the reference restarts the state where seq_idx changes; the initial state and
    the last state belong to each row's first and last sequence."""
    inputs = make_inputs(2, 4, 4, 70, device, per_token=per_token, h0=True)
    seq_idx = _sorted_seq_idx(2, 70, device)
    check_three(run_three(inputs, dtype, seq_idx=seq_idx, last_weight=1.0), dtype)


def test_scan_compiled_scan_primitive(device, monkeypatch, scan_impls):
    """The GPU path scans with ``tl.associative_scan`` (forward and reverse) and, in the segmented backward,
    a token-by-token reverse loop; the interpreter path with a gather-based scan. Run the GPU path here too
    (slow per element under the interpreter, so on a tiny problem) to check its combine order and reverse
    direction."""
    from longseq.kernels.selective_scan import segmented, segmented_bwd
    from longseq.kernels.selective_scan import triton as tri

    for module in (tri, segmented, segmented_bwd):
        monkeypatch.setattr(module, "interpreting", lambda: False)
    inputs = make_inputs(1, 2, 2, 11, device, groups=1, h0=True)
    check_three(
        run_three(inputs, torch.float32, seq_idx=_sorted_seq_idx(1, 11, device), last_weight=1.0), torch.float32
    )


def test_scan_packed_equals_per_sequence(device):
    """cu_seqlens packing gives each sequence's own outputs and gradients (B/C per token)."""
    lengths = [9, 1, 40, 3]
    dim, N = 4, 5
    A = -(0.5 + torch.rand(dim, N, device=device))
    shared = {"A": A.requires_grad_(), "D": torch.randn(dim, device=device, requires_grad=True)}
    seqs = [make_inputs(1, dim, N, n, device, skip=False, bias=False) for n in lengths]
    per_seq = [{k: seq[k].requires_grad_() for k in ("u", "delta", "B", "C", "z")} for seq in seqs]
    packed = {k: torch.cat([s[k] for s in per_seq], dim=-1) for k in ("u", "delta", "B", "C", "z")}
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    y_packed = selective_scan_fn(**packed, **shared, delta_softplus=True, cu_seqlens=cu)
    leaves = [t for s in per_seq for t in s.values()] + list(shared.values())
    dy = torch.randn_like(y_packed)
    g_packed = torch.autograd.grad(y_packed, leaves, dy)
    y_alone = torch.cat([selective_scan_fn(**s, **shared, delta_softplus=True) for s in per_seq], dim=-1)
    g_alone = torch.autograd.grad(y_alone, leaves, dy)
    assert_close(y_packed, y_alone, name="y")
    for i, (gp, ga) in enumerate(zip(g_packed, g_alone)):
        assert_close(gp, ga, name=f"grad {i}")


def test_scan_empty_sequence(device, scan_impls):
    """L = 0: no output, the last state is the initial state and passes its gradient straight through."""
    x = make_inputs(2, 3, 4, 0, device, h0=True)
    leaves = {k: v.requires_grad_() for k, v in x.items()}
    out, last = selective_scan_fn(**leaves, delta_softplus=True, return_last_state=True)
    assert out.shape == (2, 3, 0)
    assert_close(last, x["initial_state"].detach(), name="last")
    w = torch.randn_like(last)
    (last * w).sum().backward()
    assert_close(leaves["initial_state"].grad, w, name="dinitial_state")
    assert not leaves["A"].grad.any()


def test_seq_idx_from_cu_seqlens():
    cu = torch.tensor([0, 2, 2, 5], dtype=torch.int32)
    assert seq_idx_from_cu_seqlens(cu, 5).tolist() == [[0, 0, 2, 2, 2]]
    with pytest.raises(ValueError, match="run from 0 to the total tokens 6"):
        seq_idx_from_cu_seqlens(cu, 6)
    with pytest.raises(ValueError, match="1-D int32"):
        seq_idx_from_cu_seqlens(cu.long(), 5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("groups", [1, 2])
def test_state_update_step_by_step_equals_scan(groups, dtype, device):
    """Mamba-1 layout: decoding token by token from the scan's state reproduces the full scan."""
    batch, dim, N, L = 2, 4, 5, 6
    x = make_inputs(batch, dim, N, L, device, groups=groups)
    cast = {k: None if v is None else v.to(dtype) for k, v in x.items()}
    full, _ = selective_scan_ref(**cast, delta_softplus=True, return_last_state=True)
    lowp = selective_scan_ref(**cast, delta_softplus=True, upcast=False)
    state = torch.zeros(batch, dim, N, device=device)
    steps = []
    for t in range(L):
        Bt, Ct = cast["B"][..., t], cast["C"][..., t]  # (B, G, N)
        if groups == 1:
            Bt, Ct = Bt[:, 0], Ct[:, 0]  # (B, N) form
        steps.append(
            selective_state_update(
                state,
                cast["u"][..., t],
                cast["delta"][..., t],
                cast["A"],
                Bt,
                Ct,
                cast["D"],
                cast["z"][..., t],
                cast["delta_bias"],
                dt_softplus=True,
            )  # fmt: skip
        )
    steps = torch.stack(steps, dim=-1)
    assert steps.dtype == dtype
    assert_close(steps, full, lowp if dtype != torch.float32 else None, name="steps")


def test_state_update_multihead_layout(device):
    """Mamba-2 layout (B, H, P, N) with broadcast (stride-0) A, dt, D and dt_bias vs the reference."""
    batch, H, P, N, G = 2, 4, 3, 5, 2
    state = torch.randn(batch, H, P, N, device=device)
    x, z = torch.randn(batch, H, P, device=device), torch.randn(batch, H, P, device=device)
    dt = torch.randn(batch, H, device=device)[..., None].expand(batch, H, P)
    A = -torch.rand(H, device=device)[:, None, None].expand(H, P, N)
    B, C = torch.randn(batch, G, N, device=device), torch.randn(batch, G, N, device=device)
    D = torch.randn(H, device=device)[:, None].expand(H, P)
    bias = torch.randn(H, device=device)[:, None].expand(H, P)
    ref_out, ref_state = selective_state_update_ref(state, x, dt, A, B, C, D, z, bias, True)
    out = selective_state_update(state, x, dt, A, B, C, D, z, bias, dt_softplus=True)
    assert_close(out, ref_out, name="out")
    assert_close(state, ref_state, name="state")


def test_scan_writes_every_output(device, monkeypatch, scan_impls):
    """Poison every buffer the launchers allocate: any element the kernels forget stays NaN."""
    from longseq.kernels.selective_scan import triton as tri
    from longseq.kernels.testing import poison

    real_empty = torch.empty
    monkeypatch.setattr(tri.torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    for per_token in (True, False):
        inputs = make_inputs(2, 4, 5, 45, device, per_token=per_token, h0=True)
        leaves = {k: v.requires_grad_() for k, v in inputs.items()}
        out, last = selective_scan_fn(
            **leaves, delta_softplus=True, return_last_state=True, seq_idx=_sorted_seq_idx(2, 45, device)
        )
        (out.sum() + last.sum()).backward()
        assert not out.isnan().any() and not last.isnan().any()
        for k, v in leaves.items():
            assert not v.grad.isnan().any(), k
    state = torch.randn(2, 4, 5, device=device)
    out = selective_state_update(
        state,
        *(torch.randn(2, 4, device=device) for _ in range(2)),
        -torch.rand(4, 5, device=device),
        torch.randn(2, 5, device=device),
        torch.randn(2, 5, device=device),
    )
    assert not out.isnan().any()


def _bad(**overrides):
    base = make_inputs(2, 4, 3, 8, "cpu")
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        (_bad(u=torch.randn(2, 4, 8, dtype=torch.float64)), TypeError, "u must have dtype"),
        (_bad(u=torch.randn(4, 8)), ValueError, r"u must be \(B, D, L\)"),
        (_bad(delta=torch.randn(2, 4, 9)), ValueError, "delta must have u's shape"),
        (_bad(A=torch.randn(5, 3)), ValueError, r"A must be real \(D, N\) with D=4"),
        (_bad(B=torch.randn(2, 3, 3, 8)), ValueError, "G=3 groups, which must divide D=4"),
        (_bad(C=torch.randn(2, 1, 3, 7)), ValueError, r"C must be \(D, N\)"),
        (_bad(B=torch.randn(2, 2, 3, 8), C=torch.randn(2, 4, 3, 8)), ValueError, "same number of groups"),
        (_bad(D=torch.randn(3)), ValueError, r"D must have shape \(4,\)"),
        (
            _bad(initial_state=torch.randn(2, 4, 4)),
            ValueError,
            r"initial_state must have shape \(2, 4, 3\), got \(2, 4, 4\)",
        ),
    ],
)
def test_scan_bad_input(inputs, error, match):
    with pytest.raises(error, match=match):
        selective_scan_fn(**inputs)


def test_scan_bad_packing():
    x = make_inputs(2, 4, 3, 8, "cpu")
    with pytest.raises(ValueError, match=r"packed input with cu_seqlens must be \(1, D, T\)"):
        selective_scan_fn(**x, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"seq_idx must have shape \(B, L\)"):
        selective_scan_fn(**x, seq_idx=torch.zeros(2, 7, dtype=torch.int32))


def test_scan_runs_the_triton_path(device, monkeypatch):
    import longseq.kernels.selective_scan as mod

    def _fail(*args, **kwargs):
        raise AssertionError("the reference fallback ran instead of the Triton kernel")

    monkeypatch.setattr(mod, "selective_scan_ref", _fail)
    monkeypatch.setattr(mod, "selective_state_update_ref", _fail)
    x = make_inputs(1, 2, 3, 5, device)
    assert not selective_scan_fn(**x).isnan().any()
    selective_state_update(
        torch.zeros(1, 2, 3, device=device),
        x["u"][..., 0],
        x["delta"][..., 0],
        x["A"],
        x["B"][:, 0, :, 0],
        x["C"][:, 0, :, 0],
    )


def test_scan_cpu_without_interpreter_uses_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = make_inputs(1, 2, 3, 6, "cpu", h0=True)
    out, last = selective_scan_fn(**x, delta_softplus=True, return_last_state=True)
    ref, ref_last = selective_scan_ref(**x, delta_softplus=True, return_last_state=True)
    assert_close(out, ref, name="out")
    assert_close(last, ref_last, name="last")


def test_scan_opcheck(device):
    x = make_inputs(2, 4, 3, 9, device, h0=True)
    args = [None if v is None else v.requires_grad_() for v in x.values()]
    seq_idx = _sorted_seq_idx(2, 9, device)
    torch.library.opcheck(torch.ops.longseq.selective_scan_fwd.default, (*args, seq_idx, True, True))
    plain = make_inputs(1, 2, 3, 4, device, per_token=False, z=False, skip=False, bias=False)
    torch.library.opcheck(
        torch.ops.longseq.selective_scan_fwd.default,
        (*plain.values(), None, False, False),
        test_utils=("test_schema", "test_faketensor"),
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_scan_gpu_packed_long(dtype):
    """A long packed row on the GPU (many sequences, per-token B/C) vs the reference."""
    inputs = make_inputs(1, 64, 16, 4099, "cuda", h0=True)
    check_three(run_three(inputs, dtype, seq_idx=_sorted_seq_idx(1, 4099, "cuda", n_max=12), last_weight=1.0), dtype)
