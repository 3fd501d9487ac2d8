"""Test helpers shared by every kernel's tests: the tolerance rule, NaN-poisoned outputs, devices.

The tolerance rule (DEVELOPERS.md): the kernel's error against the fp32 reference must be at most
``factor`` (2) times the error of the *same math* run in the low-precision dtype, plus a small
epsilon. This is the rule flash-attn's test-suite uses; it adapts to each op's own rounding.
"""

from __future__ import annotations

import torch

from longseq.kernels._common import interpreting

__all__ = ["EPSILON", "assert_close", "compile_backend", "empty_poisoned", "kernel_device", "max_abs_error", "poison"]

#: The absolute floor added to the bound, relative to max(1, max|ref|), per dtype of the kernel output.
EPSILON = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float64: 1e-10}


def kernel_device() -> torch.device:
    """The device kernel tests run on: CPU under the Triton interpreter, else CUDA."""
    if interpreting():
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    raise RuntimeError("kernel tests need CUDA or TRITON_INTERPRET=1 (set by tests/conftest.py on CPU)")


def compile_backend() -> str:
    """``torch.compile`` backend for tests: ``inductor`` on a GPU; ``aot_eager`` on CPU.

    ``aot_eager`` still traces with dynamo (``fullgraph=True`` catches graph breaks) and runs the
    custom ops' fake implementations and registered autograd through AOTAutograd, which is what the
    tests check; it skips inductor's C++ code generation, which costs about a minute on 2 CPU cores.
    """
    return "aot_eager" if kernel_device().type == "cpu" else "inductor"


def poison(t: torch.Tensor) -> torch.Tensor:
    """Fill ``t`` with NaN (floating) or the dtype's min (integer) in place so unwritten memory shows."""
    return t.fill_(float("nan") if t.is_floating_point() else torch.iinfo(t.dtype).min)


def empty_poisoned(*shape: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.empty`` filled with NaN, for output buffers in tests."""
    return poison(torch.empty(*shape, dtype=dtype, device=device))


def max_abs_error(actual: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |actual - ref|`` computed in fp64; NaN anywhere gives ``inf``."""
    diff = (actual.double() - ref.double()).abs()
    if diff.numel() == 0:
        return 0.0
    if torch.isnan(diff).any():
        return float("inf")
    return diff.max().item()


def assert_close(
    actual: torch.Tensor,
    ref: torch.Tensor,
    ref_lowp: torch.Tensor | None = None,
    *,
    factor: float = 2.0,
    eps: float | None = None,
    name: str = "output",
) -> None:
    """Assert ``actual`` matches the fp32 ``ref`` under the project's one tolerance rule.

    Args:
        actual: the kernel's result (any float dtype).
        ref: the reference computed in fp32 (or fp64) on upcast inputs.
        ref_lowp: the same reference math run in the kernel's low-precision dtype. ``None`` when the
            kernel itself runs in fp32; the bound is then the epsilon alone.
        factor: allowed multiple of the low-precision reference's error.
        eps: absolute slack; default ``EPSILON[actual.dtype] * max(1, max|ref|)``.
        name: what is compared, for the failure message.
    """
    if actual.shape != ref.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != reference {tuple(ref.shape)}")
    if eps is None:
        scale = max(1.0, ref.detach().abs().max().item()) if ref.numel() else 1.0
        eps = EPSILON.get(actual.dtype, 1e-5) * scale
    err = max_abs_error(actual, ref)
    lowp_err = 0.0 if ref_lowp is None else max_abs_error(ref_lowp, ref)
    bound = factor * lowp_err + eps
    if not err <= bound:
        raise AssertionError(
            f"{name}: max abs error {err:.3e} exceeds {factor} x low-precision reference error "
            f"{lowp_err:.3e} + eps {eps:.1e} = {bound:.3e} (dtype {actual.dtype}, shape {tuple(actual.shape)})"
        )
