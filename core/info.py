"""``longseq info``: versions, accelerator availability, which kernels and attention backends run here."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import os
import pkgutil
import platform

PACKAGES = (
    "longseq",
    "torch",
    "triton",
    "lightning",
    "timm",
    "torchaudio",
    "torchvision",
    "numpy",
    "biopython",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages longseq depends on (``"missing"`` when absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def accelerator() -> dict[str, str]:
    """CUDA and Triton status: device name, compute capability, interpreter mode."""
    import torch

    info = {"cuda": "no"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info = {
            "cuda": f"yes ({torch.cuda.device_count()} device(s), CUDA {torch.version.cuda})",
            "device": f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB)",
        }
    interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    try:
        import triton  # noqa: F401

        info["triton"] = "interpreter (TRITON_INTERPRET=1, CPU)" if interp else "compiled (needs CUDA)"
    except ImportError:
        info["triton"] = "missing"
    return info


def kernels() -> dict[str, str]:
    """Each kernel folder of ``longseq.kernels`` and the path it takes on this machine."""
    import torch

    import longseq.kernels as pkg
    from longseq.kernels._common import interpreting

    if torch.cuda.is_available() and not interpreting():
        mode = "triton (CUDA)"
    elif interpreting():
        mode = "triton interpreter (slow, for tests)"
    else:
        mode = "PyTorch reference (no GPU; set TRITON_INTERPRET=1 to run the kernels in the interpreter)"
    found = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.ispkg:
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
            found[mod.name] = mode
    return found


def report() -> str:
    """The whole ``longseq info`` text."""
    lines = ["longseq info", "", "versions:"]
    lines += [f"  {k:12s} {v}" for k, v in versions().items()]
    lines += ["", "accelerator:"]
    lines += [f"  {k:12s} {v}" for k, v in accelerator().items()]
    lines += ["", "kernels:"]
    lines += [f"  {k:12s} {v}" for k, v in kernels().items()]
    from longseq.core.attention import format_support_matrix

    lines += ["", "attention backends (feature support on this machine):", format_support_matrix()]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    print(report())
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``longseq info``."""
    p = subparsers.add_parser("info", help="versions, GPU/Triton availability, usable kernels")
    p.set_defaults(func=_run)
