"""Mamba kernels and layers benchmark (bf16 activations): selective scan, causal conv1d, SSD, and a
Mamba-2 language model's training step.

Parts (each under its own wall-clock budget; cases past it are listed in ``extra["skipped"]``):

1. **Selective scan** (Mamba-1), B=2, D=1536, N=16, per-token B/C (G=1), z, D, delta bias + softplus,
   L = 2K..64K: ours vs ``torch.compile`` of the same math written with PyTorch's
   ``associative_scan`` (``torch_compiled``; its (B, D, N, L) fp32 intermediates limit it to
   L <= 16K). Effective GB/s and the ratio to the HBM floor: the bytes the pass must move at least
   (below) divided by the copy bandwidth measured in the same run. Target: within 3x of the floor.
2. **Causal conv1d**, B=2, D=1536, W=4, SiLU, L = 2K..32K: ours vs ``F.conv1d`` (cuDNN) + SiLU.
3. **SSD** (Mamba-2), B=1, H in (24, 64), P=64, N=128, G=1, chunk 256, L = 2K..64K: ours vs our
   flash attention (causal, the same H heads of dim 64) at the same L, and the crossover length
   where the SSD becomes faster. With ``fla`` (flash-linear-attention's ``fla-core``) importable, also its
   SSD-equivalent kernel, ``chunk_simple_gla`` on the inputs :func:`ssd_as_simple_gla` maps (``fla_simple_gla``;
   its output checked against ours per length); fla 0.6 refuses that gated backward on Hopper with
   Triton < 3.7.1, which lands in ``errors``. Without fla, ``extra["fla"]`` says why.
4. **LM training step** (forward + backward of the next-token loss, autocast bf16, byte vocabulary):
   a 24-layer Mamba-2 LM (d_model 768, no MLP) vs a 12-layer Transformer with flash attention and
   SwiGLU MLPs (attention + MLP = two Mamba layers; parameter counts in ``extra``), L = 2K..64K at
   32K tokens per step (64K at L=64K).
5. **Packing**: the Mamba-2 LM's training step on packed vs padded batches of mixed lengths
   (L_max 4K and 16K, lengths evenly spread over (0, L_max], so half of the padded tokens are
   padding): the ratio is ``padded_ms / packed_ms`` for the same real tokens. Target: >= 2x.

Run a subset with ``LONGSEQ_MAMBA_PARTS=scan,ssd`` (names: scan, conv, ssd, lm, packing).

Minimum bytes (elt = 2 for bf16; BDL = B*D*L, BNL = B*G*N*L): selective scan fwd reads u, delta, z,
B, C and writes out = ``elt * (4 BDL + 2 BNL)``; fwd+bwd adds reading u, delta, z, dout, B, C and
writing du, ddelta, dz, dB, dC = ``elt * (11 BDL + 6 BNL)`` in all. Conv fwd ``2 BDL elt``, fwd+bwd
``5 BDL elt``. SSD fwd reads x, dt, B, C and writes y; fwd+bwd ``elt * (7 BLHP + 6 BLGN + 3 BLH)``.
Ratios in the JSON are ``baseline_ms / ours_ms`` (above 1: ours faster).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import Record, bench, measure_copy_bandwidth, parts_from_env, require_cuda

TOPIC = "mamba"
OURS = "longseq"
COMPILED = "torch_compiled"
CONV = "torch_conv1d"
ATTN = "flash_attn"
TRANSFORMER = "transformer_flash"
PADDED = "mamba2_padded"
FLA = "fla_simple_gla"
BASELINES = [COMPILED, CONV, ATTN, FLA, TRANSFORMER, PADDED]
DTYPE = torch.bfloat16
ELT = 2
#: Wall-clock budget per part (seconds); all parts take about 10 minutes on an H100 (compiling the PyTorch
#: scan and fla's autotuning included), so a device job may run them as two groups (``LONGSEQ_MAMBA_PARTS``).
BUDGET_S = {"scan": 200.0, "conv": 25.0, "ssd": 200.0, "lm": 120.0, "packing": 70.0}
#: Comma-separated subset of the parts to run (default: all), e.g. ``LONGSEQ_MAMBA_PARTS=scan,ssd``.
PARTS_ENV = "LONGSEQ_MAMBA_PARTS"
FLOOR_TARGET = 3.0
PACKING_TARGET = 2.0
LENGTHS = (2048, 4096, 8192, 16384, 32768, 65536)
# Problem sizes (module constants so a smoke run can shrink them).
SCAN_SHAPE = {"B": 2, "D": 1536, "N": 16}
CONV_SHAPE = {"B": 2, "D": 1536, "W": 4}
SSD_SHAPE = {"B": 1, "P": 64, "N": 128, "G": 1, "chunk": 256}
SSD_HEADS = (24, 64)
LM_SHAPE = {"dim": 768, "vocab": 256, "depth": 24, "heads": 12, "tokens": 32768}


def _log(msg: str) -> None:
    print(f"[{TOPIC}] {msg}", file=sys.stderr)


class Part:
    """Records, errors and skipped cases of one part, with its wall-clock budget."""

    def __init__(self, name: str, copy_gbps: float) -> None:
        self.name, self.copy_gbps = name, copy_gbps
        self.start = time.perf_counter()
        self.records: list[Record] = []
        self.errors: list[str] = []
        self.skipped: list[str] = []

    def over_budget(self, label: str) -> bool:
        if time.perf_counter() - self.start > BUDGET_S[self.name]:
            self.skipped.append(f"{self.name} {label}: wall-clock budget of {BUDGET_S[self.name]:.0f}s used")
            return True
        return False

    def time(
        self, name: str, shape: dict[str, int], pass_: str, fn: Callable[[], Any], nbytes: int | None = None, **extra
    ) -> Record | None:
        """Time ``fn``; a failure (OOM included) is logged in ``errors`` and returns None."""
        label = f"{self.name} {name} {pass_} {shape}"
        try:
            ms = bench(fn)
        except Exception as exc:  # one failing case must not lose the others
            self.errors.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
            torch.cuda.empty_cache()
            return None
        rec = Record(TOPIC, name, dict(shape), "bfloat16", pass_, ms, nbytes, extra=dict(extra, part=self.name))
        if nbytes is not None:
            floor_ms = nbytes / (self.copy_gbps * 1e9) * 1e3
            rec.extra.update(
                floor_ms=floor_ms, ratio_to_floor=ms / floor_ms, frac_copy_bw=(rec.gbps or 0) / self.copy_gbps
            )
        self.records.append(rec)
        _log(f"{label}: {ms:.3f} ms" + (f" ({rec.extra['ratio_to_floor']:.2f}x floor)" if nbytes else ""))
        return rec


def _fwd_and_grad(fn: Callable[..., torch.Tensor], leaves: list[torch.Tensor], dout: torch.Tensor):
    """``(forward-only callable on detached inputs, forward+backward callable)``."""
    detached = [t.detach() for t in leaves]
    return (lambda: fn(*detached)), (lambda: torch.autograd.grad(fn(*leaves), leaves, dout))


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12)).item()


# --------------------------------------------------------------------------------------------
# 1. selective scan
# --------------------------------------------------------------------------------------------


def scan_inputs(B: int, D: int, N: int, L: int, device: torch.device) -> list[torch.Tensor]:
    """``[u, delta, A, B, C, D, z, delta_bias]`` (activations bf16, parameters fp32), requiring grad."""
    g = torch.Generator(device=device).manual_seed(0)
    r = lambda *s, dt=DTYPE: torch.randn(*s, device=device, generator=g).to(dt)  # noqa: E731
    ts = [
        r(B, D, L),
        r(B, D, L) - 1,
        -(torch.rand(D, N, device=device, generator=g) + 0.5),
        r(B, 1, N, L),
        r(B, 1, N, L),
        r(D, dt=torch.float32),
        r(B, D, L),
        r(D, dt=torch.float32) * 0.1,
    ]
    return [t.requires_grad_() for t in ts]


def ours_scan(u, delta, A, B, C, D, z, bias) -> torch.Tensor:
    from longseq.kernels.selective_scan import selective_scan_fn

    return selective_scan_fn(u, delta, A, B, C, D, z, bias, delta_softplus=True)


def torch_scan(u, delta, A, B, C, D, z, bias) -> torch.Tensor:
    """The same scan in PyTorch: materialised (B, D, N, L) decays and inputs, ``associative_scan``."""
    from torch._higher_order_ops.associative_scan import associative_scan

    dt = F.softplus(delta.float() + bias[:, None])  # (B, D, L)
    dA = torch.exp(dt[:, :, None, :] * A[None, :, :, None])  # (B, D, N, L)
    dBu = (dt * u.float())[:, :, None, :] * B.float()  # (B, D, N, L)
    mode = "pointwise" if u.is_cuda else "generic"  # pointwise (one fused kernel) needs CUDA
    _, h = associative_scan(lambda x, y: (x[0] * y[0], y[0] * x[1] + y[1]), (dA, dBu), dim=3, combine_mode=mode)
    y = (h * C.float()).sum(2) + D[:, None] * u.float()
    return (y * F.silu(z.float())).to(u.dtype)


def scan_bytes(B: int, D: int, N: int, L: int, pass_: str) -> int:
    bdl, bnl = B * D * L, B * N * L
    return ELT * (4 * bdl + 2 * bnl if pass_ == "fwd" else 11 * bdl + 6 * bnl)


def bench_scan(
    part: Part, lengths: tuple[int, ...], compiled_max_len: int, compiled_bwd_max_len: int
) -> dict[str, Any]:
    """Our scan at every length first, then the compiled PyTorch scan under the part's budget (forward
    up to ``compiled_max_len``, forward+backward up to ``compiled_bwd_max_len``: building and running its
    backward took minutes at L=2048 on an H100 and used up the budget before our longer lengths)."""
    dev = require_cuda()
    B, D, N = SCAN_SHAPE["B"], SCAN_SHAPE["D"], SCAN_SHAPE["N"]
    check: dict[str, Any] = {}
    compiled = None
    try:
        torch._dynamo.reset()
        # Static shapes (one compile per length): with dynamic=True, Dynamo's fake-tensor pass fails on
        # associative_scan (torch 2.11; the first H200 run's errors), which dropped this baseline.
        compiled = torch.compile(torch_scan, dynamic=False)
    except Exception as exc:
        part.errors.append(f"scan compile: {type(exc).__name__}: {exc}")

    def inputs(L: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        return scan_inputs(B, D, N, L, dev), torch.randn(B, D, L, device=dev, dtype=DTYPE)

    def time_case(
        name: str, fn: Callable, L: int, t: list[torch.Tensor], dout: torch.Tensor, passes: tuple[str, ...]
    ) -> None:
        steps = dict(zip(("fwd", "fwd+bwd"), _fwd_and_grad(fn, t, dout)))
        for pass_ in passes:
            part.time(name, {"B": B, "D": D, "N": N, "L": L}, pass_, steps[pass_], scan_bytes(B, D, N, L, pass_))

    for L in lengths:
        t, dout = inputs(L)
        time_case(OURS, ours_scan, L, t, dout, ("fwd", "fwd+bwd"))
        del t, dout
        torch.cuda.empty_cache()
    for L in lengths:
        if compiled is None:
            break
        if compiled_max_len < L:
            part.skipped.append(f"scan {COMPILED} L={L}: its (B, D, N, L) fp32 intermediates exceed GPU memory")
            continue
        if part.over_budget(f"{COMPILED} L={L}"):
            break
        t, dout = inputs(L)
        if not check:
            try:
                check = {"L": L, "rel_err_vs_torch_compiled": _rel_err(ours_scan(*t), compiled(*t))}
                _log(f"scan check at L={L}: {check}")
            except Exception as exc:  # a baseline that does not compile is dropped, not retried
                part.errors.append(f"scan {COMPILED} (dropped): {type(exc).__name__}: {str(exc)[:300]}")
                break
        passes = ("fwd", "fwd+bwd")
        if compiled_bwd_max_len < L:
            passes = ("fwd",)
            part.skipped.append(
                f"scan {COMPILED} fwd+bwd L={L}: the compiled associative_scan backward takes seconds per "
                f"call (timed at L<={compiled_bwd_max_len} only)"
            )
        time_case(COMPILED, compiled, L, t, dout, passes)
        del t, dout
        torch.cuda.empty_cache()
    return check


# --------------------------------------------------------------------------------------------
# 2. causal conv1d
# --------------------------------------------------------------------------------------------


def bench_conv(part: Part, lengths: tuple[int, ...]) -> None:
    from longseq.kernels.causal_conv1d import causal_conv1d_fn

    dev = require_cuda()
    B, D, W = CONV_SHAPE["B"], CONV_SHAPE["D"], CONV_SHAPE["W"]
    ours = lambda x, w, b: causal_conv1d_fn(x, w, b, activation="silu")  # noqa: E731
    cudnn = lambda x, w, b: F.silu(F.conv1d(x, w[:, None], b, padding=W - 1, groups=D)[..., : x.shape[-1]])  # noqa: E731
    for L in lengths:
        if part.over_budget(f"L={L}"):
            break
        x = torch.randn(B, D, L, device=dev, dtype=DTYPE, requires_grad=True)
        w = (torch.randn(D, W, device=dev, dtype=DTYPE) / 2).requires_grad_()
        b = torch.randn(D, device=dev, dtype=DTYPE, requires_grad=True)
        dout = torch.randn_like(x)
        shape = {"B": B, "D": D, "W": W, "L": L}
        for name, fn in ((OURS, ours), (CONV, cudnn)):
            fwd, fwd_bwd = _fwd_and_grad(fn, [x, w, b], dout)
            part.time(name, shape, "fwd", fwd, 2 * B * D * L * ELT)
            part.time(name, shape, "fwd+bwd", fwd_bwd, 5 * B * D * L * ELT)


# --------------------------------------------------------------------------------------------
# 3. SSD vs attention
# --------------------------------------------------------------------------------------------


def ssd_as_simple_gla(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor, dt_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mamba-2's SSD written as flash-linear-attention's simple GLA (head-wise scalar decay), its
    SSD-equivalent kernel: with ``dt = softplus(dt + dt_bias)``, ``h_t = exp(dt_t A) h_{t-1} + (dt_t B_t) x_t^T``
    and ``y_t = C_t^T h_t`` are ``S_t = exp(g_t) S_{t-1} + k_t v_t^T``, ``o_t = q_t^T S_t`` with ``q = C``,
    ``k = dt B``, ``v = x``, ``g = dt A`` and scale 1 (the ``G`` groups of B/C repeated over their heads).
    Returns ``(q, k, v, g)`` in fla's ``(B, L, H, ...)`` layout, ``g`` in fp32."""
    rep = x.shape[2] // Bm.shape[2]
    dt = F.softplus(dt.float() + dt_bias.float())  # (B, L, H)
    q = Cm.repeat_interleave(rep, dim=2)
    k = (Bm.repeat_interleave(rep, dim=2).float() * dt[..., None]).to(x.dtype)
    return q, k, x, dt * A.float()


def fla_ssd(x, dt, A, Bm, Cm, D, bias) -> torch.Tensor:
    """The SSD through ``fla.ops.simple_gla.chunk_simple_gla`` (plus the ``D`` skip term)."""
    from fla.ops.simple_gla import chunk_simple_gla

    q, k, v, g = ssd_as_simple_gla(x, dt, A, Bm, Cm, bias)
    o, _ = chunk_simple_gla(q, k, v, g=g, scale=1.0)
    return o + (D[:, None] * x).to(o.dtype)


def bench_ssd(part: Part, heads: tuple[int, ...], lengths: tuple[int, ...]) -> dict[str, Any]:
    from longseq.kernels.flash_attn import flash_attn_func
    from longseq.kernels.ssd import mamba_chunk_scan_combined, ssd_chunked_ref

    dev = require_cuda()
    B, P, N, G, Q = (SSD_SHAPE[k] for k in ("B", "P", "N", "G", "chunk"))
    with_fla = fla_status().startswith("installed")
    check: dict[str, Any] = {}
    for L, H in itertools.product(lengths, heads):  # lengths outer: a spent budget cuts the longest, not a head
        if part.over_budget(f"H={H} L={L}"):
            break
        shape = {"B": B, "H": H, "P": P, "N": N, "L": L}
        g = torch.Generator(device=dev).manual_seed(0)
        r = lambda *s, g=g: torch.randn(*s, device=dev, generator=g, dtype=DTYPE)  # noqa: E731
        ssd_in = [
            r(B, L, H, P),
            r(B, L, H) - 1,
            -(torch.rand(H, device=dev) + 0.5),
            r(B, L, G, N) / 4,
            r(B, L, G, N) / 4,
            torch.ones(H, device=dev),
            torch.zeros(H, device=dev),
        ]
        ssd_in = [t.requires_grad_() for t in ssd_in]

        def ssd(x, dt, A, Bm, Cm, D, bias):
            return mamba_chunk_scan_combined(x, dt, A, Bm, Cm, Q, D=D, dt_bias=bias, dt_softplus=True)

        if not check:
            try:
                ref = ssd_chunked_ref(
                    *[t.detach().float() for t in ssd_in[:5]],
                    Q,
                    D=ssd_in[5].detach(),
                    dt_bias=ssd_in[6].detach(),
                    dt_softplus=True,
                )
                check = {"H": H, "L": L, "rel_err_vs_chunked_ref_fp32": _rel_err(ssd(*ssd_in), ref)}
                _log(f"ssd check: {check}")
            except Exception as exc:
                part.errors.append(f"ssd check: {type(exc).__name__}: {exc}")
        qkv = [r(B, L, H, P).requires_grad_() for _ in range(3)]
        attn = lambda q, k, v: flash_attn_func(q, k, v, causal=True)  # noqa: E731
        nbytes = {
            "fwd": ELT * (2 * B * L * H * P + 2 * B * L * G * N + B * L * H),
            "fwd+bwd": ELT * (7 * B * L * H * P + 6 * B * L * G * N + 3 * B * L * H),
        }
        variants = [(OURS, ssd, ssd_in), (ATTN, attn, qkv)]
        if with_fla:
            variants.append((FLA, fla_ssd, ssd_in))
            if f"{FLA} L={L}" not in check:  # its output against ours, once per length
                try:
                    with torch.no_grad():
                        check[f"{FLA} L={L}"] = _rel_err(fla_ssd(*ssd_in), ssd(*ssd_in))
                except Exception as exc:
                    part.errors.append(f"ssd {FLA} check: {type(exc).__name__}: {str(exc)[:300]}")
        for name, fn, leaves in variants:
            fwd, fwd_bwd = _fwd_and_grad(fn, leaves, torch.randn(B, L, H, P, device=dev, dtype=DTYPE))
            part.time(name, shape, "fwd", fwd, nbytes["fwd"] if name == OURS else None)
            part.time(name, shape, "fwd+bwd", fwd_bwd, nbytes["fwd+bwd"] if name == OURS else None)
        del ssd_in, qkv
        torch.cuda.empty_cache()
    return check


def crossover(records: list[Record], heads: tuple[int, ...]) -> dict[str, Any]:
    """Per (H, pass): the smallest measured L where the SSD beats attention, and a log-linear estimate
    of where ``attention_ms / ssd_ms`` crosses 1 between the two measured lengths around it."""
    out: dict[str, Any] = {}
    for H in heads:
        for pass_ in ("fwd", "fwd+bwd"):
            by_len = {}
            for name in (OURS, ATTN):
                for r in records:
                    if r.name == name and r.pass_ == pass_ and r.shape.get("H") == H and "P" in r.shape:
                        by_len.setdefault(r.shape["L"], {})[name] = r.ms
            pts = sorted((L, v[ATTN] / v[OURS]) for L, v in by_len.items() if len(v) == 2)
            est, first = None, next((L for L, ratio in pts if ratio >= 1.0), None)
            for (l0, r0), (l1, r1) in zip(pts, pts[1:]):
                if r0 < 1.0 <= r1:
                    est = math.exp(
                        math.log(l0)
                        + (0 - math.log(r0)) * (math.log(l1) - math.log(l0)) / (math.log(r1) - math.log(r0))
                    )
            if pts and pts[0][1] >= 1.0:
                est = f"<= {pts[0][0]} (the SSD is faster at every measured length)"
            out[f"H={H} {pass_}"] = {
                "first_measured_L_ssd_faster": first,
                "estimated_crossover_L": est,
                "attn_over_ssd": dict(pts),
            }
    return out


# --------------------------------------------------------------------------------------------
# 4. language-model training step
# --------------------------------------------------------------------------------------------


def build_lm(kind: str, depth: int) -> torch.nn.Module:
    """An LM of width ``LM_SHAPE["dim"]`` over byte tokens: ``"mamba2"`` (``depth`` Mamba-2 layers,
    no MLP) or ``"transformer"`` (``depth // 2`` attention + SwiGLU blocks, flash attention)."""
    from longseq.core.backbone import BackboneConfig
    from longseq.core.models import LanguageModel

    common = {"vocab_size": LM_SHAPE["vocab"], "dim": LM_SHAPE["dim"]}
    if kind == "mamba2":
        kw = {"mamba2": {"d_state": SSD_SHAPE["N"], "headdim": SSD_SHAPE["P"], "chunk_size": SSD_SHAPE["chunk"]}}
        cfg = BackboneConfig(**common, depth=depth, mixer_pattern="mamba2", mixer_kwargs=kw, mlp="none")
    else:
        kw = {"attention": {"num_heads": LM_SHAPE["heads"], "causal": True, "backend": "flash"}}
        cfg = BackboneConfig(**common, depth=max(1, depth // 2), mixer_pattern="attention", mixer_kwargs=kw)
    return LanguageModel(cfg).to(require_cuda())


def train_step(model: torch.nn.Module, batch: Any, labels: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(require_cuda().type, dtype=torch.bfloat16):
            loss = model(batch, labels=labels)
        loss.backward()

    return step


def mixed_lengths(L_max: int, tokens: int) -> list[int]:
    """``n = 2 * tokens / L_max`` lengths evenly spread over ``(0, L_max]`` (mean ``L_max / 2``, about
    ``tokens`` in all), so exactly half of a padded ``(n, L_max)`` batch is padding."""
    n = max(2, round(2 * tokens / L_max))
    return [max(1, round(L_max * (i + 0.5) / n)) for i in range(n)]


def bench_lm(part: Part, lengths: tuple[int, ...], depth: int) -> dict[str, Any]:
    """Training step of the Mamba-2 LM vs the Transformer LM at every length (``tokens`` per step)."""
    dev = require_cuda()
    V, tokens = LM_SHAPE["vocab"], LM_SHAPE["tokens"]
    info: dict[str, Any] = {"vocab_size": V, "dim": LM_SHAPE["dim"], "tokens_per_step": tokens}
    models = {}
    for kind in ("mamba2", "transformer"):
        try:
            models[kind] = build_lm(kind, depth)
            info[f"{kind}_layers"] = depth if kind == "mamba2" else max(1, depth // 2)
            info[f"{kind}_params"] = sum(p.numel() for p in models[kind].parameters())
        except Exception as exc:
            part.errors.append(f"lm build {kind}: {type(exc).__name__}: {exc}")
    for L in lengths:
        if part.over_budget(f"L={L}"):
            break
        B = max(1, tokens // L)
        ids = torch.randint(0, V, (B, L), device=dev)
        for kind, model in models.items():
            name = OURS if kind == "mamba2" else TRANSFORMER
            rec = part.time(name, {"B": B, "L": L}, "fwd+bwd", train_step(model, ids, ids), model=kind)
            if rec is not None:
                rec.extra["tokens_per_s"] = B * L / (rec.ms * 1e-3)
        torch.cuda.empty_cache()
    return info


def bench_packing(part: Part, packing_lengths: tuple[int, ...], depth: int) -> dict[str, Any]:
    """Packed vs padded training steps of the Mamba-2 LM on mixed lengths (same real tokens)."""
    from longseq.core.packing import PackedBatch, position_ids_from_cu_seqlens

    dev = require_cuda()
    V, tokens = LM_SHAPE["vocab"], LM_SHAPE["tokens"]
    model = build_lm("mamba2", depth)
    packing: dict[str, Any] = {"target": f"packed >= {PACKING_TARGET}x padded when half the tokens are padding"}
    for L_max in packing_lengths:
        if part.over_budget(f"L_max={L_max}"):
            break
        lens = mixed_lengths(L_max, tokens)
        T, n = sum(lens), len(lens)
        cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=dev)
        ids = torch.randint(0, V, (T,), device=dev)
        packed = PackedBatch(ids, cu, max(lens), position_ids_from_cu_seqlens(cu))
        padded = torch.zeros(n, L_max, dtype=torch.long, device=dev)
        labels = torch.full((n, L_max), -100, dtype=torch.long, device=dev)
        for i, (s, ln) in enumerate(zip(cu[:-1].tolist(), lens)):
            padded[i, :ln] = ids[s : s + ln]
            labels[i, :ln] = ids[s : s + ln]
        shape = {"L_max": L_max, "N_seq": n, "T": T}
        pad_frac = 1 - T / (n * L_max)
        r_packed = part.time(
            OURS, shape, "fwd+bwd", train_step(model, packed, ids), model="mamba2_packed", padding_fraction=pad_frac
        )
        r_padded = part.time(
            PADDED,
            shape,
            "fwd+bwd",
            train_step(model, padded, labels),
            model="mamba2_padded",
            padding_fraction=pad_frac,
        )
        if r_packed and r_padded:
            packing[f"L_max={L_max}"] = {
                "padding_fraction": pad_frac,
                "speedup_packed_over_padded": r_padded.ms / r_packed.ms,
                "real_tokens_per_s_packed": T / (r_packed.ms * 1e-3),
                "real_tokens_per_s_padded": T / (r_padded.ms * 1e-3),
                "met": r_padded.ms / r_packed.ms >= PACKING_TARGET,
            }
        torch.cuda.empty_cache()
    return packing


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


def floor_summary(records: list[Record]) -> dict[str, Any]:
    """Ratio of our time to the HBM floor per (part, pass) at every length, and whether <= 3x."""
    out: dict[str, Any] = {}
    for r in records:
        if r.name == OURS and "ratio_to_floor" in r.extra:
            key = f"{r.extra['part']} {r.pass_}"
            out.setdefault(key, {})[r.shape["L"] if "L" in r.shape else str(r.shape)] = round(
                r.extra["ratio_to_floor"], 3
            )
    scan = {k: v for k, v in out.items() if k.startswith("scan")}
    met = bool(scan) and all(x <= FLOOR_TARGET for v in scan.values() for x in v.values())
    return {"target": f"selective scan within {FLOOR_TARGET}x of the HBM floor", "ratios": out, "scan_met": met}


def fla_status() -> str:
    try:
        import fla  # noqa: F401
    except Exception as exc:
        return f"not installed ({type(exc).__name__}: {exc})"
    return f"installed ({getattr(fla, '__version__', '?')}): SSD as fla.ops.simple_gla.chunk_simple_gla ({FLA})"


def run(quick: bool) -> tuple[list[Record], dict[str, Any]]:
    """Benchmark every part; returns the records and ``meta`` (ours, baselines, extra)."""
    require_cuda()
    copy_gbps = measure_copy_bandwidth()
    _log(f"device-to-device copy bandwidth: {copy_gbps:.0f} GB/s")
    lengths = LENGTHS[:1] if quick else LENGTHS
    parts: dict[str, Part] = {}
    extra: dict[str, Any] = {"copy_bandwidth_gbps": copy_gbps, "quick": quick, "fla": fla_status()}
    depth = 2 if quick else LM_SHAPE["depth"]
    steps = {
        "scan": lambda p: bench_scan(p, lengths, compiled_max_len=16384, compiled_bwd_max_len=lengths[0]),
        "conv": lambda p: bench_conv(p, lengths[:1] if quick else (2048, 8192, 32768)),
        "ssd": lambda p: bench_ssd(p, SSD_HEADS[:1] if quick else SSD_HEADS, lengths),
        "lm": lambda p: bench_lm(p, lengths, depth),
        "packing": lambda p: bench_packing(p, (4096,) if quick else (4096, 16384), depth),
    }
    chosen = parts_from_env(PARTS_ENV, list(steps))
    extra["parts"] = chosen
    for name, fn in steps.items():
        if name not in chosen:
            continue
        part = parts[name] = Part(name, copy_gbps)
        try:
            extra[name] = fn(part)
        except Exception as exc:
            part.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        torch.cuda.empty_cache()
    records = [r for p in parts.values() for r in p.records]
    extra["ssd_crossover_vs_flash_attn"] = crossover(records, SSD_HEADS)
    extra["hbm_floor"] = floor_summary(records)
    extra["errors"] = [e for p in parts.values() for e in p.errors]
    extra["skipped"] = [s for p in parts.values() for s in p.skipped]
    for e in extra["errors"]:
        _log(f"error: {e}")
    return records, {"ours": OURS, "baselines": BASELINES, "extra": extra}
