"""Registers and spills of the flash-attention kernels at their D=128 autotuning candidates, compiled for
sm_90 on any machine (no GPU needed): ``ptxas -v`` on the PTX Triton generates, plus the count of Hopper
``wgmma`` instructions (tensor cores used the Hopper way).

    python scripts/flash_spill_probe.py      # one line per (kernel, mask, candidate)

Spilled bytes are per thread and go through L1 at run time; fewer is better, zero is the goal. Pointers and
leading strides are compiled without the launcher's divisibility hints, so absolute numbers are an upper
bound; compare versions of the kernels with this same script.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import tempfile

os.environ["TRITON_INTERPRET"] = "0"
import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from longseq.kernels.flash_attn import triton as fa  # noqa: E402
from longseq.kernels.flash_attn import tuning  # noqa: E402

_PTRS = {n: "*bf16" for n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")}
_PTRS.update({"LSE": "*fp32", "CU_Q": "*i32", "CU_K": "*i32", "SLOPES": "*fp32", "DELTA": "*fp32"})
_KERNELS = {"fwd": fa._fwd_kernel, "bwd_dkdv": fa._bwd_dkdv_kernel, "bwd_dq": fa._bwd_dq_kernel}


def probe(kernel, constexprs: dict, warps: int, stages: int) -> dict:
    """``ptxas -v`` registers and spill bytes, and the wgmma count, of ``kernel`` for sm_90a."""
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in _PTRS:
            sig[name] = _PTRS[name]
        else:
            sig[name] = "fp32" if name in ("sm_scale", "softcap") else "i32"
    src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    ptx = compiled.asm["ptx"]
    ptxas = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas"))[0]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    info = subprocess.run(
        [ptxas, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull], capture_output=True, text=True
    )
    os.unlink(f.name)
    return {
        "regs": int(re.findall(r"Used (\d+) registers", info.stderr)[0]),
        "spill_bytes": int(re.findall(r"(\d+) bytes spill stores", info.stderr)[0]),
        "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
    }


def main() -> None:
    flags = dict(D=128, BLOCK_D=128, DOT_PREC="tf32", IS_VARLEN=False, HAS_LEFT=False, SOFTCAP=False, ALIBI=False)
    for name, kernel in _KERNELS.items():
        for causal in (False, True):
            for cfg in tuning.candidate_configs(name, 128, torch.bfloat16):
                consts = {**flags, "HAS_RIGHT": causal, **cfg.kwargs, "ATOMIC_DQ": False}
                consts = {k: v for k, v in consts.items() if k in kernel.arg_names}
                r = probe(kernel, consts, cfg.num_warps, cfg.num_stages)
                m, n = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
                print(f"{name:9s} {'causal' if causal else 'full':6s} {m:>3d}x{n:<3d} warps={cfg.num_warps} "
                      f"stages={cfg.num_stages}  regs={r['regs']} spill_bytes={r['spill_bytes']} wgmma={r['wgmma']}")  # fmt: skip


if __name__ == "__main__":
    main()
