"""The command line: train -> evaluate -> predict round trip; user errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mura_lib.config
from mura_lib.cli import main
from mura_lib.config import PROJ_ROOT
from mura_lib.data import read_mura

pytest_plugins = ["fixtures_training"]  # tiny_tree, trained_run, shared_cache_dir
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_user_error(rc: int, captured: pytest.CaptureResult, expected: str) -> None:
    """Status 2 and the message alone, on one stderr line: no traceback, nothing on stdout."""
    assert rc == 2
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err
    assert expected in captured.err


def test_train_evaluate_predict_round_trip(
    tmp_path, tiny_tree, shared_cache_dir, monkeypatch, capsys
):
    monkeypatch.setenv("MURA_PROGRESS", "log")  # one line per epoch, whatever the terminal
    monkeypatch.setattr(mura_lib.config, "CACHE_DIR", shared_cache_dir)  # evaluate's cache
    run = tmp_path / "run"
    rc = main([
        "train", "--data", str(tiny_tree), "--out", str(run), "--image-size", "32",
        "--epochs", "1", "--batch-size", "16", "--lr", "0.001", "--device", "cpu",
        "--cache-dir", str(shared_cache_dir), "--no-hflip", "--rotate-degrees", "10",
    ])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert lines[-2].startswith("epoch   1/1")  # the log lines come first
    summary = json.loads(lines[-1])  # the summary is the last line, as JSON
    assert summary["best_checkpoint"] == str(run / "best.pt") and summary["epochs_run"] == 1
    train_args = torch.load(run / "best.pt", weights_only=True)["train_args"]
    assert train_args["hflip"] is False and train_args["rotate_degrees"] == 10.0
    assert train_args["image_size"] == 32 and train_args["plateau_patience"] == 2  # default

    rc = main([
        "evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(tiny_tree),
        "--out", str(tmp_path / "eval"), "--n-boot", "20", "--device", "cpu",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert " studies, " in out and "metrics.json" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["bootstrap"]["n_boot"] == 20

    valid = read_mura(tiny_tree).query("split == 'valid'")
    study, image = Path(valid["path"].iloc[0]).parent, Path(valid["path"].iloc[-1])
    rc = main(["predict", "--checkpoint", str(run / "best.pt"), str(study), str(image),
               "--device", "cpu", "--cam", str(tmp_path / "cams")])  # fmt: skip
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    assert [r["input"] for r in results] == [str(study), str(image)]
    assert all(r["prediction"] in ("normal", "abnormal") for r in results)
    # one overlay per view, although both studies are folders named study1_<label>
    assert len(list((tmp_path / "cams").glob("*_cam.png"))) == results[0]["n_views"] + 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["evaluate", "--checkpoint", "{tmp}/missing.pt", "--data", "{tree}", "--out",
          "{tmp}/out"], "error: checkpoint {tmp}/missing.pt does not exist"),
        (["train", "--data", "{tmp}/nowhere", "--out", "{tmp}/run"],
         "error: {tmp}/nowhere: no such folder"),
        (["train", "--data", "{tree}", "--out", "{tmp}/run", "--plateau-patience", "5",
          "--early-stop-patience", "5"], "error: early_stop_patience=5 with plateau_patience=5"),
        (["train", "--data", "{tree}", "--out", "{tmp}/run", "--resume"],
         "error: nothing to resume: {tmp}/run/last.pt does not exist"),
        (["predict", "--checkpoint", "{best}", "{tmp}/nope.png", "--device", "cpu"],
         "error: {tmp}/nope.png does not exist"),
        (["describe", "{tmp}/nowhere"], "error: {tmp}/nowhere: no such folder"),
    ],
    ids=["missing-checkpoint", "wrong-data-folder", "bad-patiences", "nothing-to-resume",
         "missing-image", "describe-wrong-folder"],
)  # fmt: skip
def test_user_errors_print_one_line(tmp_path, tiny_tree, trained_run, capsys, argv, expected):
    values = {"tmp": tmp_path, "tree": tiny_tree, "best": trained_run[0] / "best.pt"}
    rc = main([arg.format(**values) for arg in argv])
    assert_user_error(rc, capsys.readouterr(), expected.format(**values))


def test_interrupted_training_says_how_to_continue(tmp_path, tiny_tree, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mura_lib.training.train.fit", interrupted)
    rc = main(["train", "--data", str(tiny_tree), "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert rc == 130
    assert captured.err == (
        f"interrupted: {tmp_path / 'run'}/last.pt keeps the last finished epoch; continue with "
        "the same command and --resume\n"
    )


def test_python_dash_m_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJ_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mura_lib", "evaluate", "--checkpoint", "missing.pt",
         "--data", str(tmp_path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: checkpoint missing.pt does not exist")
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not Path(tmp_path / "out").exists()
