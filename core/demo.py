"""``longseq demo``: the end-to-end path the package has today.

1. prints ``longseq info``;
2. runs the fused RMSNorm kernel forward and backward (compiled Triton on a GPU, Triton's
   interpreter on a CPU) and compares it with the fp32 reference;
3. trains a tiny residual MLP that uses the kernel for a few steps on synthetic data;
4. checks the shared datasets under the data root.

``make demo`` runs the genomics quickstart (``longseq-genomics quickstart``) instead; this command stays
as a quick check of an installation's kernels and data root.
"""

from __future__ import annotations

import argparse

import torch


def _kernel_check(device: torch.device) -> float:
    from longseq.kernels.rmsnorm import rms_norm, rms_norm_ref

    x = torch.randn(64, 257, device=device, requires_grad=True)
    w = torch.rand(257, device=device, requires_grad=True)
    y = rms_norm(x, w)
    gx, gw = torch.autograd.grad(y.square().sum(), (x, w))
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    yr = rms_norm_ref(xr, wr)
    rgx, rgw = torch.autograd.grad(yr.square().sum(), (xr, wr))
    return max((y - yr).abs().max().item(), (gx - rgx).abs().max().item(), (gw - rgw).abs().max().item())


def _tiny_training(device: torch.device, steps: int) -> tuple[float, float]:
    from longseq.kernels.rmsnorm import rms_norm

    gen = torch.Generator(device="cpu").manual_seed(0)
    dim = 32
    target = torch.randn(dim, dim, generator=gen).to(device)
    w_in = torch.nn.Parameter(torch.randn(dim, dim, generator=gen).to(device) / dim**0.5)
    w_norm = torch.nn.Parameter(torch.ones(dim, device=device))
    opt = torch.optim.Adam([w_in, w_norm], lr=3e-2)
    losses = []
    for _ in range(steps):
        x = torch.randn(128, dim, generator=gen).to(device)
        pred = x + rms_norm(x @ w_in, w_norm)  # pre-norm residual branch
        loss = torch.nn.functional.mse_loss(pred, x + torch.tanh(x @ target))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def run(root: str | None = None, steps: int = 30) -> int:
    """Run the demo; returns a process exit status (0 when every check passed)."""
    from rich.console import Console

    from longseq.core import info
    from longseq.core.data import list_datasets, resolve_root, verify
    from longseq.kernels._common import interpreting

    console = Console()
    console.print(info.report())
    device = torch.device("cuda" if torch.cuda.is_available() and not interpreting() else "cpu")
    path = (
        "Triton (compiled)"
        if device.type == "cuda"
        else ("Triton interpreter" if interpreting() else "PyTorch reference")
    )
    console.rule(f"RMSNorm kernel on {device} via {path}")
    err = _kernel_check(device)
    ok = err < 1e-4
    console.print(f"max |kernel - fp32 reference| over y, dx, dweight: {err:.2e}  {'OK' if ok else 'FAILED'}")
    console.rule("tiny residual MLP with the kernel")
    first, last = _tiny_training(device, steps)
    console.print(f"loss {first:.4f} -> {last:.4f} after {steps} Adam steps")
    ok &= last < first
    console.rule("datasets")
    try:
        data_root = resolve_root(root)
    except Exception as exc:  # a bad --root is reported, not fatal for the demo
        console.print(f"[yellow]{exc}[/yellow]")
        return 0 if ok else 1
    if not data_root.is_dir():
        console.print(
            f"no data under {data_root} yet: `longseq data download NAME` fetches a dataset "
            "(set LONGSEQ_DATA or --root to use another folder)"
        )
        return 0 if ok else 1
    for ds in list_datasets():
        rep = verify(ds, data_root, check_hash=False)  # sizes only; `longseq data verify` hashes
        status = "OK" if rep.passed else f"{len(rep.missing)} missing, {len(rep.corrupt)} corrupt"
        console.print(f"  {ds.name:26s} {status}")
    console.print(f"data root: {data_root} (set LONGSEQ_DATA or --root; `longseq data download NAME` fetches)")
    return 0 if ok else 1


def _run(args: argparse.Namespace) -> int:
    return run(args.root, args.steps)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``longseq demo``."""
    p = subparsers.add_parser("demo", help="end-to-end check: kernel vs reference, tiny training, data")
    p.add_argument("--root", default=None, help="data root (default: $LONGSEQ_DATA or ~/.cache/longseq)")
    p.add_argument("--steps", type=int, default=30, help="training steps of the tiny model")
    p.set_defaults(func=_run)
