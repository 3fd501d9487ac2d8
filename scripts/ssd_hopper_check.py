"""Hopper check of the SSD backward's warp count (run on a GPU): kernel vs fp32 reference error, as a
ratio to the same math in low precision, for the small-state shapes that 8 warps miscompiled on H100/H200
with Triton 3.6. One warp setting per process (an illegal memory access ends the CUDA context)::

    for w in 0 2 4 8; do python scripts/ssd_hopper_check.py $w; done    # 0: the default rule

A ratio above 2 fails the project's tolerance rule.
"""

import sys

import torch

sys.path.insert(0, "tests/kernels")
from test_ssd import GRAD_NAMES, make_inputs, run_three

import longseq.kernels.ssd.triton as T

cases = [
    ((1, 777, 6, 32, 3, 16, 64), torch.bfloat16),
    ((1, 777, 6, 32, 3, 16, 64), torch.float16),
    ((1, 777, 6, 32, 3, 16, 64), torch.float32),
    ((1, 777, 6, 64, 3, 32, 64), torch.bfloat16),
    ((2, 300, 4, 64, 1, 128, 64), torch.bfloat16),
]
for warps in [int(sys.argv[1]) or None]:
    T.BWD_WARPS = warps
    for case, dt in cases:
        *shape, chunk = case
        torch.manual_seed(0)
        inp = make_inputs(*shape, "cuda", h0=True)
        try:
            r = run_three(inp, dt, chunk, final_weight=1.0, dt_softplus=True)
        except Exception as e:
            print("warps", warps, case, dt, "ERROR", type(e).__name__, str(e)[:100], flush=True)
            sys.exit(0)
        k, ref, lp = r["kernel"], r["ref"], r["lowp"]
        worst = 0.0
        for _name, a, b, c in zip(("out", "fin", *GRAD_NAMES), k, ref, lp):
            if b is None:
                continue
            ek = (a.float() - b.float()).abs().max().item()
            el = (c.float() - b.float()).abs().max().item() if dt != torch.float32 else 1e-3
            worst = max(worst, ek / max(el, 1e-6))
        print("warps", warps, case, str(dt)[6:], f"worst kernel/lowp error ratio {worst:.2f}", flush=True)
