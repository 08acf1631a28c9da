"""The command line: train -> evaluate -> predict round trip; user errors without tracebacks."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mura_lib.config
from mura_lib.cli import main
from mura_lib.config import PROJ_ROOT
from mura_lib.data import read_mura, split_by_patient
from mura_lib.inference.ensemble import write_manifest
from mura_lib.models.checkpoint import load_checkpoint, save_checkpoint
from mura_lib.training.config import CHOICES, TrainConfig, field_docs
from mura_lib.training.losses import image_loss_weights

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
        "--cache-dir", str(shared_cache_dir), "--augment", "rotate", "--rotate-degrees", "10",
    ])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert lines[-2].startswith("epoch   1/1")  # the log lines come first
    summary = json.loads(lines[-1])  # the summary is the last line, as JSON
    assert summary["best_checkpoint"] == str(run / "best.pt") and summary["epochs_run"] == 1
    train_args = torch.load(run / "best.pt", weights_only=True)["train_args"]
    assert train_args["augment"] == "rotate" and train_args["rotate_degrees"] == 10.0
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


@pytest.mark.parametrize("trained_on", ["other", "synthetic", "unrecorded", "ensemble"])
def test_predict_warns_once_about_a_model_of_synthetic_films(
    tmp_path, tiny_tree, trained_run, capsys, trained_on
):
    best = load_checkpoint(trained_run[0] / "best.pt")
    assert best["training_data"]["kind"] == "other"  # tiny_tree: not drawn by mura_lib.synthetic
    synthetic = save_checkpoint(
        {**best, "training_data": {**best["training_data"], "kind": "synthetic"}},
        tmp_path / "synthetic.pt",
    )
    source = {
        "other": trained_run[0] / "best.pt",
        "synthetic": synthetic,
        # a checkpoint written before training_data was recorded: no warning, no error
        "unrecorded": save_checkpoint(
            {k: v for k, v in best.items() if k != "training_data"}, tmp_path / "old.pt"
        ),
        "ensemble": write_manifest(
            tmp_path / "ensemble.json",
            [trained_run[0] / "best.pt", synthetic],
            {"how": "named by the test"},
            threshold=0.5,
            threshold_rule="fixed",
        ),
    }[trained_on]
    study = next((tiny_tree / "valid").glob("*/*/*"))
    rc = main(["predict", "--checkpoint", str(source), str(study), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0 and json.loads(captured.out)["input"] == str(study)
    who = {
        "synthetic": f"{source} was",
        "ensemble": f"1 of the 2 members of {source} were",
    }.get(trained_on)
    assert captured.err == (
        ""
        if who is None
        else f"warning: {who} trained on synthetic films (mura_lib.synthetic), not radiographs: "
        "these outputs say nothing about radiographs\n"
    )


def test_train_with_the_focal_loss_validates_with_the_focal_loss(
    tmp_path, tiny_tree, shared_cache_dir, capsys
):
    run = tmp_path / "run"
    rc = main([
        "train", "--data", str(tiny_tree), "--out", str(run), "--loss", "focal",
        "--arch", "small_cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
        "--lr", "0.002", "--device", "cpu", "--cache-dir", str(shared_cache_dir),
    ])  # fmt: skip
    capsys.readouterr()
    assert rc == 0
    assert torch.load(run / "best.pt", weights_only=True)["train_args"]["loss"] == "focal"
    history = pd.read_csv(run / "history.csv")
    best = history[history["best"]].iloc[-1]  # the epoch whose predictions were saved

    # the focal loss (Lin et al. 2017, gamma 2) of the saved predictions, by hand
    val = pd.read_csv(run / "val_predictions.csv")
    frame = split_by_patient(read_mura(tiny_tree), 0.2, 0)
    weights = image_loss_weights(frame[frame["subset"] == "train"], val, "paper")
    probs = val["prob"].to_numpy(np.float32).astype(np.float64)  # float32, as predicted
    y, p = val["label"].to_numpy(), np.clip(probs, 1e-7, 1 - 1e-7)
    p_true = np.where(y == 1, p, 1 - p)
    focal = weights * (1 - p_true) ** 2 * -np.log(p_true)
    assert best["val_loss"] == pytest.approx(focal.mean(), rel=1e-9)
    assert best["val_loss"] < np.mean(weights * -np.log(p_true))  # not the BCE


def help_entries(text: str) -> dict[str, tuple[str, str]]:
    """{first flag: (invocation, help text)} of an argparse help page."""
    entries: dict[str, tuple[str, str]] = {}
    flag = None
    for line in text.splitlines():
        if line.startswith("  -"):
            invocation, _, help_text = line.strip().partition("  ")
            flag = invocation.split()[0].rstrip(",")
            entries[flag] = (invocation, help_text.strip())
        elif flag and line.startswith("    "):  # the help, wrapped or below a long invocation
            invocation, help_text = entries[flag]
            entries[flag] = (invocation, f"{help_text} {line.strip()}".strip())
        else:
            flag = None
    return entries


def test_train_help_documents_every_option_without_loading_torch():
    script = (
        "import contextlib, io, json, sys\n"
        "from mura_lib.cli import main\n"
        "pages = []\n"
        "for argv in (['--help'], ['evaluate', '--help'], ['train', '--help']):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    pages.append(out.getvalue())\n"
        "print(json.dumps({'train': pages[-1], 'torch': 'torch' in sys.modules}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJ_ROOT), "COLUMNS": "200"}  # no wrapped words
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["torch"] is False  # `mura --help`, `evaluate --help`, `train --help`

    entries = help_entries(result["train"])
    assert all(help_text for _, help_text in entries.values()), entries
    docs = field_docs()
    for field in dataclasses.fields(TrainConfig):
        assert docs[field.name], f"TrainConfig.{field.name} has no comment to show as its help"
        invocation, help_text = entries["--" + field.name.replace("_", "-")]
        shown = '""' if field.default == "" else field.default
        assert help_text == f"{docs[field.name]} (default: {shown})"
        if field.name in CHOICES:
            assert invocation.endswith("{" + ",".join(CHOICES[field.name]) + "}")
    assert entries["--loss"] == ("--loss {bce,focal}", f"{docs['loss']} (default: bce)")


def test_train_refuses_a_value_outside_its_choices(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "d", "--out", "o", "--loss", "hinge"])
    assert info.value.code == 2
    assert "argument --loss: invalid choice: 'hinge' (choose from" in capsys.readouterr().err
