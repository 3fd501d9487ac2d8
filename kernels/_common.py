"""Small helpers shared by the kernel folders: run-mode detection and input validation.

Kernels import only torch and triton (the dependency rule), so these helpers do too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

import torch

#: Floating dtypes every kernel accepts unless it says otherwise.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """Whether the Triton path can run on ``t``: a CUDA tensor, or any tensor under the interpreter."""
    return t.is_cuda or interpreting()


def num_programs_hint(device: torch.device) -> int:
    """A persistent-grid size: twice the SM count on CUDA, a handful under the interpreter."""
    if device.type == "cuda":
        return 2 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def check_dtype(name: str, t: torch.Tensor, allowed: Iterable[torch.dtype] = FLOAT_DTYPES) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``t.dtype`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ``ValueError`` unless every given tensor (``None`` skipped) is on one device."""
    present = {k: v.device for k, v in tensors.items() if v is not None}
    if len(set(present.values())) > 1:
        desc = ", ".join(f"{k} on {d}" for k, d in present.items())
        raise ValueError(f"all tensors must be on one device, got {desc}")
