"""Ctrl-C and full disks: one line, status 130 (or 2), nothing left that a later run trusts."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mura_lib.cli import main
from mura_lib.config import PROJ_ROOT
from mura_lib.data.cache import build_cache
from mura_lib.disk import write_text_atomic
from mura_lib.errors import DiskFullError
from mura_lib.evaluation.compare import read_evaluation
from mura_lib.evaluation.predictions import write_predictions

pytest_plugins = ["fixtures_training"]  # tiny_tree, trained_run, shared_cache_dir
pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def interrupt_when(argv: list[str], marker: str, cwd: Path = PROJ_ROOT) -> tuple[int, str]:
    """Run ``argv`` as a terminal would (its own process group), press Ctrl-C (SIGINT to the
    whole group) once a line of its output starts with ``marker``; (status, stderr)."""
    env = {**os.environ, "MURA_PROGRESS": "log", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    for line in process.stdout:
        if line.startswith(marker):
            os.killpg(process.pid, signal.SIGINT)
            break
    code = process.wait(timeout=120)
    return code, process.stderr.read()


def test_ctrl_c_during_training(tmp_path, tiny_tree, shared_cache_dir) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mura_lib", "train", "--data", str(tiny_tree), "--out"]
    argv += [str(out), "--arch", "small_cnn", "--image-size", "32", "--epochs", "30"]
    argv += ["--device", "cpu", "--cache-dir", str(shared_cache_dir)]
    code, err = interrupt_when(argv, "epoch   1/")
    assert code == 130
    assert err == (
        f"interrupted: {out}/last.pt keeps the last finished epoch; continue with the same "
        "command and --resume\n"
    )
    assert (out / "last.pt").is_file()


def test_ctrl_c_during_reproduce(tmp_path, mura_tree, stand_in_notebooks) -> None:
    # The real command line, with notebook 02 standing in for a long training run.
    notebooks = stand_in_notebooks(train="import time\ntime.sleep(120)")
    script = (
        "import functools, pathlib, sys\n"
        "from mura_lib import reproduce\n"
        "reproduce.run_pipeline = functools.partial(\n"
        f"    reproduce.run_pipeline, notebooks_dir=pathlib.Path({str(notebooks)!r}))\n"
        "sys.exit(reproduce.main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", script, "--profile", "smoke", "--set", f"data_root={mura_tree}"]
    argv += ["--results-root", str(tmp_path / "results"), "--models-root", str(tmp_path / "m")]
    code, err = interrupt_when(argv, "[reproduce] smoke: running 02_train.ipynb")
    assert code == 130
    assert "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith("[reproduce]")]
    assert ours == [
        "[reproduce] interrupted: results/smoke was left unchanged; the partial run is in "
        f"{tmp_path / 'results' / '.failed-smoke'}"
    ]
    assert not (tmp_path / "results" / "smoke").exists()
    assert (tmp_path / "results" / ".failed-smoke" / "01_eda.ipynb").is_file()


def test_ctrl_c_during_evaluate_says_what_is_left(tmp_path, monkeypatch, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mura_lib.inference.evaluate.evaluate_checkpoint", interrupted)
    argv = ["evaluate", "--checkpoint", "x.pt", "--data", str(tmp_path), "--out", str(tmp_path)]
    assert main(argv) == 130
    assert capsys.readouterr().err == (
        f"interrupted: {tmp_path} holds no complete evaluation (its metrics.json is written "
        "last); run the command again\n"
    )


def test_an_interrupted_evaluation_leaves_no_metrics_to_trust(
    tmp_path, monkeypatch, trained_run, tiny_tree, shared_cache_dir
) -> None:
    from mura_lib.inference.evaluate import evaluate_checkpoint

    kwargs = dict(device="cpu", n_boot=10, cache_dir=str(shared_cache_dir), progress="none")
    best = trained_run[0] / "best.pt"
    evaluate_checkpoint(best, tiny_tree, tmp_path, **kwargs)
    assert (tmp_path / "metrics.json").is_file()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mura_lib.evaluation.report.evaluation_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_checkpoint(best, tiny_tree, tmp_path, **kwargs)
    assert (tmp_path / "predictions.csv").is_file() and not (tmp_path / "metrics.json").exists()
    with pytest.raises(Exception, match="metrics.json does not exist"):
        read_evaluation(tmp_path)


def fail_writes(monkeypatch) -> None:
    def no_space(self, *args, **kwargs):
        raise ENOSPC

    monkeypatch.setattr(Path, "write_text", no_space)


def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = write_text_atomic(tmp_path / "metrics.json", "{}")
    fail_writes(monkeypatch)
    with pytest.raises(DiskFullError) as info:
        write_text_atomic(path, '{"new": 1}', "metrics.json")
    monkeypatch.undo()
    assert str(info.value).startswith(
        f"no space left on the device of {tmp_path} while writing metrics.json"
    )
    assert path.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary


def test_a_full_disk_while_writing_predictions(tmp_path, monkeypatch) -> None:
    import pandas as pd

    frame = pd.DataFrame({"study_id": ["s"], "body_part": ["XR_HAND"], "label": [1], "prob": [0.5]})
    fail_writes(monkeypatch)
    with pytest.raises(DiskFullError, match="while writing predictions"):
        write_predictions(frame, tmp_path / "out" / "predictions.csv")
    monkeypatch.undo()
    assert list((tmp_path / "out").iterdir()) == []


def test_a_full_disk_while_building_the_cache(tmp_path, monkeypatch, tiny_tree) -> None:
    from mura_lib.data import cache as cache_module
    from mura_lib.data import read_mura

    frame = read_mura(tiny_tree).head(8)

    def no_space(path):
        raise ENOSPC

    monkeypatch.setattr(cache_module, "_reserve", no_space)
    with pytest.raises(DiskFullError, match=f"device of {tmp_path / 'c'} while writing the image"):
        build_cache(frame, size=32, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "c").iterdir()] == []  # nothing a later run could trust
    cache = build_cache(frame, size=32, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert cache.report.rebuilt and cache.report.n_kept == 8


def test_a_full_disk_during_evaluate_is_one_line(
    tmp_path, monkeypatch, trained_run, tiny_tree, shared_cache_dir, capsys
) -> None:
    fail_writes(monkeypatch)
    argv = ["evaluate", "--checkpoint", str(trained_run[0] / "best.pt"), "--data", str(tiny_tree)]
    argv += ["--out", str(tmp_path / "e"), "--device", "cpu", "--n-boot", "5"]
    assert main([*argv, "--cache-dir", str(shared_cache_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no space left on the device of {tmp_path / 'e'} while writing")
    assert err.count("\n") == 1
    assert not (tmp_path / "e" / "metrics.json").exists()
