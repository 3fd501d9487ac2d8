"""Static SASS instruction mix of the fftconv column and row kernels, compiled for sm_90 on any machine (no
GPU needed): registers, spills and the instruction count by opcode family (the kernels have no loops, so
the static count per warp is the executed count per program and warp).

    python scripts/fftconv_sass_probe.py [--length 65536]

Compare versions of the kernels with this script: fewer instructions per element at the same occupancy is
what a latency-bound pass (``benchmarks/results/ncu_fftconv-h200.txt``) needs.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import subprocess
import tempfile

from sm90_compile import compile_sm90

from longseq.kernels.fftconv import triton as tr  # noqa: E402

_FAMILIES = {
    "mma": r"^HMMA",
    "sin/cos (MUFU)": r"^MUFU",
    "int div/mod": r"^(I2F|F2I).*|^IMAD\.HI",
    "shared mem": r"^(LDS|STS|LDSM)",
    "global load": r"^LDG",
    "global store": r"^STG",
    "local (spill)": r"^(LDL|STL)",
    "fp32": r"^(FADD|FMUL|FFMA|FSEL|FSETP|FMNMX)",
    "int": r"^(IMAD|IADD3|LEA|LOP3|SHF|ISETP|IABS|SEL|PRMT|MOV)",
    "convert": r"^F2F",
    "branch/sync": r"^(BRA|BAR|BSSY|BSYNC|WARPSYNC|EXIT|CALL|RET)",
}


def sass(cubin: bytes) -> list[str]:
    """Opcodes of the SASS of ``cubin`` (nvdisasm from Triton's bundled toolkit)."""
    import triton

    nvdisasm = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/nvdisasm"))[0]
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        text = subprocess.run([nvdisasm, "-c", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    ops = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m:
            ops.append(m.group(1))
    return ops


def families(ops: list[str]) -> dict[str, int]:
    out: collections.Counter = collections.Counter()
    for op in ops:
        for fam, pat in _FAMILIES.items():
            if re.match(pat, op):
                out[fam] += 1
                break
        else:
            out["other"] += 1
    return dict(out)


def probe(name: str, kernel, ptr_types: dict[str, str], meta: dict, elems: int) -> None:
    """Compile ``kernel`` with the launcher's ``meta`` (constexprs plus ``num_warps`` / ``num_stages``) and print
    its registers, spills and SASS mix per 32 of its ``elems`` complex elements."""
    constexprs = dict(meta)
    warps, stages = constexprs.pop("num_warps"), constexprs.pop("num_stages")
    sig = {}
    for arg in kernel.arg_names:
        if arg in constexprs:
            sig[arg] = "constexpr"
        else:
            sig[arg] = ptr_types.get(arg, "i32")
    c = compile_sm90(kernel, sig, constexprs, warps, stages)
    ops = sass(c.cubin)
    fam = families(ops)
    per_elem = len(ops) * warps / (elems / 32)
    print(f"{name:14s} warps={warps} regs={c.regs} spill={c.spill_bytes} sass={len(ops)} "
          f"({per_elem:.1f} warp-instr per 32 complex elements)")  # fmt: skip
    print("    " + ", ".join(f"{k} {v}" for k, v in sorted(fam.items(), key=lambda kv: -kv[1])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=65536)
    args = parser.parse_args()
    plan = tr.make_plan(args.length)
    print(plan)
    prec = "tf32"
    fp32 = {n: "*fp32" for n in ("BUF", "CT", "RT", "AX", "AH", "OUT", "Y", "Z", "SKIP", "H", "DH")}
    bf16 = {n: "*bf16" for n in ("S", "M", "X", "PRE", "GATE")}
    ptrs = {**fp32, **bf16}
    tile = plan.P1 * plan.P2 * plan.C
    probe("col_fwd", tr._col_fwd_kernel, ptrs, {"HAS_M": False, **tr._col_meta(plan, prec, False)}, tile)
    flags = {"HAS_PRE": False, "HAS_GATE": False, "HAS_SKIP": True, "SAVE_Z": False}
    probe("col_inv_fwd", tr._col_inv_fwd_kernel, ptrs, {**flags, **tr._col_meta(plan, prec, True)}, tile)
    probe("row_fwd", tr._row_fwd_kernel, ptrs, {"N2": plan.N2, "PAIRED": True, **tr._row_meta(plan, prec)}, 2 * plan.N2)


if __name__ == "__main__":
    main()
