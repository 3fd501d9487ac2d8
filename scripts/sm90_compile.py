"""Compile a Triton kernel for sm_90 (Hopper) on any machine, no GPU needed, and read ``ptxas -v``:
the shared helper of ``scripts/scan_layout_probe.py`` and ``scripts/flash_spill_probe.py``."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TRITON_INTERPRET", "0")
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402


@dataclass
class Compiled:
    """PTX and TTGIR text, the cubin, registers per thread and spilled bytes per thread (from ``ptxas -v``)."""

    ptx: str
    ttgir: str
    regs: int
    spill_bytes: int
    cubin: bytes = b""

    def count(self, pattern: str) -> int:
        """Occurrences of a regular expression in the PTX (e.g. ``shfl\\.sync``, ``wgmma\\.mma_async``)."""
        return len(re.findall(pattern, self.ptx))


def compile_sm90(
    kernel: Any, signature: dict[str, str], constexprs: dict[str, Any], warps: int, stages: int = 3
) -> Compiled:
    """``kernel`` (a ``@triton.jit`` function) compiled for ``sm_90a`` with ``signature`` (Triton type per
    argument, ``"constexpr"`` for those in ``constexprs``)."""
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    ptx = compiled.asm["ptx"]
    ptxas = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas"))[0]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        info = subprocess.run(
            [ptxas, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull], capture_output=True, text=True, check=True
        ).stderr
    finally:
        os.unlink(f.name)
    regs = int(re.findall(r"Used (\d+) registers", info)[0])
    spill = int(re.findall(r"(\d+) bytes spill stores", info)[0])
    return Compiled(ptx, compiled.asm["ttgir"], regs, spill, compiled.asm.get("cubin", b""))
