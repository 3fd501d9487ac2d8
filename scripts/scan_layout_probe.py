"""Layout probe for the selective scan, compiled for sm_90 on any machine (no GPU needed): two versions of
one chunk of the forward recurrence, identical but for the axis order of the ``(token, state, channel)``
tile, and what Triton makes of each: warp shuffles in the PTX, registers and spills from ``ptxas -v``.

    python scripts/scan_layout_probe.py        # prints one line per configuration

``time_last`` is the order of ``kernels/selective_scan/triton.py`` (``(channel, state, token)``): Triton
puts lanes on the token axis, so ``tl.associative_scan`` and the sum over states shuffle between lanes.
``time_first`` (``(token, state, channel)``, channels on lanes) keeps the scan and the state sum inside each
thread. Session 3 found 0 shuffles for time_first against 548-3656 for time_last (see
``benchmarks/results/scan_layout_probe-sm90.txt``); the catch is parallelism: one lane per channel leaves
B * D / 32 warps, so a kernel built this way needs the sequence split across programs, which is what
``kernels/selective_scan/segmented.py`` does (probed at the end, beside the default chunked kernel).
"""

from __future__ import annotations

import triton
import triton.language as tl
from sm90_compile import compile_sm90


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def k_time_first(U, DT, A, Bp, Cp, OUT, L, s_ud, s_bn, CH: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    pid = tl.program_id(0)
    d = pid * BD + tl.arange(0, BD)
    n = tl.arange(0, BN)
    tt = tl.arange(0, CH)
    A2 = tl.load(A + d[None, :] * BN + n[:, None])  # (BN, BD)
    h = tl.zeros((BN, BD), tl.float32)
    for c in range(0, L // CH):
        t = c * CH + tt
        u = tl.load(U + d[None, :] * s_ud + t[:, None]).to(tl.float32)  # (CH, BD)
        dt = tl.load(DT + d[None, :] * s_ud + t[:, None]).to(tl.float32)
        B = tl.load(Bp + n[None, :] * s_bn + t[:, None]).to(tl.float32)  # (CH, BN)
        C = tl.load(Cp + n[None, :] * s_bn + t[:, None]).to(tl.float32)
        a = tl.exp2(dt[:, None, :] * A2[None, :, :])  # (CH, BN, BD)
        b = (dt * u)[:, None, :] * B[:, :, None]
        ac, hs = tl.associative_scan((a, b), axis=0, combine_fn=_combine)
        hs += ac * h[None, :, :]
        y = tl.sum(hs * C[:, :, None], axis=1)  # (CH, BD)
        tl.store(OUT + d[None, :] * s_ud + t[:, None], y.to(tl.bfloat16))
        h = tl.sum(tl.where(tt[:, None, None] == CH - 1, hs, 0.0), axis=0)


@triton.jit
def k_time_last(U, DT, A, Bp, Cp, OUT, L, s_ud, s_bn, CH: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    pid = tl.program_id(0)
    d = pid * BD + tl.arange(0, BD)
    n = tl.arange(0, BN)
    tt = tl.arange(0, CH)
    A2 = tl.load(A + d[:, None] * BN + n[None, :])
    h = tl.zeros((BD, BN), tl.float32)
    for c in range(0, L // CH):
        t = c * CH + tt
        u = tl.load(U + d[:, None] * s_ud + t[None, :]).to(tl.float32)
        dt = tl.load(DT + d[:, None] * s_ud + t[None, :]).to(tl.float32)
        B = tl.load(Bp + n[:, None] * s_bn + t[None, :]).to(tl.float32)
        C = tl.load(Cp + n[:, None] * s_bn + t[None, :]).to(tl.float32)
        a = tl.exp2(dt[:, None, :] * A2[:, :, None])
        b = (dt * u)[:, None, :] * B[None, :, :]
        ac, hs = tl.associative_scan((a, b), axis=2, combine_fn=_combine)
        hs += ac * h[:, :, None]
        y = tl.sum(hs * C[None, :, :], axis=1)
        tl.store(OUT + d[:, None] * s_ud + t[None, :], y.to(tl.bfloat16))
        h = tl.sum(tl.where(tt[None, None, :] == CH - 1, hs, 0.0), axis=2)


_SIGNATURE = {"U": "*bf16", "DT": "*bf16", "A": "*fp32", "Bp": "*bf16", "Cp": "*bf16", "OUT": "*bf16",
              "L": "i32", "s_ud": "i32", "s_bn": "i32"}  # fmt: skip
#: (CH tokens, BD channels, warps) per probe; BN = 16 states throughout.
CONFIGS = ((2, 32, 1), (4, 32, 1), (4, 64, 2), (4, 128, 4), (8, 32, 1), (8, 64, 2), (16, 32, 1), (32, 4, 2))


def probe(kernel, warps: int, **constexprs: int) -> dict:
    """Compile ``kernel`` for sm_90 and count shuffles, exp2s, registers and spilled bytes."""
    return _compile(kernel, {**_SIGNATURE, **dict.fromkeys(constexprs, "constexpr")}, constexprs, warps)


def _compile(kernel, signature: dict, constexprs: dict, warps: int) -> dict:
    c = compile_sm90(kernel, signature, constexprs, warps)
    layout = next((line.split("=", 1)[1].strip() for line in c.ttgir.splitlines() if line.startswith("#blocked")), "")
    return {
        "shfl": c.count(r"shfl\.sync"),
        "ex2": c.count(r"ex2\.approx"),
        "bar": c.count(r"bar\.sync"),
        "regs": c.regs,
        "spill_bytes": c.spill_bytes,
        "first_layout": layout,  # the first blocked layout of the module (a load's), for orientation
    }


def probe_kernels() -> None:
    """The library's two forwards at their defaults: the chunked kernel and the segmented one (both passes)."""
    from longseq.kernels.selective_scan import segmented
    from longseq.kernels.selective_scan import triton as chunked

    ptrs = dict.fromkeys(("A", "Dp", "DBIAS", "HIN", "H0", "HEND", "PROD", "STATES", "HLAST"), "*fp32")
    ptrs.update(dict.fromkeys(("U", "DELTA", "Bp", "Cp", "Z", "OUT"), "*bf16"), SEQ="*i32")
    flags = dict(HAS_D=True, HAS_Z=True, HAS_DBIAS=True, SOFTPLUS=True, HAS_SEQ=False, VAR_B=True, VAR_C=True,
                 BLOCK_N=16, INTERPRET=False)  # fmt: skip
    runs = [("chunked fwd (BD=4)", chunked._ss_fwd_kernel,
             {**flags, "HAS_H0": True, "SAVE_STATES": True, "BLOCK_D": 4, "CHUNK": 32}, chunked.FWD_WARPS)]  # fmt: skip
    for write in (False, True):
        consts = {**flags, "HAS_HIN": write, "WRITE_Y": write, "SAVE_STATES": write, "STORE_END": not write,
                  "BLOCK_D": segmented.LANE_BLOCK_D, "CH": segmented.LANE_CHUNK, "STATE_CHUNK": 32}  # fmt: skip
        name = f"segmented {'y pass' if write else 'state pass'}"
        runs.append((name, segmented._seg_kernel, consts, segmented.LANE_WARPS))
    for name, kernel, consts, warps in runs:
        sig = {a: "constexpr" if a in consts else ptrs.get(a, "i64" if a.startswith("s") else "i32")
               for a in kernel.arg_names}  # fmt: skip
        r = _compile(kernel, sig, consts, warps)
        print(
            f"{name:22s} shfl={r['shfl']:<5d} bar={r['bar']:<4d} ex2={r['ex2']:<4d} regs={r['regs']:<4d} spill_bytes={r['spill_bytes']}"
        )


def main() -> None:
    for name, kernel in (("time_first", k_time_first), ("time_last", k_time_last)):
        for ch, bd, warps in CONFIGS:
            r = probe(kernel, warps, CH=ch, BN=16, BD=bd)
            per_thread = ch * 16 * bd // (32 * warps)
            print(f"{name:10s} CH={ch:<3d} BD={bd:<4d} warps={warps}  elems/thread={per_thread:<4d} shfl={r['shfl']:<5d} "
                  f"ex2={r['ex2']:<4d} regs={r['regs']:<4d} spill_bytes={r['spill_bytes']:<4d} {r['first_layout']}")  # fmt: skip
    probe_kernels()


if __name__ == "__main__":
    main()
