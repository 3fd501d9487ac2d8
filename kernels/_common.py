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


def check_cu_seqlens(cu_seqlens: torch.Tensor, total: int, *, total_name: str | None = None) -> None:
    """Raise ``ValueError`` unless ``cu_seqlens`` follows the project's varlen convention: a 1-D int32
    ``[N+1]`` tensor starting at 0, non-decreasing, ending at ``total`` tokens.

    ``total_name`` describes the total in the message (default ``"total tokens {total}"``). The one
    check behind ``longseq.core.packing.validate_cu_seqlens`` and the kernels that take packed input.
    """
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(
            f"cu_seqlens must be a 1-D int32 tensor [N+1], got dtype {cu_seqlens.dtype} shape {tuple(cu_seqlens.shape)}"
        )
    first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
    if first != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {first}")
    if last != total:
        raise ValueError(f"cu_seqlens must end at {total_name or f'total tokens {total}'}, got {last}")
    if cu_seqlens.numel() > 1 and bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
        raise ValueError(f"cu_seqlens must be non-decreasing, got {cu_seqlens.tolist()}")
