"""Flash attention kernels vs the fp32 reference: outputs, log-sum-exps and every gradient.

Under the interpreter (CPU) the grid is small shapes over every feature combination: padded and
packed, Lq != Lk both ways with causal, windows, GQA/MQA, ALiBi per head and per batch x head,
softcap, odd head dims, empty sequences, the decode path. On a GPU these tests run too (fast), and
``test_flash_attn_gpu.py`` adds the wide grid. Autotuning is switched off here (first configuration),
so every test compiles each kernel variant once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
import torch
import triton
import triton.language as tl

from longseq.kernels._common import interpreting
from longseq.kernels.flash_attn import (
    attention_ref,
    decode,
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_attn_with_kvcache,
    tiles,
    tuning,
)
from longseq.kernels.testing import assert_close, compile_backend, poison

# Triton 3.6's interpreter turns 1-element arrays into loop bounds with a NumPy deprecation warning.
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")


@pytest.fixture(autouse=True)
def _no_autotune(monkeypatch):
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "0")


# The grids below are sized for the interpreter; on a GPU test_flash_attn_gpu.py runs the wide grid,
# so these would only add compile time there.
interpreter_grid = pytest.mark.skipif(not interpreting(), reason="interpreter grid; the GPU grid is in *_gpu.py")


# --------------------------------------------------------------------------------------------
# cases and the comparison every test uses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One attention problem; ``lens`` switches to packed sequences ``(lengths_q, lengths_k)``."""

    batch: int = 1
    seqlen_q: int = 17
    seqlen_k: int = 17
    nheads: int = 2
    nheads_kv: int = 2
    headdim: int = 32
    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    alibi: str = "none"  # "none", "head" (H,) or "batch" (B, H)
    scale: float | None = None
    lens: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    deterministic: bool = False  # False: dq by atomics inside the dK/dV kernel; True: a separate dQ kernel
    dtype: torch.dtype = field(default=torch.float32)

    @property
    def id(self) -> str:
        parts = [f"packed{list(self.lens[0])}x{list(self.lens[1])}" if self.lens else None]
        if not self.lens:
            parts.append(f"b{self.batch}-q{self.seqlen_q}-k{self.seqlen_k}")
        parts += [
            f"h{self.nheads}:{self.nheads_kv}",
            f"d{self.headdim}",
            "causal" if self.causal else None,
            f"win{self.window[0]},{self.window[1]}" if self.window != (-1, -1) else None,
            f"cap{self.softcap:g}" if self.softcap else None,
            f"alibi-{self.alibi}" if self.alibi != "none" else None,
            f"scale{self.scale:g}" if self.scale is not None else None,
            "det" if self.deterministic else None,
            str(self.dtype).removeprefix("torch."),
        ]
        return "-".join(p for p in parts if p)


def make_inputs(case: Case, device, requires_grad: bool = True) -> dict:
    """q, k, v (padded or packed), cu_seqlens and ALiBi slopes for ``case``, seeded by the caller."""
    if case.lens:
        lq, lk = case.lens
        cu_q = torch.tensor([0, *lq], device=device).cumsum(0).to(torch.int32)
        cu_k = torch.tensor([0, *lk], device=device).cumsum(0).to(torch.int32)
        shape_q, shape_k, batch = (sum(lq), case.nheads), (sum(lk), case.nheads_kv), len(lq)
    else:
        cu_q = cu_k = None
        batch = case.batch
        shape_q, shape_k = (batch, case.seqlen_q, case.nheads), (batch, case.seqlen_k, case.nheads_kv)
    q = torch.randn(*shape_q, case.headdim, device=device).to(case.dtype)
    k = torch.randn(*shape_k, case.headdim, device=device).to(case.dtype)
    v = torch.randn(*shape_k, case.headdim, device=device).to(case.dtype)
    slopes = None
    if case.alibi == "head":
        slopes = torch.rand(case.nheads, device=device) * 0.5
    elif case.alibi == "batch":
        slopes = torch.rand(batch, case.nheads, device=device) * 0.5
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    return {"q": q, "k": k, "v": v, "cu_q": cu_q, "cu_k": cu_k, "slopes": slopes}


def kernel_forward(case: Case, t: dict) -> tuple[torch.Tensor, torch.Tensor]:
    kw = dict(
        softmax_scale=case.scale, causal=case.causal, window_size=case.window, softcap=case.softcap,
        alibi_slopes=t["slopes"], deterministic=case.deterministic, return_softmax_lse=True,
    )  # fmt: skip
    if case.lens:
        max_q, max_k = max(case.lens[0], default=0), max(case.lens[1], default=0)
        return flash_attn_varlen_func(t["q"], t["k"], t["v"], t["cu_q"], t["cu_k"], max_q, max_k, **kw)
    return flash_attn_func(t["q"], t["k"], t["v"], **kw)


def reference_forward(case: Case, t: dict, upcast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_ref(
        t["q"], t["k"], t["v"], causal=case.causal, window_size=case.window, softcap=case.softcap,
        alibi_slopes=t["slopes"], softmax_scale=case.scale, cu_seqlens_q=t["cu_q"], cu_seqlens_k=t["cu_k"],
        upcast=upcast,
    )  # fmt: skip


def _loss(out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor, wlse: torch.Tensor) -> torch.Tensor:
    """Weights both outputs, so the lse gradient path is checked too (rows with lse = -inf excluded)."""
    finite = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return (out.float() * dout).sum() + (finite.float() * wlse).sum()


def _grads(fn, t: dict, cast, dout, wlse, with_grad: bool):
    inputs = {k: (cast(v).requires_grad_(with_grad) if k in "qkv" else v) for k, v in t.items()}
    out, lse = fn(inputs)
    if not with_grad:
        return out.detach(), lse.detach(), None
    grads = torch.autograd.grad(_loss(out, lse, dout, wlse), [inputs["q"], inputs["k"], inputs["v"]])
    return out.detach(), lse.detach(), grads


def assert_lse_close(lse: torch.Tensor, ref: torch.Tensor, ref_lowp: torch.Tensor | None, name: str = "lse") -> None:
    """Rows that see no key must be -inf in both; the others follow the tolerance rule."""
    assert lse.dtype == torch.float32, lse.dtype
    empty = torch.isneginf(ref)
    assert torch.equal(torch.isneginf(lse), empty), f"{name}: -inf rows differ"
    assert not lse.isnan().any(), f"{name}: NaN"

    def fill(x):
        return None if x is None else x.float().masked_fill(empty, 0.0)

    assert_close(fill(lse), fill(ref), fill(ref_lowp), name=name)


def check_case(case: Case, device, with_grad: bool = True) -> None:
    """Kernel vs fp32 reference (and the low-precision reference for 16-bit dtypes): out, lse, dq, dk, dv."""
    t = make_inputs(case, device, requires_grad=False)
    out_shape = t["q"].shape
    dout = torch.randn(out_shape, device=device)
    lse_shape = (case.nheads, t["q"].shape[0]) if case.lens else (case.batch, case.nheads, case.seqlen_q)
    wlse = torch.randn(lse_shape, device=device)
    res = _grads(lambda i: kernel_forward(case, i), t, lambda x: x.detach().clone(), dout, wlse, with_grad)
    ref = _grads(lambda i: reference_forward(case, i, True), t, lambda x: x.detach().float(), dout, wlse, with_grad)
    low = None
    if case.dtype != torch.float32:
        low = _grads(
            lambda i: reference_forward(case, i, False), t, lambda x: x.detach().clone(), dout, wlse, with_grad
        )
    out, lse, grads = res
    assert out.dtype == case.dtype and out.shape == out_shape
    assert_close(out, ref[0], None if low is None else low[0], name="out")
    assert_lse_close(lse, ref[1], None if low is None else low[1])
    if with_grad:
        for i, name in enumerate(("dq", "dk", "dv")):
            assert grads[i].dtype == case.dtype
            assert_close(grads[i], ref[2][i], None if low is None else low[2][i], name=name)


# --------------------------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------------------------

MASKS = [
    {},
    {"causal": True},
    {"window": (8, 0)},
    {"causal": True, "window": (5, -1)},
    {"window": (5, 11)},
    {"window": (-1, 6)},
    {"window": (0, 0)},
]
SHAPES = [(1, 1, 1), (2, 17, 17), (1, 40, 70), (1, 70, 40), (2, 64, 64), (1, 1, 45), (1, 45, 3)]
EXTRAS = [
    {},
    {"nheads": 4, "nheads_kv": 2},
    {"alibi": "head"},
    {"softcap": 2.5},
    {"nheads": 4, "nheads_kv": 1, "alibi": "batch"},
    {"headdim": 59},
    {"scale": 0.4, "softcap": 4.0, "alibi": "head"},
    {"headdim": 16, "nheads": 3, "nheads_kv": 1},
]
# Every mask meets every shape; the other features rotate so that each meets many masks and shapes.
PADDED_CASES = [
    Case(batch=b, seqlen_q=lq, seqlen_k=lk, **mask, **EXTRAS[(i * len(MASKS) + j) % len(EXTRAS)])
    for i, (b, lq, lk) in enumerate(SHAPES)
    for j, mask in enumerate(MASKS)
]
LENS = [
    ((3, 0, 17, 1, 40), (7, 5, 17, 0, 33)),
    ((1,), (1,)),
    ((16, 32, 5), (16, 32, 5)),
    ((0, 0), (0, 4)),
]
PACKED_CASES = [
    Case(lens=lens, **mask, **EXTRAS[(3 * i + j) % len(EXTRAS)])
    for i, lens in enumerate(LENS)
    for j, mask in enumerate([{}, {"causal": True}, {"window": (4, 2)}, {"causal": True, "window": (6, -1)}])
]
ODD_CASES = [
    Case(seqlen_q=9, seqlen_k=13, headdim=111, causal=True),
    Case(seqlen_q=9, seqlen_k=5, headdim=111, window=(2, 1), alibi="head"),
    Case(batch=2, seqlen_q=20, seqlen_k=20, headdim=256, causal=True, nheads=2, nheads_kv=1),
    Case(lens=((5, 11), (5, 11)), headdim=59, softcap=3.0, causal=True),
]
# The deterministic backward (separate dQ kernel) over every mask and the main features.
DETERMINISTIC_CASES = [
    replace(c, deterministic=True)
    for c in PADDED_CASES[1 * len(MASKS) : 2 * len(MASKS)] + PADDED_CASES[3 * len(MASKS) : 4 * len(MASKS)]
] + [replace(c, deterministic=True) for c in PACKED_CASES[:4]]
LOWP_CASES = [
    Case(batch=2, seqlen_q=33, seqlen_k=33, causal=True, dtype=torch.bfloat16),
    Case(seqlen_q=20, seqlen_k=45, window=(6, 3), alibi="batch", nheads=4, nheads_kv=2, dtype=torch.bfloat16),
    Case(lens=((7, 0, 25), (9, 3, 25)), causal=True, softcap=3.0, dtype=torch.float16),
    Case(seqlen_q=45, seqlen_k=20, causal=True, headdim=59, dtype=torch.float16),
]


ALL_CASES = PADDED_CASES + PACKED_CASES + DETERMINISTIC_CASES + ODD_CASES + LOWP_CASES


@interpreter_grid
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_flash_attn_matches_reference(case, device):
    check_case(case, device)


@pytest.mark.parametrize(
    "blocks",
    [
        {"fwd": {"BLOCK_M": 16, "BLOCK_N": 32}, "bwd_dkdv_atomic": {"BLOCK_M": 32, "BLOCK_N": 16}},
        {"bwd_dq": {"BLOCK_M": 16, "BLOCK_N": 16}, "bwd_dkdv": {"BLOCK_M": 16, "BLOCK_N": 16}},
    ],
    ids=["fwd16x32-dkdv16x32", "bwd16x16"],
)
@pytest.mark.parametrize(
    "case",
    [
        Case(seqlen_q=50, seqlen_k=37, causal=True),
        Case(seqlen_q=37, seqlen_k=61, window=(9, 4), nheads=4, nheads_kv=2, deterministic=True),
    ],
    ids=lambda c: c.id,
)
@interpreter_grid
def test_flash_attn_other_tilings(case, blocks, device, monkeypatch):
    """Tiles of other shapes (BLOCK_M < BLOCK_N, square) move the masked/unmasked boundaries."""
    for name, meta in blocks.items():
        monkeypatch.setitem(tuning.INTERPRET_BLOCKS, name, meta)
    check_case(case, device)


@triton.jit
def _band_probe(R0, NCOLS, LOD, HID, OUT, R: tl.constexpr, C: tl.constexpr, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr):
    i = tl.program_id(0)
    lo, full_lo, full_hi, hi = tiles.band(
        tl.load(R0 + i), R, tl.load(NCOLS + i), C, tl.load(LOD + i), tl.load(HID + i), HAS_LO, HAS_HI
    )
    tl.store(OUT + 4 * i, lo)
    tl.store(OUT + 4 * i + 1, full_lo)
    tl.store(OUT + 4 * i + 2, full_hi)
    tl.store(OUT + 4 * i + 3, hi)


@pytest.mark.parametrize("R,C", [(32, 16), (16, 32), (16, 16)])
@pytest.mark.parametrize("has_lo,has_hi", [(True, True), (True, False), (False, True), (False, False)])
def test_band_visits_exactly_the_tiles_that_see_keys(R, C, has_lo, has_hi, device):
    """The loop bounds behind "cost grows with the window": every visited tile holds a visible
    (row, col) pair, every visible pair is in a visited tile, and tiles run unmasked only when
    every pair in them is visible. Brute force over random bands."""
    gen = torch.Generator().manual_seed(R * 7 + C + 3 * has_lo + has_hi)
    n = 60
    r0 = torch.randint(0, 8, (n,), generator=gen) * R
    ncols = torch.randint(0, 150, (n,), generator=gen)
    lod = torch.randint(-120, 60, (n,), generator=gen)
    hid = lod + torch.randint(0, 80, (n,), generator=gen)
    out = torch.empty(n, 4, dtype=torch.int32)
    params = [x.to(torch.int32).to(device) for x in (r0, ncols, lod, hid)]
    out = out.to(device)
    _band_probe[(n,)](*params, out, R=R, C=C, HAS_LO=has_lo, HAS_HI=has_hi)
    for i, (lo, full_lo, full_hi, hi) in enumerate(out.tolist()):
        rows = torch.arange(int(r0[i]), int(r0[i]) + R)[:, None]
        cols = torch.arange(int(ncols[i]))[None, :]
        vis = torch.ones(R, int(ncols[i]), dtype=torch.bool)
        if has_lo:
            vis &= cols - rows >= int(lod[i])
        if has_hi:
            vis &= cols - rows <= int(hid[i])
        assert lo % C == 0 and lo <= full_lo <= full_hi <= hi, (i, lo, full_lo, full_hi, hi)
        visited = set(range(lo, hi, C))
        seen = {c - c % C for c in vis.any(0).nonzero().flatten().tolist()}
        assert seen == visited, f"case {i}: visited tiles {sorted(visited)} != tiles with visible keys {sorted(seen)}"
        for start in range(full_lo, full_hi, C):
            assert start % C == 0 and vis[:, start : start + C].all() and start + C <= int(ncols[i]), (i, start)


def test_flash_attn_forward_only_no_grad(device):
    """Inputs without grad: the forward alone, no autograd graph."""
    case = Case(batch=2, seqlen_q=21, seqlen_k=30, causal=True)
    t = make_inputs(case, device, requires_grad=False)
    out = flash_attn_func(t["q"], t["k"], t["v"], causal=True)
    assert not out.requires_grad
    assert_close(out, reference_forward(case, t, True)[0], name="out")


def test_flash_attn_rows_without_keys_are_zero(device):
    """Lq > Lk with causal: the first Lq - Lk queries see nothing -> out 0, lse -inf, zero gradients."""
    case = Case(seqlen_q=40, seqlen_k=10, causal=True)
    t = make_inputs(case, device)
    out, lse = kernel_forward(case, t)
    assert torch.equal(out[:, :30], torch.zeros_like(out[:, :30]))
    assert torch.isneginf(lse[:, :, :30]).all() and torch.isfinite(lse[:, :, 30:]).all()
    (dq,) = torch.autograd.grad(out.sum(), [t["q"]])
    assert torch.equal(dq[:, :30], torch.zeros_like(dq[:, :30]))


@pytest.mark.parametrize("lq,lk", [(0, 5), (5, 0), (0, 0)])
def test_flash_attn_empty_lengths(lq, lk, device):
    """Zero-length queries or keys: empty outputs, or zeros and lse = -inf; gradients are zeros."""
    q = torch.randn(2, lq, 2, 16, device=device, requires_grad=True)
    k = torch.randn(2, lk, 2, 16, device=device, requires_grad=True)
    v = torch.randn(2, lk, 2, 16, device=device, requires_grad=True)
    out, lse = flash_attn_func(q, k, v, causal=True, return_softmax_lse=True)
    assert out.shape == q.shape and lse.shape == (2, 2, lq)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    grads = torch.autograd.grad(out.sum(), [q, k, v], allow_unused=True)
    assert all(g is not None and g.shape == t.shape and not g.any() for g, t in zip(grads, (q, k, v)))


# --------------------------------------------------------------------------------------------
# API surface: packed variants, layouts, errors
# --------------------------------------------------------------------------------------------


def test_packed_variants_match_unpacked(device):
    """qkv/kv-packed layouts (padded and varlen) give the unpacked results and gradients."""
    b, l, h, d = 2, 19, 2, 16
    qkv = torch.randn(b, l, 3, h, d, device=device, requires_grad=True)
    kv = qkv[:, :, 1:].detach().clone().requires_grad_()
    q = qkv[:, :, 0].detach().clone().requires_grad_()
    out = flash_attn_qkvpacked_func(qkv, causal=True)
    ref = attention_ref(*qkv.detach().unbind(2), causal=True)[0]
    assert_close(out, ref, name="qkvpacked")
    (dqkv,) = torch.autograd.grad(out.sum(), [qkv])
    assert dqkv.shape == qkv.shape and not dqkv.isnan().any()
    assert_close(
        flash_attn_kvpacked_func(q, kv, window_size=(3, 2)), attention_ref(q, *kv.unbind(2), window_size=(3, 2))[0]
    )

    cu = torch.tensor([0, 7, 19, 38], device=device, dtype=torch.int32)
    packed = qkv.detach().reshape(b * l, 3, h, d)
    out = flash_attn_varlen_qkvpacked_func(packed, cu, 19, causal=True)
    ref = attention_ref(*packed.unbind(1), causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu)[0]
    assert_close(out, ref, name="varlen qkvpacked")
    qp, kvp = packed[:, 0], packed[:, 1:]
    out = flash_attn_varlen_kvpacked_func(qp, kvp, cu, cu, 19, 19, alibi_slopes=torch.rand(h, device=device))
    assert out.shape == qp.shape


def test_flash_attn_strided_inputs(device):
    """Views with unusual strides (and a non-unit last-dim stride, which is copied) are read correctly."""
    base = torch.randn(2, 4, 23, 32, device=device)  # (B, H, L, D) -> transpose to (B, L, H, D)
    q = base.transpose(1, 2)
    k = torch.randn(2, 23, 2, 64, device=device)[..., ::2]  # last-dim stride 2
    v = torch.randn(2, 2, 23, 32, device=device).transpose(1, 2)
    out = flash_attn_func(q, k, v, causal=True)
    assert_close(out, attention_ref(q, k, v, causal=True)[0], name="strided")


def test_flash_attn_is_deterministic(device):
    """deterministic=True: forward and backward twice are bitwise equal (no atomics anywhere)."""
    case = Case(batch=2, seqlen_q=45, seqlen_k=45, causal=True, nheads=4, nheads_kv=2, deterministic=True)
    t = make_inputs(case, device)
    runs = []
    for _ in range(2):
        out, _lse = kernel_forward(case, t)
        runs.append((out, *torch.autograd.grad(out.sum(), [t["q"], t["k"], t["v"]])))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_long_keys_take_the_two_kernel_backward(device, monkeypatch):
    """deterministic=False beyond ATOMIC_MAX_SEQLEN_K runs the separate dQ kernel: right gradients, and
    bitwise reproducible (no atomics); at or below it, the atomic dQ path (also right)."""
    from longseq.kernels.flash_attn import triton as fa_triton

    monkeypatch.setattr(fa_triton, "ATOMIC_MAX_SEQLEN_K", 40)
    for lk in (40, 45):  # atomic, two-kernel
        case = Case(batch=2, seqlen_q=45, seqlen_k=lk, causal=True, nheads=4, nheads_kv=2, deterministic=False)
        check_case(case, device)
    case = Case(batch=2, seqlen_q=45, seqlen_k=45, causal=True, nheads=4, nheads_kv=2, deterministic=False)
    t = make_inputs(case, device)
    runs = []
    for _ in range(2):
        out, _lse = kernel_forward(case, t)
        runs.append(torch.autograd.grad(out.sum(), [t["q"], t["k"], t["v"]]))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_flash_attn_writes_every_output(device, monkeypatch):
    """Poison the buffers the launchers allocate: anything the kernels forget stays NaN."""
    real_empty, real_empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison(real_empty(*a, **kw)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **kw: poison(real_empty_like(*a, **kw)))
    for case in [
        Case(seqlen_q=37, seqlen_k=20, causal=True, nheads=4, nheads_kv=2),
        Case(lens=((5, 0, 21), (0, 3, 30)), window=(3, 1), headdim=59),
    ]:
        t = make_inputs(case, device)
        out, lse = kernel_forward(case, t)
        grads = torch.autograd.grad(out.sum() + torch.where(lse.isinf(), 0, lse).sum(), [t["q"], t["k"], t["v"]])
        for name, x in [("out", out), ("lse", lse), ("dq", grads[0]), ("dk", grads[1]), ("dv", grads[2])]:
            assert not x.isnan().any(), f"{case.id}: {name} has unwritten (NaN) entries"
    q = torch.randn(3, 2, 4, 16, device=device)
    cache = torch.randn(3, 50, 2, 16, device=device)
    lens = torch.tensor([0, 7, 50], dtype=torch.int32, device=device)
    out = flash_attn_with_kvcache(q, cache, cache.clone(), cache_seqlens=lens, num_splits=4, causal=True)
    assert not out.isnan().any()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"q": torch.randn(1, 4, 2, 8, dtype=torch.float64)}, TypeError, "q must have dtype"),
        ({"q": torch.ones(1, 4, 2, 8, dtype=torch.int32)}, TypeError, "got int32"),
        ({"k": torch.randn(1, 4, 2, 8, dtype=torch.float16)}, TypeError, "share one dtype"),
        ({"q": torch.randn(4, 2, 8)}, ValueError, r"q must be \(batch, seqlen, nheads, headdim\)"),
        (
            {"q": torch.randn(1, 4, 2, 257), "k": torch.randn(1, 4, 2, 257), "v": torch.randn(1, 4, 2, 257)},
            ValueError,
            r"head dim must be in \[1, 256\], got 257",
        ),  # fmt: skip
        ({"k": torch.randn(1, 4, 2, 16)}, ValueError, "share the head dim"),
        ({"q": torch.randn(1, 4, 3, 8)}, ValueError, r"k/v heads \(2\) must divide the number of q heads \(3\)"),
        ({"q": torch.randn(2, 4, 2, 8)}, ValueError, "same batch size, got 2 and 1"),
        ({"v": torch.randn(1, 5, 2, 8)}, ValueError, "k and v must have the same shape"),
        ({"window_size": (-2, 0)}, ValueError, r"window_size entries must be >= -1"),
        ({"window_size": "ab"}, ValueError, "window_size must be a pair of ints"),
        ({"softcap": -1.0}, ValueError, "softcap must be >= 0"),
        ({"softmax_scale": -0.5}, ValueError, "softmax_scale must be a float > 0"),
        ({"alibi_slopes": torch.rand(3)}, ValueError, r"alibi_slopes must have shape \(2,\) or \(1, 2\)"),
        ({"k": torch.randn(1, 4, 2, 8, device="meta")}, ValueError, "all tensors must be on one device"),
        ({"dropout_p": 0.1}, NotImplementedError, "dropout_p=0.1: attention dropout is not implemented"),
        ({"return_attn_probs": True}, NotImplementedError, "return_attn_probs=True is not supported"),
    ],
)
def test_flash_attn_bad_input(kwargs, error, match):
    args = {"q": torch.randn(1, 4, 2, 8), "k": torch.randn(1, 4, 2, 8), "v": torch.randn(1, 4, 2, 8), **kwargs}
    with pytest.raises(error, match=match):
        flash_attn_func(**args)


def _cu(*vals: int, dtype=torch.int32) -> torch.Tensor:
    return torch.tensor(vals, dtype=dtype)


@pytest.mark.parametrize(
    ("cu_q", "cu_k", "max_q", "error", "match"),
    [
        (_cu(0, 3, 6, dtype=torch.int64), _cu(0, 3, 6), 3, ValueError, "cu_seqlens_q must be a 1-D int32 tensor"),
        (_cu(0, 3, 5), _cu(0, 3, 6), 3, ValueError, "cu_seqlens_q must end at the total number of tokens 6, got 5"),
        (_cu(1, 3, 6), _cu(0, 3, 6), 3, ValueError, "cu_seqlens_q must start at 0, got 1"),
        (_cu(0, 4, 3, 6), _cu(0, 2, 4, 6), 3, ValueError, "must be non-decreasing"),
        (_cu(0, 1, 6), _cu(0, 3, 6), 3, ValueError, r"max_seqlen_q=3 is smaller than the longest sequence .* \(5\)"),
        (_cu(0, 3, 6), _cu(0, 6), 3, ValueError, "same number of sequences, got 2 and 1"),
        (_cu(0, 3, 6), None, 3, ValueError, "must be given together"),
        (_cu(0, 3, 6), _cu(0, 3, 6), -1, ValueError, "max_seqlen_q must be an int >= 0"),
    ],
)
def test_flash_attn_varlen_bad_input(cu_q, cu_k, max_q, error, match):
    q = k = v = torch.randn(6, 2, 8)
    with pytest.raises(error, match=match):
        flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, 3)


def test_flash_attn_varlen_block_table_not_supported():
    q = torch.randn(6, 2, 8)
    cu = _cu(0, 6)
    with pytest.raises(NotImplementedError, match="block_table"):
        flash_attn_varlen_func(q, q, q, cu, cu, 6, 6, block_table=cu)


def test_cu_seqlens_values_checked_once_per_tensor_version(monkeypatch):
    """The value checks sync with the device, so they run once per cu_seqlens tensor (and version)."""
    from longseq.kernels.flash_attn import checks

    calls = []
    real = checks._cu_values
    monkeypatch.setattr(checks, "_cu_values", lambda *a: (calls.append(a[0]), real(*a)))
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # reference path: only the checks matter here
    q = torch.randn(6, 2, 8)
    cu = _cu(0, 3, 6)
    for _ in range(3):
        flash_attn_varlen_func(q, q, q, cu, cu, 3, 3)
    assert calls == ["cu_seqlens_q", "cu_seqlens_k"]
    cu[1] = 5  # in-place edit bumps the version: checked again, and now too long for max_seqlen 3
    with pytest.raises(ValueError, match="smaller than the longest"):
        flash_attn_varlen_func(q, q, q, cu, cu, 3, 3)


# --------------------------------------------------------------------------------------------
# decode (flash_attn_with_kvcache)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeCase:
    batch: int = 3
    seqlen_q: int = 1
    cache_len: int = 70
    nheads: int = 4
    nheads_kv: int = 2
    headdim: int = 32
    new: int = 0
    splits: int = 0
    causal: bool = True
    window: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    alibi: bool = False
    dtype: torch.dtype = torch.float32

    @property
    def id(self) -> str:
        return (
            f"b{self.batch}-q{self.seqlen_q}-cache{self.cache_len}-h{self.nheads}:{self.nheads_kv}-d{self.headdim}"
            f"-new{self.new}-splits{self.splits}{'-causal' if self.causal else ''}"
            f"{f'-win{self.window[0]},{self.window[1]}' if self.window != (-1, -1) else ''}"
            f"{f'-cap{self.softcap:g}' if self.softcap else ''}{'-alibi' if self.alibi else ''}"
            f"-{str(self.dtype).removeprefix('torch.')}"
        )


DECODE_CASES = [
    DecodeCase(),
    DecodeCase(new=1, splits=3),
    DecodeCase(seqlen_q=4, new=4, splits=1, nheads=8, nheads_kv=1, headdim=59),
    DecodeCase(seqlen_q=16, new=2, splits=5, window=(20, -1), alibi=True),
    DecodeCase(seqlen_q=3, causal=False, window=(9, 2), softcap=3.0, splits=2, nheads=2, nheads_kv=2),
    DecodeCase(batch=2, seqlen_q=9, cache_len=40, new=9, splits=0, causal=False, alibi=True),
    DecodeCase(batch=2, seqlen_q=1, cache_len=64, new=1, splits=4, dtype=torch.bfloat16),
]


def check_decode(case: DecodeCase, device) -> None:
    b, hk, d = case.batch, case.nheads_kv, case.headdim
    q = torch.randn(b, case.seqlen_q, case.nheads, d, device=device).to(case.dtype)
    k_cache = torch.randn(b, case.cache_len, hk, d, device=device).to(case.dtype)
    v_cache = torch.randn(b, case.cache_len, hk, d, device=device).to(case.dtype)
    lens = torch.randint(0, case.cache_len - case.new + 1, (b,), device=device, dtype=torch.int32)
    lens[0] = 0  # an empty cache (with causal and no new keys: no key at all)
    k_new = torch.randn(b, case.new, hk, d, device=device).to(case.dtype) if case.new else None
    v_new = torch.randn(b, case.new, hk, d, device=device).to(case.dtype) if case.new else None
    slopes = torch.rand(b, case.nheads, device=device) * 0.3 if case.alibi else None
    k_expect, v_expect = k_cache.clone(), v_cache.clone()
    for i in range(b):
        n = int(lens[i])
        if case.new:
            k_expect[i, n : n + case.new], v_expect[i, n : n + case.new] = k_new[i], v_new[i]
    out, lse = flash_attn_with_kvcache(
        q, k_cache, v_cache, k_new, v_new, cache_seqlens=lens, causal=case.causal, window_size=case.window,
        softcap=case.softcap, alibi_slopes=slopes, num_splits=case.splits, return_softmax_lse=True,
    )  # fmt: skip
    assert torch.equal(k_cache, k_expect) and torch.equal(v_cache, v_expect), "in-place append"
    kw = dict(
        causal=case.causal, window_size=case.window, softcap=case.softcap, alibi_slopes=slopes,
        seqlens_k=lens + case.new,
    )  # fmt: skip
    ref = attention_ref(q, k_expect, v_expect, **kw)
    low = attention_ref(q, k_expect, v_expect, upcast=False, **kw) if case.dtype != torch.float32 else (None, None)
    assert out.dtype == case.dtype
    assert_close(out, ref[0], low[0], name="out")
    assert_lse_close(lse, ref[1], low[1])


@interpreter_grid
@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda c: c.id)
def test_flash_attn_with_kvcache_matches_reference(case, device):
    check_decode(case, device)


def test_kvcache_int_seqlens_and_full_cache(device):
    q = torch.randn(2, 2, 2, 16, device=device)
    k = torch.randn(2, 30, 1, 16, device=device)
    v = torch.randn(2, 30, 1, 16, device=device)
    full = flash_attn_with_kvcache(q, k, v, causal=True)
    assert_close(full, attention_ref(q, k, v, causal=True)[0], name="full cache")
    part = flash_attn_with_kvcache(q, k, v, cache_seqlens=11)
    assert_close(part, attention_ref(q, k[:, :11], v[:, :11])[0], name="int cache_seqlens")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": torch.randn(2, 1, 1, 8), "cache_seqlens": 1}, ValueError, "k and v must be given together"),
        ({"k": torch.randn(2, 1, 1, 8), "v": torch.randn(2, 1, 1, 8)}, ValueError, "cache_seqlens is required"),
        ({"cache_seqlens": torch.tensor([1, 2])}, ValueError, "cache_seqlens must be an int or an int32 tensor"),
        ({"cache_seqlens": torch.tensor([1, 11], dtype=torch.int32)}, ValueError, r"must lie in \[0, 10\]"),
        (
            {"k": torch.randn(2, 3, 2, 8), "v": torch.randn(2, 3, 2, 8), "cache_seqlens": 1},
            ValueError,
            r"k must be \(batch, seqlen_new, nheads_k, headdim\)",
        ),  # fmt: skip
        ({"num_splits": -1}, ValueError, "num_splits must be an int >= 0"),
        ({"rotary_cos": torch.randn(4, 4)}, NotImplementedError, "rotary_cos is not supported"),
        ({"cache_batch_idx": torch.zeros(2, dtype=torch.int32)}, NotImplementedError, "cache_batch_idx"),
        ({"block_table": torch.zeros(2, 1, dtype=torch.int32)}, NotImplementedError, "block_table"),
    ],
)
def test_kvcache_bad_input(kwargs, error, match):
    q, k_cache, v_cache = torch.randn(2, 1, 2, 8), torch.randn(2, 10, 1, 8), torch.randn(2, 10, 1, 8)
    with pytest.raises(error, match=match):
        flash_attn_with_kvcache(q, k_cache, v_cache, **kwargs)


# --------------------------------------------------------------------------------------------
# run modes, custom ops, torch.compile
# --------------------------------------------------------------------------------------------


def test_flash_attn_runs_the_triton_path(device, monkeypatch):
    """Proof that these tests exercise Triton (the interpreter on CPU), not the reference fallback."""
    from longseq.kernels.flash_attn import interface

    def _fail(*args, **kwargs):
        raise AssertionError("the reference fallback ran instead of the Triton kernel")

    monkeypatch.setattr(interface, "attention_ref", _fail)
    q = torch.randn(1, 5, 2, 16, device=device)
    cu = torch.tensor([0, 5], dtype=torch.int32, device=device)
    assert flash_attn_func(q, q, q).shape == q.shape
    assert flash_attn_varlen_func(q[0], q[0], q[0], cu, cu, 5, 5).shape == q[0].shape
    assert flash_attn_with_kvcache(q, q, q).shape == q.shape


def test_autotuning_is_per_length_bucket(monkeypatch):
    """One autotuner per (kernel, head dim, dtype, length bucket): lengths in one bucket share a tuning
    (no retuning once warm), short and long sequences get their own (their best tiles differ)."""
    from longseq.kernels.flash_attn import triton as fa

    monkeypatch.setattr(tuning, "interpreting", lambda: False)
    monkeypatch.setattr(tuning, "_TUNED", {})
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "1")
    assert [tuning.length_bucket(n) for n in (1, 1024, 1025, 4096, 4097, 1 << 20)] == [0, 0, 1, 1, 2, 2]

    def tuned(seqlen: int) -> object:
        kernel, meta = tuning.launcher("fwd", fa._fwd_kernel, 128, torch.bfloat16, seqlen)
        assert meta == {}
        return kernel

    assert tuned(384) is tuned(512) is tuned(1024)
    assert tuned(2048) is tuned(4096) is not tuned(512)
    assert tuned(65536) is not tuned(4096)
    assert len(tuning._TUNED) == 3


def test_flash_attn_cpu_without_interpreter_uses_reference(monkeypatch):
    """Plain CPU tensors (no interpreter) take the reference path, with gradients and the lse."""
    from longseq.kernels.flash_attn import ops

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(ops._triton, "flash_attn_fwd", lambda *a: pytest.fail("Triton ran on plain CPU"))
    case = Case(seqlen_q=9, seqlen_k=12, causal=True, alibi="head", dtype=torch.bfloat16)
    t = make_inputs(case, "cpu")
    out, lse = kernel_forward(case, t)
    ref_out, ref_lse = reference_forward(case, t, True)
    assert out.dtype == torch.bfloat16
    assert_close(out, ref_out, reference_forward(case, t, False)[0], name="out")
    assert torch.equal(lse, ref_lse)
    out.float().sum().backward()
    assert t["q"].grad is not None
    q = torch.randn(2, 1, 2, 8)
    cache = torch.randn(2, 6, 2, 8)
    assert_close(
        flash_attn_with_kvcache(q, cache, cache, cache_seqlens=4), attention_ref(q, cache[:, :4], cache[:, :4])[0]
    )


def test_flash_attn_opcheck(device):
    """torch.library's consistency checks (schema, fake impls, autograd registration) of the three ops."""
    b, l, h, d = 1, 9, 2, 16
    q = torch.randn(b, l, h, d, device=device, requires_grad=True)
    k = torch.randn(b, l, 1, d, device=device, requires_grad=True)
    v = torch.randn(b, l, 1, d, device=device, requires_grad=True)
    slopes = torch.rand(h, device=device)
    torch.library.opcheck(
        torch.ops.longseq.flash_attn_fwd.default, (q, k, v, None, None, l, l, 0.25, 3, 0, 0.0, slopes, False)
    )
    cu = torch.tensor([0, 4, 9], dtype=torch.int32, device=device)
    args = (q[0], k[0], v[0], cu, cu, 5, 5, 0.25, -1, 0, 2.0, None, True)
    torch.library.opcheck(torch.ops.longseq.flash_attn_fwd.default, args)
    out, lse = torch.ops.longseq.flash_attn_fwd(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    bwd_args = (torch.randn_like(out), torch.randn_like(lse), q[0].detach(), k[0].detach(), v[0].detach(), out, lse)
    torch.library.opcheck(torch.ops.longseq.flash_attn_bwd.default, (*bwd_args, *args[3:]))
    lens = torch.tensor([6], dtype=torch.int32, device=device)
    torch.library.opcheck(
        torch.ops.longseq.flash_attn_decode.default,
        (q.detach()[:, :2], k.detach(), v.detach(), lens, 0.25, -1, 0, 0.0, None, 2),
    )


@pytest.mark.slow
def test_flash_attn_torch_compile_fullgraph(device):
    """A small attention block using the op compiles without graph breaks; values and gradients match."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    dim, heads, kv_heads = 32, 4, 2
    proj = torch.nn.Linear(dim, (heads + 2 * kv_heads) * 8).to(device)

    def block(x, attn):
        qkv = proj(x).view(*x.shape[:2], heads + 2 * kv_heads, 8)
        q, k, v = qkv.split([heads, kv_heads, kv_heads], dim=2)
        return attn(q, k, v).reshape(*x.shape[:2], heads * 8).square().mean()

    def ours(q, k, v):
        return flash_attn_func(q, k, v, causal=True, window_size=(6, 0))

    def ref(q, k, v):
        return attention_ref(q, k, v, causal=True, window_size=(6, 0))[0]

    x = torch.randn(2, 19, dim, device=device, requires_grad=True)
    compiled = torch.compile(lambda x: block(x, ours), fullgraph=True, backend=compile_backend())
    loss = compiled(x)
    (gx,) = torch.autograd.grad(loss, [x])
    ref_loss = block(x, ref)
    (rgx,) = torch.autograd.grad(ref_loss, [x])
    assert_close(loss, ref_loss, name="loss")
    assert_close(gx, rgx, name="dx")


def test_num_splits_heuristic():
    cpu = torch.device("cpu")
    assert decode.num_splits_heuristic(64, 100_000, cpu) == 1  # plenty of programs already
    assert decode.num_splits_heuristic(1, 100, cpu) == 1  # short cache: one split
    assert decode.num_splits_heuristic(1, 100_000, cpu) == 4  # 2 x (2 "SMs" on CPU)
    assert 1 <= decode.num_splits_heuristic(1, 10**9, cpu) <= 64


def test_case_ids_are_unique():
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids))
    assert replace(Case(), causal=True).id != Case().id
