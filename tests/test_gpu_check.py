"""benchmarks/gpu_check.sh on a machine without a GPU: one line, status 0, JSON gpu null."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from mura_lib.config import PROJ_ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs the real check")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_without_a_gpu_the_check_says_so_and_exits_0() -> None:
    done = subprocess.run(
        ["bash", str(PROJ_ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("gpu_check: no CUDA GPU is visible")
    assert json.loads(lines[-1]) == {"gpu": None}


def test_gpu_train_runs_its_steps_on_the_cpu() -> None:
    """The throughput script's code path, tiny, on the CPU (the GPU run uses the same code)."""
    done = subprocess.run(
        [sys.executable, str(PROJ_ROOT / "benchmarks" / "gpu_train.py"), "--arch", "small_cnn"]
        + ["--size", "32", "--images", "64", "--batch-size", "16", "--device", "cpu"]
        + ["--warmup", "1", "--steps", "1", "--rounds", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["model_only_img_per_s"] > 0 and result["pipeline_img_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["pipeline_img_per_s"] / result["model_only_img_per_s"], abs=1e-3
    )
