"""The same learner loop runs unchanged under ``accelerate launch`` with 2 CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_cpu_processes(tmp_path):
    launcher = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    if not Path(launcher).exists():
        pytest.skip("accelerate launcher not installed")
    worker = Path(__file__).with_name("dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        # --multi_gpu selects accelerate's multi-process (torchrun) launcher; with no GPU present
        # each process runs on the CPU and they synchronise over gloo.
        launcher,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
        str(worker),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "dist.json").read_text())
    assert result["processes"] == 2
    assert len(result["micro"]) == 3
    assert (tmp_path / "run" / "checkpoints" / "step-2" / "model.safetensors").is_file()
