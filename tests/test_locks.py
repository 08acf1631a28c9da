"""One run at a time: two runs started together, a killed holder, training folders and
reproduce profiles (mura_lib.locks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mura_lib.config import PROJ_ROOT
from mura_lib.errors import BusyError
from mura_lib.locks import exclusive_lock
from mura_lib.reproduce import main as reproduce_main
from mura_lib.reproduce import run_pipeline

pytest_plugins = ["fixtures_training"]  # tiny_tree, shared_cache_dir

HOLD = """
import os, sys, time
from mura_lib.errors import BusyError
from mura_lib.locks import exclusive_lock
lock, seconds, go = sys.argv[1], float(sys.argv[2]), sys.argv[3]
print("ready", flush=True)
while go and not os.path.exists(go):  # a start line: both try at the same moment
    time.sleep(0.01)
try:
    with exclusive_lock(lock, "the test folder", "wait"):
        print("holding", flush=True)
        time.sleep(seconds)
except BusyError as err:
    print(err, file=sys.stderr)
    sys.exit(2)
"""


def start_holder(lock: Path, seconds: float, go: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock), str(seconds), str(go or "")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJ_ROOT,
    )


def wait_until_holding(process: subprocess.Popen) -> None:
    assert process.stdout.readline().strip() == "ready"
    assert process.stdout.readline().strip() == "holding"


def test_two_at_once_exactly_one_proceeds(tmp_path) -> None:
    lock, go = tmp_path / "run" / ".lock", tmp_path / "go"
    both = [start_holder(lock, 3, go), start_holder(lock, 3, go)]
    for process in both:
        assert process.stdout.readline().strip() == "ready"
    go.touch()
    results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in both]
    assert sorted(code for code, _, _ in results) == [0, 2]
    (_, won, _), (_, _, message) = sorted(results, key=lambda r: r[0])
    winner = both[[code for code, _, _ in results].index(0)]
    assert won.split() == ["holding"]
    assert f"the test folder is in use by process {winner.pid} on {socket.gethostname()}" in message
    assert "since 20" in message and "a run that is killed frees it by itself" in message


def test_a_killed_holder_leaves_no_lock(tmp_path) -> None:
    lock = tmp_path / ".lock"
    holder = start_holder(lock, 60)
    wait_until_holding(holder)
    with pytest.raises(BusyError, match=f"in use by process {holder.pid}"):
        with exclusive_lock(lock, "the test folder", "wait"):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    with exclusive_lock(lock, "the test folder", "wait"):  # free again, nothing to clean up
        assert lock.is_file()


def test_a_second_training_into_a_running_folder_stops_at_once(
    tmp_path, tiny_tree, shared_cache_dir
) -> None:
    """Before the lock, the second run saw no last.pt yet and trained over the first one."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mura_lib", "train", "--data", str(tiny_tree), "--out"]
    argv += [str(out), "--arch", "small_cnn", "--image-size", "32", "--epochs", "500"]
    argv += ["--early-stop-patience", "0"]  # it must still be training when the second starts
    argv += ["--device", "cpu", "--cache-dir", str(shared_cache_dir)]
    env = {**os.environ, "MURA_PROGRESS": "log", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert any(line.startswith("epoch   1/") for line in first.stdout)  # it is training
        second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2
        assert second.stderr.startswith(
            f"error: the training folder {out} is in use by process {first.pid} on "
        )
        assert "train into another --out folder" in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert first.poll() is None  # the first run goes on, untouched
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
    assert (out / "last.pt").is_file()


def test_a_second_reproduce_neither_runs_nor_removes_the_first_ones_staging(
    tmp_path, capsys
) -> None:
    results_root, models_root = tmp_path / "results", tmp_path / "models"
    staging = results_root / ".staging-smoke"
    staging.mkdir(parents=True)
    (staging / "01_eda.ipynb").write_text("the first run's work")
    holder = start_holder(results_root / ".lock-smoke", 60)
    try:
        wait_until_holding(holder)
        with pytest.raises(BusyError, match=r"the reproduce profile 'smoke' is in use by"):
            run_pipeline("smoke", results_root=results_root, models_root=models_root)
        argv = ["--profile", "smoke", "--results-root", str(results_root)]
        assert reproduce_main([*argv, "--models-root", str(models_root)]) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
        assert (staging / "01_eda.ipynb").read_text() == "the first run's work"
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_the_lock_file_names_nobody_once_released(tmp_path) -> None:
    lock = tmp_path / ".lock"
    with exclusive_lock(lock, "x", "wait"):
        assert str(os.getpid()) in lock.read_text()
    assert lock.read_text() == ""
