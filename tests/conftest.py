"""Shared pytest set-up.

Kernel tests run on CPU through Triton's interpreter: ``TRITON_INTERPRET=1`` must be in the
environment before any ``@triton.jit`` function is defined, so it is set here, at collection
start, unless the caller chose (``make gpu-test`` sets ``TRITON_INTERPRET=0``).
On a machine with an NVIDIA driver the default is the compiled path.
"""

from __future__ import annotations

import os
import shutil

if "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "0" if shutil.which("nvidia-smi") else "1"

from pathlib import Path  # noqa: E402

# CI sets LONGSEQ_DATA=../shared/data (relative to the checkout); tests that chdir into tmp_path must
# still find it, so it is made absolute once, here.
if os.environ.get("LONGSEQ_DATA"):
    os.environ["LONGSEQ_DATA"] = str(Path(os.environ["LONGSEQ_DATA"]).expanduser().resolve())

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA, with the reason shown in the summary."""
    if torch.cuda.is_available() and os.environ["TRITON_INTERPRET"] in ("", "0"):
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and TRITON_INTERPRET=0 (run `make gpu-test` on the device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same seed, so failures reproduce."""
    torch.manual_seed(0)


@pytest.fixture
def device() -> torch.device:
    """The device kernel tests run on (CPU under the interpreter, else CUDA)."""
    from longseq.kernels.testing import kernel_device

    return kernel_device()


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The shared datasets: ``$LONGSEQ_DATA`` or ``../shared/data`` beside the repository."""
    root = Path(os.environ.get("LONGSEQ_DATA", REPO_ROOT.parent / "shared" / "data")).expanduser()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set LONGSEQ_DATA)")
    return root
