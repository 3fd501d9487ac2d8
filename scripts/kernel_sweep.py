"""Tuning sweeps for the kernels on a GPU: time each candidate configuration of a kernel's knobs on
one fixed shape and print one JSON line per candidate (plus per-kernel CUDA time breakdowns from
``torch.profiler``: of the default configuration, and for fftconv of every candidate). The winners become
the module defaults in ``kernels/<op>/triton.py`` / ``tuning.py``; the benchmarks then measure them against
the baselines.

    python scripts/kernel_sweep.py scan|flash|fftconv [--out FILE.jsonl]

Every candidate is checked against the default configuration's output (max abs difference printed),
so a configuration that compiles but computes something else is visible.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from benchmarks.common import bench, require_cuda


def _emit(out: Any, **row: Any) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


@contextmanager
def _patched(module: Any, **values: Any) -> Iterator[None]:
    old = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def _profile(fn: Callable[[], Any], out: Any, what: str) -> None:
    """CUDA time per kernel name over 5 calls of ``fn`` (after a warm-up)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    rows = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:12]
    for e in rows:
        _emit(
            out,
            sweep=what,
            profile=e.key[:80],
            cuda_ms_per_call=round(e.device_time_total / 5e3, 4),
            calls=e.count // 5,
        )


def _run(fn: Callable[[], Any], ref: torch.Tensor | None) -> tuple[float | None, float | None, str | None]:
    try:
        got = fn()
        err = None if ref is None else float((got.float() - ref.float()).abs().max())
        return bench(fn, warmup=5, rep=20), err, None
    except Exception as e:  # a configuration that does not compile or fit: recorded, not fatal
        return None, None, f"{type(e).__name__}: {str(e)[:160]}"


def sweep_scan(out: Any) -> None:
    from longseq.kernels.selective_scan import selective_scan_fn
    from longseq.kernels.selective_scan import triton as tr

    dev = require_cuda()
    torch.manual_seed(0)
    Bsz, D, N, L = 2, 1536, 16, 8192
    bf = dict(device=dev, dtype=torch.bfloat16)
    u, delta, z = (torch.randn(Bsz, D, L, **bf) for _ in range(3))
    A = -(torch.rand(D, N, device=dev) + 0.5)
    Bm, Cm = (torch.randn(Bsz, 1, N, L, **bf) for _ in range(2))
    Dv, db = torch.randn(D, device=dev), torch.randn(D, device=dev)
    leaves = [t.requires_grad_() for t in (u, delta, A, Bm, Cm, Dv, z, db)]
    g = torch.randn(Bsz, D, L, **bf)

    def fwd() -> torch.Tensor:
        with torch.no_grad():
            return selective_scan_fn(u, delta, A, Bm, Cm, Dv, z, db, delta_softplus=True)

    def fwd_bwd() -> torch.Tensor:
        for t in leaves:
            t.grad = None
        selective_scan_fn(u, delta, A, Bm, Cm, Dv, z, db, delta_softplus=True).backward(g)
        return delta.grad

    def fwd_train() -> torch.Tensor:  # the forward of a training step: it also saves the backward's states
        return selective_scan_fn(u, delta, A, Bm, Cm, Dv, z, db, delta_softplus=True).detach()

    ref_y, ref_g = fwd(), fwd_bwd()
    _profile(fwd_bwd, out, "scan-default")
    # The segmented backward (channels on lanes; kernels/selective_scan/segmented_bwd.py) behind the
    # segmented forward; PROGRAMS_PER_HINT sets the segments of both.
    from longseq.kernels.selective_scan import segmented as sg
    from longseq.kernels.selective_scan import segmented_bwd as sb

    both = dict(FWD_IMPL="segmented", BWD_IMPL="segmented")
    ref_grads = [t.grad.float().clone() for t in leaves]  # of the default pair (the last fwd_bwd call)

    def rel_err_all() -> float:
        """Max over every gradient of max |grad - default| / max |default| (after the last fwd_bwd call)."""
        return max(
            float((t.grad.float() - r).abs().max() / r.abs().max().clamp_min(1e-30)) for t, r in zip(leaves, ref_grads)
        )

    ms, err, fail = _run(fwd_bwd, ref_g)  # the baseline: the default pair
    _emit(out, sweep="scan-segmented-bwd", pass_="fwd+bwd", baseline=f"{tr.FWD_IMPL}+{tr.BWD_IMPL}", ms=ms, err=err,
          rel_err_all=rel_err_all(), fail=fail)  # fmt: skip
    with _patched(tr, **both):
        _profile(fwd_bwd, out, "scan-segmented-bwd-default")
    for chunk, block_d, warps, stash, pph in itertools.product((2, 4, 8), (16, 32), (1, 2), (True, False), (4, 8)):
        with _patched(tr, **both), _patched(sg, PROGRAMS_PER_HINT=pph), _patched(sb, BWD_CHUNK=chunk,
                                                BWD_BLOCK_D=block_d, BWD_WARPS=warps, BWD_STASH=stash):  # fmt: skip
            ms, err, fail = _run(fwd_bwd, ref_g)
            _emit(out, sweep="scan-segmented-bwd", pass_="fwd+bwd", bwd_chunk=chunk, block_d=block_d, warps=warps,
                  stash=stash, programs_per_hint=pph, ms=ms, err=err, fail=fail,
                  rel_err_all=None if fail else rel_err_all())  # fmt: skip
    # The segmented forward (channels on lanes, no shuffles; kernels/selective_scan/segmented.py).
    # Its full grid ran in sweep_scan-h200.jsonl; around the best there, with and without saving states.
    for lane_chunk, block_d, warps, pph in itertools.product((4, 8), (16, 32), (1,), (4, 8)):
        with _patched(tr, FWD_IMPL="segmented"), _patched(sg, LANE_CHUNK=lane_chunk, LANE_BLOCK_D=block_d,
                                                            LANE_WARPS=warps, PROGRAMS_PER_HINT=pph):  # fmt: skip
            for pass_, fn in (("fwd", fwd), ("fwd-train", fwd_train)):
                ms, err, fail = _run(fn, ref_y)
                _emit(out, sweep="scan-segmented", pass_=pass_, lane_chunk=lane_chunk, block_d=block_d, warps=warps,
                      programs_per_hint=pph, ms=ms, err=err, fail=fail)  # fmt: skip
    with _patched(tr, FWD_IMPL="segmented"):
        _profile(fwd_bwd, out, "scan-segmented-default")
    # The chunked forward's knobs; chunks of 8-16 tokens included.
    for chunk, tile, warps in itertools.product((8, 16, 32, 64, 128, 256), (1024, 2048, 4096), (1, 2, 4)):
        if chunk * 16 > tile:
            continue
        with _patched(tr, chunk_size=lambda L_, N_, c=chunk: min(c, max(2, 1 << (L_ - 1).bit_length()))):
            with _patched(tr, FWD_TILE=tile, FWD_WARPS=warps):
                ms, err, fail = _run(fwd, ref_y)
                _emit(out, sweep="scan", pass_="fwd", chunk=chunk, tile=tile, warps=warps, ms=ms, err=err, fail=fail)
            with _patched(tr, BWD_TILE=tile, BWD_WARPS=warps, FWD_TILE=tile):
                ms, err, fail = _run(fwd_bwd, ref_g)
                _emit(
                    out, sweep="scan", pass_="fwd+bwd", chunk=chunk, tile=tile, warps=warps, ms=ms, err=err, fail=fail
                )


def _grid(ms: tuple[int, ...], ns: tuple[int, ...], ws: tuple[int, ...], ss: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(ms, ns, ws, ss))


#: kernel -> candidate (BLOCK_M, BLOCK_N, warps, stages); the backward kernels get the wide grids.
_FLASH_GRID: dict[str, list[tuple[int, ...]]] = {
    "fwd": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3), (128, 32, 4, 3),
            (64, 64, 4, 3), (64, 128, 4, 2), (128, 64, 4, 3)],
    "bwd_dkdv": _grid((16, 32, 64), (64, 128), (4, 8), (1, 2, 3)),
    "bwd_dq": _grid((64, 128), (32, 64, 128), (4, 8), (2, 3)),
}  # fmt: skip


def _flash_case(out: Any, L: int, causal: bool) -> None:
    import triton

    from longseq.kernels.flash_attn import flash_attn_func, tuning

    dev = require_cuda()
    torch.manual_seed(0)
    B, H, D = 16384 // L, 16, 128
    q, k, v = (torch.randn(B, L, H, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)

    def step(det: bool) -> torch.Tensor:
        for t in (q, k, v):
            t.grad = None
        flash_attn_func(q, k, v, causal=causal, deterministic=det).backward(g)
        return k.grad

    def fwd() -> torch.Tensor:
        with torch.no_grad():
            return flash_attn_func(q, k, v, causal=causal)

    ref = step(True)
    if L == 8192:
        _profile(lambda: step(True), out, f"flash-det-L{L}-c{int(causal)}")
        _profile(lambda: step(False), out, f"flash-atomic-L{L}-c{int(causal)}")
    for name, grid in _FLASH_GRID.items():
        fn, r = (fwd, fwd()) if name == "fwd" else (lambda: step(True), ref)
        for bm, bn, w, s in grid:
            tuning.FORCED_CONFIGS[name] = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            ms, err, fail = _run(fn, r)
            _emit(out, sweep="flash", kernel=name, L=L, causal=causal, BLOCK_M=bm, BLOCK_N=bn, warps=w, stages=s,
                  ms=ms, err=err, fail=fail)  # fmt: skip
        tuning.FORCED_CONFIGS.pop(name, None)


def sweep_flash(out: Any) -> None:
    for L, causal in ((8192, True), (4096, False)):
        _flash_case(out, L, causal)


#: ``(B, D, L)`` of the fftconv sweep (a module constant so a smoke run can shrink it; ``--length`` sets L).
FFTCONV_SHAPE = (1, 256, 65536)
#: fftconv candidates ``(ROW_MAX, row warps, COL_TILE, column warps)``, the default first. Rows: 512 at 4 warps
#: won the H100 sweep of 2048/1024/512 at L=64K (``sweep_fftconv-h100.jsonl``). The column kernels then took
#: about two thirds of fwd+bwd (``ncu_fftconv-h100.txt``: 0.6-0.8 TB/s, 12.5% occupancy at 207 registers;
#: ptxas for sm_90 gives 137 registers for tiles of 4096 at 8 warps or 2048 at 4). A column program holds
#: ``C = COL_TILE / N1`` adjacent columns, and ``N1 = N / ROW_MAX`` grows with L: at L=1M rows of 512 leave
#: ``C = 1`` (each load and store a lone element at a stride of a row), so longer rows are candidates there:
#: 2048 at 8 warps, whose row kernels spill 128 / 672 bytes (fwd / bwd, tf32, ptxas sm_90) where rows of 1024
#: spill 460 / 1796 at 8 warps and rows of 4096 3540 / 6016.
FFTCONV_CANDIDATES = (
    (512, 4, 4096, 4),
    (512, 4, 4096, 8),
    (512, 4, 2048, 4),
    (512, 4, 8192, 8),
    (2048, 8, 4096, 4),
    (2048, 8, 8192, 8),
)


def sweep_fftconv(
    out: Any, best_out: str | None = None, length: int | None = None, candidates: list[int] | None = None
) -> None:
    """Knob sweep at B=1, D=256 and L=64K or ``length`` (bf16 activations, fp32 filter) over
    ``FFTCONV_CANDIDATES`` (or those at the indices ``candidates``, to split a sweep across GPUs); ``best_out``:
    write the fastest fwd+bwd knobs whose output matches the default's as JSON (``benchmarks/fftconv.py``'s
    knob file)."""
    from longseq.kernels.fftconv import fftconv
    from longseq.kernels.fftconv import triton as tr

    dev = require_cuda()
    torch.manual_seed(0)
    B, D, L = FFTCONV_SHAPE
    L = length or L
    x = torch.randn(B, D, L, device=dev, dtype=torch.bfloat16, requires_grad=True)
    h = (torch.randn(D, L, device=dev) * torch.exp(-torch.arange(L, device=dev) / 2000.0)).requires_grad_()
    Dv = torch.randn(D, device=dev, requires_grad=True)
    g = torch.randn_like(x)

    def fwd() -> torch.Tensor:
        with torch.no_grad():
            return fftconv(x, h, Dv)

    def fwd_bwd() -> torch.Tensor:
        for t in (x, h, Dv):
            t.grad = None
        fftconv(x, h, Dv).backward(g)
        return x.grad

    def torch_fft() -> torch.Tensor:
        n = 2 * L
        return torch.fft.irfft(torch.fft.rfft(x.float(), n=n) * torch.fft.rfft(h, n=n), n=n)[..., :L]

    _emit(out, sweep="fftconv", shape={"B": B, "D": D, "L": L})
    _emit(out, sweep="fftconv", baseline="torch_fft_fwd", ms=bench(torch_fft, warmup=5, rep=20))
    ref_y, ref_g = fwd(), fwd_bwd()  # the default knobs; the first candidate (also profiled below) is the default
    best: tuple[float, dict[str, int]] | None = None
    tol = 0.02 * float(ref_g.float().abs().max())  # a candidate must compute what the default does
    chosen = [FFTCONV_CANDIDATES[i] for i in candidates] if candidates else FFTCONV_CANDIDATES
    for row_max, row_warps, col_tile, col_warps in chosen:
        warps = {**tr.ROW_WARPS, row_max: row_warps}
        # MIN_COLS 0: the candidate as given at every length (no switch to the long-sequence knobs).
        knobs = {
            "ROW_MAX": row_max,
            "ROW_WARPS": row_warps,
            "COL_TILE": col_tile,
            "COL_WARPS": col_warps,
            "MIN_COLS": 0,
        }
        with _patched(tr, ROW_MAX=row_max, ROW_WARPS=warps, COL_TILE=col_tile, COL_WARPS=col_warps, MIN_COLS=0):
            for pass_, fn, r in (("fwd", fwd, ref_y), ("fwd+bwd", fwd_bwd, ref_g)):
                ms, err, fail = _run(fn, r)
                _emit(out, sweep="fftconv", pass_=pass_, row_max=row_max, row_warps=row_warps, col_tile=col_tile,
                      col_warps=col_warps, ms=ms, err=err, fail=fail)  # fmt: skip
                ok = pass_ == "fwd+bwd" and ms is not None and err is not None and err <= tol
                if ok and (best is None or ms < best[0]):
                    best = (ms, knobs)
            _profile(fwd_bwd, out, f"fftconv-rows{row_max}x{row_warps}-cols{col_tile}x{col_warps}")
    if best_out and best is not None:
        with open(best_out, "w") as f:
            json.dump(best[1], f)
        _emit(out, sweep="fftconv", best=best[1], ms=best[0])


def fftconv_once(out: Any) -> None:
    """One forward and backward at the sweep's shape, for a profiler wrapped around this process (ncu)."""
    from longseq.kernels.fftconv import fftconv

    dev = require_cuda()
    B, D, L = FFTCONV_SHAPE
    x = torch.randn(B, D, L, device=dev, dtype=torch.bfloat16, requires_grad=True)
    h = torch.randn(D, L, device=dev).requires_grad_()
    fftconv(x, h).backward(torch.randn_like(x))
    torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["scan", "flash", "fftconv", "fftconv_once"])
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--best-out", default=None, help="fftconv: write the fastest correct knobs here (JSON)")
    parser.add_argument("--length", type=int, default=None, help="fftconv: sequence length (default 64K)")
    parser.add_argument(
        "--candidates", type=lambda v: [int(i) for i in v.split(",")], default=None,
        help="fftconv: comma-separated indices into FFTCONV_CANDIDATES (default: all)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = open(args.out, "a") if args.out else None  # noqa: SIM115
    try:
        if args.what == "fftconv":
            sweep_fftconv(out, args.best_out, args.length, args.candidates)
        else:
            {"scan": sweep_scan, "flash": sweep_flash, "fftconv_once": fftconv_once}[args.what](out)
    finally:
        if out is not None:
            out.close()


if __name__ == "__main__":
    sys.exit(main())
