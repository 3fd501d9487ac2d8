"""Registers and spills of the flash-attention kernels at their D=128 autotuning candidates, compiled for
sm_90 on any machine (no GPU needed): ``ptxas -v`` on the PTX Triton generates, plus the count of Hopper
``wgmma`` instructions (tensor cores used the Hopper way).

    python scripts/flash_spill_probe.py      # one line per (kernel, mask, candidate)

Spilled bytes are per thread and go through L1 at run time; fewer is better, zero is the goal. Pointers and
leading strides are compiled without the launcher's divisibility hints, so absolute numbers are an upper
bound; compare versions of the kernels with this same script.
"""

from __future__ import annotations

import torch
from sm90_compile import compile_sm90

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
    c = compile_sm90(kernel, sig, constexprs, warps, stages)
    return {"regs": c.regs, "spill_bytes": c.spill_bytes, "wgmma": c.count(r"wgmma\.mma_async")}


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
