"""Kernel configurations: autotuning candidates per head dim, the interpreter's fixed blocks, and the
choice between a tuned wrapper and one fixed configuration.

On a GPU each kernel is autotuned once per (head dim bucket, mask kind, dtype, length bucket): the
length enters only as one of three coarse buckets (:data:`LENGTH_BUCKETS`: up to 1K, up to 4K, longer),
because the best tiles differ between short and long sequences (H200, D=128: 128x64 tiles won the forward
at L=512, 128x128 at L=8K by 7%), so once warm no call retunes. ``LONGSEQ_FLASH_ATTN_AUTOTUNE=0`` runs the first
candidate instead (tests use it to compile each variant once); :data:`FORCED_CONFIGS` pins one.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton

from longseq.kernels._common import interpreting

#: Block sizes used under the interpreter (small, so tiny test shapes still span several tiles).
#: Tests may patch them to exercise other tilings.
INTERPRET_BLOCKS: dict[str, dict[str, int]] = {
    "fwd": {"BLOCK_M": 32, "BLOCK_N": 16},
    "bwd_dkdv": {"BLOCK_M": 16, "BLOCK_N": 32},
    "bwd_dkdv_atomic": {"BLOCK_M": 16, "BLOCK_N": 32},
    "bwd_dq": {"BLOCK_M": 32, "BLOCK_N": 16},
    "decode": {"BLOCK_N": 16},
}


def _cfgs(rows: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` rows as Triton configs."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in rows]


# Candidates per kernel and head-dim bucket (BLOCK_D <= 64, 128, 256) for 16-bit inputs, best guess
# first; the D=128 lists are the fastest of scripts/kernel_sweep.py's grids on an H200 (bf16, L=4K/8K;
# benchmarks/results/sweep_flash-h200.jsonl). scripts/flash_spill_probe.py reads their registers and spills
# for sm_90a (benchmarks/results/flash_spill_probe-sm90.txt). 128-row
# tiles with 8 warps suit H100; the smaller ones also fit A100's 164 KB of shared memory. A candidate
# that does not fit a GPU fails to compile and the autotuner skips it. fp32 inputs (exact IEEE dots,
# used for checks) get small tiles.
_CONFIGS: dict[str, dict[int, list[tuple[int, int, int, int]]]] = {
    "fwd": {
        64: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (128, 128, 8, 2)],
        128: [(128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 64, 8, 4), (128, 128, 8, 2)],
        256: [(64, 32, 8, 2), (128, 32, 8, 2), (64, 64, 8, 2)],
    },
    "bwd_dkdv": {  # BLOCK_N key rows held in registers, BLOCK_M query rows per step
        64: [(64, 128, 8, 2), (64, 64, 4, 2), (32, 64, 4, 3), (32, 128, 8, 3)],
        128: [(32, 64, 4, 3), (64, 128, 8, 2), (32, 128, 8, 3), (32, 64, 4, 2)],
        256: [(32, 32, 8, 2), (16, 32, 4, 2), (16, 64, 8, 2)],
    },
    "bwd_dkdv_atomic": {  # the same, plus a dq tile per step (deterministic=False)
        64: [(64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 8, 2), (32, 64, 4, 2)],
        128: [(32, 128, 8, 2), (16, 128, 8, 2), (32, 64, 8, 2), (64, 64, 8, 2)],
        256: [(32, 32, 8, 2), (16, 32, 4, 2), (16, 32, 8, 2)],
    },
    "bwd_dq": {  # BLOCK_M query rows held in registers, BLOCK_N key rows per step
        64: [(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2)],
        128: [(128, 64, 8, 3), (128, 64, 8, 2), (64, 32, 4, 3), (64, 64, 4, 2)],
        256: [(64, 32, 8, 2), (32, 64, 4, 2), (64, 64, 8, 2)],
    },
}
_FP32_CONFIGS = [(32, 32, 4, 2), (64, 32, 4, 1)]
#: Decode (BLOCK_N, num_warps, num_stages) per head-dim bucket; BLOCK_M follows the rows (G * Lq).
_DECODE_CONFIGS: dict[int, list[tuple[int, int, int]]] = {
    64: [(64, 4, 3), (128, 4, 2), (128, 8, 3), (32, 4, 2)],
    128: [(64, 4, 3), (128, 8, 3), (32, 4, 2)],
    256: [(32, 4, 2), (64, 4, 2), (64, 8, 2)],
}

#: Mask-kind constexprs that select a distinct tuning (plus the tensor dtypes, which the autotuner adds).
#: Exact sequence lengths are not part of the key: once warm, no call retunes.
_KEY = ["BLOCK_D", "IS_VARLEN", "HAS_LEFT", "HAS_RIGHT", "SOFTCAP", "ALIBI"]
#: Upper bounds of the length buckets that get their own tuning (the last bucket is everything longer).
LENGTH_BUCKETS = (1024, 4096)
_TUNED: dict[tuple[str, int, bool, int], Any] = {}
#: Set to "0" to skip autotuning and run the first configuration of each list (tests do, to save compiles).
AUTOTUNE_ENV = "LONGSEQ_FLASH_ATTN_AUTOTUNE"
#: Kernel name -> configuration to run instead of autotuning (GPU tests use it to check every candidate).
FORCED_CONFIGS: dict[str, triton.Config] = {}


def _dbucket(block_d: int) -> int:
    return 64 if block_d <= 64 else block_d


def candidate_configs(name: str, block_d: int, dtype: torch.dtype) -> list[triton.Config]:
    """The autotuning candidates of kernel ``name`` ("fwd", "bwd_dkdv", "bwd_dq", "decode")."""
    if name == "decode":
        rows = _DECODE_CONFIGS[256 if dtype == torch.float32 else _dbucket(block_d)]  # fp32: the small tiles
        return [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s) for n, w, s in rows]
    return _cfgs(_FP32_CONFIGS if dtype == torch.float32 else _CONFIGS[name][_dbucket(block_d)])


def length_bucket(seqlen: int) -> int:
    """Index of the tuning bucket of a (maximum) sequence length: 0 up to 1K, 1 up to 4K, 2 beyond."""
    return sum(seqlen > bound for bound in LENGTH_BUCKETS)


def launcher(name: str, kernel: Any, block_d: int, dtype: torch.dtype, seqlen: int = 0) -> tuple[Any, dict[str, Any]]:
    """``(kernel, fixed meta)``: the raw kernel with a fixed configuration (the interpreter's blocks, a
    forced one, or the first candidate when autotuning is off), or an autotuned wrapper and no meta.
    ``seqlen`` (the longer of the query and key lengths, maxima for varlen) picks the length bucket:
    each bucket has its own autotuner, so a kernel is tuned at most once per bucket."""
    if interpreting():
        return kernel, dict(INTERPRET_BLOCKS[name])
    cfg = FORCED_CONFIGS.get(name)
    if cfg is None and os.environ.get(AUTOTUNE_ENV, "1") in ("0", ""):
        cfg = candidate_configs(name, block_d, dtype)[0]
    if cfg is not None:
        return kernel, {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    key = (name, _dbucket(block_d), dtype == torch.float32, length_bucket(seqlen))
    if key not in _TUNED:
        if name == "decode":
            tuned_key = ["BLOCK_D", "BLOCK_M", "HAS_LEFT", "HAS_RIGHT", "SOFTCAP", "ALIBI"]
        else:
            tuned_key = _KEY
        configs = candidate_configs(name, block_d, dtype)
        # The atomic backward accumulates into DQ: zero it before each timed trial and the real run.
        reset = ["DQ"] if name == "bwd_dkdv_atomic" else None
        _TUNED[key] = triton.autotune(configs=configs, key=tuned_key, reset_to_zero=reset)(kernel)
    return _TUNED[key], {}


def block_d_for(d: int) -> int:
    """The padded head dim the kernels tile with: the next power of two, at least 16 (``tl.dot``'s minimum)."""
    return max(16, triton.next_power_of_2(d))


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get exact (IEEE) dots; 16-bit inputs use tensor cores either way."""
    return "ieee" if dtype == torch.float32 else "tf32"
