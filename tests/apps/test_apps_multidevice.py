"""Each app trains on N devices through LightningCLI's own flags (``--trainer.devices N
--trainer.strategy ddp``): two CPU processes (gloo) stand in for two GPUs. The console scripts run in a
subprocess, as users run them, so Lightning's DDP launcher can start its second process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DDP = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu", "--trainer.fast_dev_run=2"]


def _run(script: str, args: list[str], cwd: Path, data_root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(script)
    if not exe.exists():
        pytest.skip(f"console script {script} is not installed next to {sys.executable}")
    env = {**os.environ, "LONGSEQ_DATA": str(data_root), "TRITON_INTERPRET": "0", "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_genomics_pretraining_on_two_processes(shared_data_root: Path, tmp_path: Path) -> None:
    proc = _run("longseq-genomics", ["fit", "--config", "demo.yaml", *DDP], tmp_path, shared_data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout  # the second process joined
    assert (tmp_path / "runs" / "demo" / "pretrained" / "config.json").is_file()


@pytest.mark.slow
def test_forecasting_on_two_processes(shared_data_root: Path, tmp_path: Path) -> None:
    config = REPO / "apps" / "timeseries" / "configs" / "dlinear_etth1_336_96.yaml"
    proc = _run(
        "longseq-timeseries", ["fit", "--config", str(config), "--data.batch_size=4", *DDP], tmp_path, shared_data_root
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout  # the second process joined
