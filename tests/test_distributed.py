"""Training on two processes with torchrun (gloo on the CPU): the same step as one process, a
whole run that evaluate accepts, and a killed run that resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mura_lib.config import PROJ_ROOT
from mura_lib.inference.evaluate import evaluate_checkpoint

pytest_plugins = ["fixtures_training"]  # tiny_tree, shared_cache_dir
pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MURA_PROGRESS": "log"}


def torchrun(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TORCHRUN, *argv], capture_output=True, text=True, cwd=PROJ_ROOT, env=ENV, **kwargs
    )


def train_argv(tiny_tree: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    argv = ["-m", "mura_lib", "train", "--data", str(tiny_tree), "--out", str(out)]
    argv += ["--arch", "small_cnn", "--image-size", "32", "--epochs", "3", "--batch-size", "16"]
    argv += ["--early-stop-patience", "0", "--device", "cpu", "--cache-dir", str(cache)]
    return [*argv, *extra]


def weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return state["model"] if "model" in state else state


def test_one_ddp_step_equals_the_one_process_step(tmp_path) -> None:
    script = str(PROJ_ROOT / "tests" / "ddp_step.py")
    alone = subprocess.run(
        [sys.executable, script, str(tmp_path / "alone.pt")], env=ENV, capture_output=True
    )
    assert alone.returncode == 0, alone.stderr
    ddp = torchrun(script, str(tmp_path / "ddp.pt"), timeout=300)
    assert ddp.returncode == 0, ddp.stderr
    a, b = weights(tmp_path / "alone.pt"), weights(tmp_path / "ddp.pt")
    changed = 0
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
        changed += name.endswith("weight") and not torch.equal(a[name], weights_init(name))
    assert changed  # the step did move the weights


def weights_init(name: str) -> torch.Tensor:
    from mura_lib.models.build import build_model

    torch.manual_seed(0)
    return build_model("small_cnn").state_dict()[name]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, tiny_tree, shared_cache_dir) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun(*train_argv(tiny_tree, out, shared_cache_dir), timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])  # one summary: rank 0's
    assert summary["epochs_run"] == 3 and done.stdout.count('"out_dir"') == 1
    return out


def test_a_torchrun_run_writes_one_set_of_files_that_evaluate_accepts(
    ddp_run, tiny_tree, shared_cache_dir, tmp_path
) -> None:
    names = {p.name for p in ddp_run.iterdir()}
    events = {name for name in names if name.startswith("events.out.tfevents.")}
    assert len(events) == 1  # TensorBoard's, written by rank 0 alone
    assert names - events == {"best.pt", "last.pt", "history.csv", "val_predictions.csv", ".lock"}
    history = pd.read_csv(ddp_run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]  # one row per epoch, not one per rank
    val = pd.read_csv(ddp_run / "val_predictions.csv")
    assert val["prob"].notna().all()  # every validation image, gathered from both ranks
    report = evaluate_checkpoint(
        ddp_run / "best.pt",
        tiny_tree,
        tmp_path,
        device="cpu",
        n_boot=10,
        cache_dir=str(shared_cache_dir),
        progress="none",
    )
    assert report["study"]["overall"]["n"] > 0 and (tmp_path / "metrics.json").is_file()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_killed_worker_stops_the_run_and_resume_continues_it(
    ddp_run, tiny_tree, shared_cache_dir, tmp_path
) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        [*TORCHRUN, *train_argv(tiny_tree, out, shared_cache_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJ_ROOT,
        env=ENV,
    )
    for line in process.stdout:
        if line.startswith("epoch   1/"):
            break
    workers = children(process.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)  # one worker dies
    code = process.wait(timeout=120)
    assert code != 0  # the whole run stops, non-zero
    last = torch.load(out / "last.pt", weights_only=True)  # intact: written atomically
    done_epochs = last["epoch"] + 1
    assert 1 <= done_epochs < 3 or done_epochs == 3
    time.sleep(0.5)
    resumed = torchrun(*train_argv(tiny_tree, out, shared_cache_dir, "--resume"), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    if done_epochs < 3:
        assert f"resuming {out / 'last.pt'} after epoch {done_epochs}" in resumed.stdout
    history = pd.read_csv(out / "history.csv")
    reference = pd.read_csv(ddp_run / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]
    columns = ["train_loss", "val_loss", "study_auroc", "lr"]
    np.testing.assert_allclose(history[columns], reference[columns], rtol=0, atol=1e-6)
    for name, value in weights(ddp_run / "last.pt").items():
        torch.testing.assert_close(weights(out / "last.pt")[name], value, rtol=0, atol=1e-6)


def test_a_config_survives_the_command_line(tiny_config) -> None:
    from dataclasses import asdict

    from mura_lib.cli import build_parser
    from mura_lib.training.config import TrainConfig

    args = build_parser("train").parse_args(
        ["train", "--data", "d", "--out", "o", *tiny_config.to_argv()]
    )
    fields = {k: v for k, v in vars(args).items() if k in asdict(tiny_config)}
    assert TrainConfig(**fields) == tiny_config


def test_notebook_training_through_torchrun(tmp_path, tiny_tree, tiny_config, capsys) -> None:
    from dataclasses import replace

    from mura_lib.training.launch import fit_with_torchrun

    config = replace(tiny_config, arch="small_cnn", epochs=1)
    summary = fit_with_torchrun(tiny_tree, tmp_path / "run", config, 2)
    assert summary["epochs_run"] == 1 and list(summary["history"]["epoch"]) == [1]
    assert "x 2 processes" in capsys.readouterr().out  # the run's log is streamed
    assert (tmp_path / "run" / "best.pt").is_file()
