"""fit(): files and checkpoint contents, protocol, determinism, resuming, refusals."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import mura_lib.training.train as train_module
from mura_lib import __version__
from mura_lib.data import read_mura, split_by_patient
from mura_lib.errors import ConfigError
from mura_lib.training.config import TrainConfig
from mura_lib.training.live_log import EVENT_FILES, SCALARS, epoch_scalars
from mura_lib.training.losses import weighted_bce
from mura_lib.training.train import fit

pytest_plugins = ["fixtures_training"]  # tiny_tree, tiny_config, trained_run
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# history columns that must repeat exactly (everything but the timings)
REPEATABLE = [
    "epoch",
    "train_loss",
    "val_loss",
    "study_kappa",
    "study_auroc",
    "study_f1",
    "lr",
    "best",
]


def assert_same_history(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(actual[REPEATABLE], expected[REPEATABLE], check_exact=True)


def assert_scalars_match_history(run: Path) -> None:
    """The run's TensorBoard scalars are history.csv's numbers, one step per epoch, once each."""
    history = pd.read_csv(run / "history.csv")
    accumulator = EventAccumulator(str(run))
    accumulator.Reload()  # every event file of the folder, in order, as TensorBoard reads them
    logged_tags = accumulator.Tags()["scalars"]
    for column, tag in SCALARS.items():
        rows = history[history[column].notna()]
        expected = [
            (int(e), float(v))
            for e, v in zip(rows["epoch"], rows[column].astype(np.float32), strict=True)
        ]
        logged = [(e.step, e.value) for e in accumulator.Scalars(tag)] if tag in logged_tags else []
        assert logged == expected, tag


def assert_same_weights(path_a, path_b) -> None:
    a = torch.load(path_a, weights_only=True)["model"]
    b = torch.load(path_b, weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_writes_its_files(trained_run):
    out, summary = trained_run
    names = {p.name for p in out.iterdir()}
    events = {name for name in names if name.startswith("events.out.tfevents.")}
    assert len(events) == 1  # TensorBoard's live log (mura_lib.training.live_log)
    # no temporary file; .lock is the folder's lock file (mura_lib.locks), free once fit returns
    assert names - events == {"best.pt", "last.pt", "history.csv", "val_predictions.csv", ".lock"}
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3] and summary["epochs_run"] == 3
    assert {"train_loss", "val_loss", "study_kappa", "study_auroc", "lr"} <= set(history.columns)
    assert history[["train_loss", "val_loss"]].notna().all().all()
    assert_same_history(history, summary["history"])


def test_best_checkpoint_holds_what_inference_needs(trained_run, tiny_config):
    out, summary = trained_run
    best = torch.load(out / "best.pt", weights_only=True)  # a plain dict, no pickled objects
    assert best["model_args"]["arch"] == "small_cnn" and best["model_args"]["in_chans"] == 1
    assert best["image_size"] == tiny_config.image_size and best["resize"] == "letterbox"
    assert set(best["normalization"]) == {"mean", "std"}
    assert 0.0 <= best["threshold"] <= 1.0 and best["threshold_rule"] == "max_kappa"
    assert best["train_args"] == asdict(tiny_config)
    assert set(best["data_fingerprint"]) == {"train", "val"}
    assert all(isinstance(v, str) and v for v in best["data_fingerprint"].values())
    assert best["code_version"].startswith(__version__)
    # the summary describes the best epoch, which history.csv marks as the last "best" row
    history = summary["history"]
    assert summary["best_epoch"] == best["epoch"] + 1
    assert summary["best_epoch"] == history.loc[history["best"], "epoch"].max()
    assert summary["threshold"] == best["threshold"] and summary["metrics"] == best["metrics"]

    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["finished"] is True
    assert {"optimizer", "lr_scheduler", "early_stopping"} <= set(last)
    assert "threshold" not in last  # thresholds come from the best epoch only


def test_rate_drops_after_each_epoch_without_improvement(trained_run, tiny_config):
    history = trained_run[1]["history"]
    assert history["lr"].iloc[0] == tiny_config.lr
    rows = list(history.itertuples())
    for previous, current in zip(rows[:-1], rows[1:], strict=True):
        # plateau_patience=0: one epoch without improvement divides the rate by 10
        factor = 1.0 if previous.best else tiny_config.plateau_factor
        assert current.lr == pytest.approx(previous.lr * factor)


def test_selection_uses_train_patients_only(trained_run, tiny_tree, tiny_config):
    out, _ = trained_run
    val = pd.read_csv(out / "val_predictions.csv")
    assert val["study_id"].str.startswith("train/").all()  # the official valid split is the test
    frame = split_by_patient(read_mura(tiny_tree), tiny_config.val_fraction, tiny_config.seed)
    expected = frame.loc[frame["subset"] == "val", "study_id"]
    assert sorted(val["study_id"]) == sorted(expected)
    assert val["patient_id"].max() < 11185 and val["prob"].between(0, 1).all()


def test_same_seed_gives_the_same_run(tmp_path, tiny_tree, tiny_config, trained_run):
    out_a, summary_a = trained_run
    summary_b = fit(tiny_tree, tmp_path / "again", tiny_config, progress="none")
    assert_same_history(summary_b["history"], summary_a["history"])
    assert summary_b["threshold"] == summary_a["threshold"]
    assert_same_weights(tmp_path / "again" / "best.pt", out_a / "best.pt")


def test_resume_equals_the_uninterrupted_run(
    tmp_path, monkeypatch, tiny_tree, tiny_config, trained_run
):
    out_a, summary_a = trained_run
    out = tmp_path / "resumed"
    real_train_one_epoch = train_module.train_one_epoch

    def interrupted(model, loader, augmenter, optimizer, epoch, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        return real_train_one_epoch(model, loader, augmenter, optimizer, epoch, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_tree, out, tiny_config, progress="none")
    monkeypatch.undo()
    assert len(pd.read_csv(out / "history.csv")) == 1
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 0

    # epochs may change on resume: first stop at 2 epochs, then extend the run to 3
    summary = fit(tiny_tree, out, replace(tiny_config, epochs=2), resume=True, progress="none")
    assert summary["epochs_run"] == 2
    summary = fit(tiny_tree, out, tiny_config, resume=True, progress="none")

    assert summary["epochs_run"] == 3
    assert_same_history(summary["history"], summary_a["history"])
    assert_same_history(pd.read_csv(out / "history.csv"), summary_a["history"])
    assert summary["best_epoch"] == summary_a["best_epoch"]
    assert summary["metrics"] == summary_a["metrics"]
    assert summary["threshold"] == summary_a["threshold"]
    for name in ("best.pt", "last.pt"):
        assert_same_weights(out / name, out_a / name)
    assert (out / "val_predictions.csv").read_text() == (out_a / "val_predictions.csv").read_text()
    assert_scalars_match_history(out)  # one event file per session, each epoch logged once


def test_tensorboard_scalars_match_the_history(trained_run):
    assert_scalars_match_history(trained_run[0])


def test_an_epoch_logged_but_not_saved_is_logged_once_after_resuming(
    tmp_path, monkeypatch, tiny_tree, tiny_config
):
    config = replace(tiny_config, arch="small_cnn", epochs=2)
    real_save = train_module.save_checkpoint

    def killed_before_last_pt(state, path):
        if Path(path).name == "last.pt" and state["epoch"] == 1:
            raise KeyboardInterrupt  # epoch 2's scalars are on disk, its last.pt is not
        return real_save(state, path)

    monkeypatch.setattr(train_module, "save_checkpoint", killed_before_last_pt)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_tree, tmp_path, config, progress="none")
    monkeypatch.undo()
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars(SCALARS["val_loss"])] == [1, 2]

    fit(tiny_tree, tmp_path, config, resume=True, progress="none")
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [1, 2]
    assert_scalars_match_history(tmp_path)  # epoch 2 once: the resumed writer purged the first


def test_resuming_a_finished_run_trains_no_more(tmp_path, tiny_tree, tiny_config, trained_run):
    out_a, summary_a = trained_run
    out = shutil.copytree(out_a, tmp_path / "copy")
    # device and cache folder may differ on resumption (another machine)
    changed = replace(tiny_config, device="auto", cache_dir=str(tmp_path / "cache"))
    summary = fit(tiny_tree, out, changed, resume=True, progress="none")
    assert_same_history(summary["history"], summary_a["history"])
    assert (out / "history.csv").read_text() == (out_a / "history.csv").read_text()


def test_overwrite_starts_again(tmp_path, tiny_tree, tiny_config, trained_run):
    out = shutil.copytree(trained_run[0], tmp_path / "copy")
    config = replace(tiny_config, epochs=1)
    summary = fit(tiny_tree, out, config, overwrite=True, progress="none")
    assert summary["epochs_run"] == 1
    assert len(pd.read_csv(out / "history.csv")) == 1
    assert torch.load(out / "best.pt", weights_only=True)["train_args"]["epochs"] == 1
    assert len(list(out.glob("events.out.tfevents.*"))) == 1  # the old run's went with it
    assert_scalars_match_history(out)


def test_refuses_to_clobber_a_run(tiny_tree, tiny_config, trained_run):
    out, _ = trained_run
    before = (out / "last.pt").stat().st_mtime_ns
    with pytest.raises(ConfigError) as info:
        fit(tiny_tree, out, tiny_config, progress="none")
    assert str(info.value) == (
        f"{out} already holds a training run: pass --resume to continue it, "
        "--overwrite to start again, or choose another --out folder"
    )
    assert (out / "last.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lr": 2e-3}, "lr 0.001 -> 0.002"),
        ({"seed": 1}, "seed 0 -> 1"),
        ({"image_size": 48}, "image_size 32 -> 48"),
        ({"arch": "resnet18", "seed": 3}, "arch 'small_cnn' -> 'resnet18', seed 0 -> 3"),
    ],
)
def test_resume_refuses_changed_parameters(tiny_tree, tiny_config, trained_run, change, named):
    out, _ = trained_run
    with pytest.raises(ConfigError) as info:
        fit(tiny_tree, out, replace(tiny_config, **change), resume=True, progress="none")
    message = str(info.value)
    assert message.startswith(f"cannot resume {out / 'last.pt'}: parameters differ")
    assert message.endswith(named)


def test_nothing_to_resume(tmp_path, tiny_tree, tiny_config):
    with pytest.raises(ConfigError, match="nothing to resume: .*last.pt does not exist"):
        fit(tiny_tree, tmp_path / "new", tiny_config, resume=True, progress="none")


def test_bad_patiences_are_refused_before_any_work(tmp_path, tiny_config):
    config = replace(tiny_config, plateau_patience=2, early_stop_patience=3)
    with pytest.raises(ConfigError, match="early_stop_patience=3 with plateau_patience=2"):
        fit(tmp_path / "no_data_here", tmp_path / "out", config, progress="none")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "epochs and batch_size must be >= 1, image_size >= 16, lr > 0"),
        ({"batch_size": 0}, "epochs and batch_size must be >= 1"),
        ({"image_size": 8}, "image_size >= 16"),
        ({"lr": 0.0}, "lr > 0"),
        ({"select_metric": "accuracy"}, "unknown selection metric 'accuracy'"),
        ({"loss": "hinge"}, r"loss='hinge': use one of \('bce', 'focal'\)"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change).validate()


def test_config_from_params_takes_the_fields_and_ignores_the_rest():
    # a notebook's globals or a profile's parameters hold other names too
    config = TrainConfig.from_params({"epochs": 4, "lr": 3e-4, "data_root": "/x", "S": 1})
    assert config == TrainConfig(epochs=4, lr=3e-4)


@pytest.mark.parametrize("study_level", [False, True])
def test_the_default_validation_loss_is_the_weighted_bce_of_the_probabilities(study_level):
    # the criterion sees the logits of the clipped probabilities; the loss must be the BCE of
    # the probabilities themselves, computed directly (float64, as the selection compares it)
    frame = pd.DataFrame(
        {
            "study_id": ["a", "a", "b", "c", "c", "d", "e"],
            "body_part": ["HAND"] * 7,
            "label": [1, 1, 0, 1, 1, 0, 1],
        }
    )
    # study-level: every view carries its study's probability; 0 and 1 are clipped
    probs = np.array([0.9, 0.9, 0.2, 1.0, 1.0, 0.0, 0.0], dtype=np.float32)
    weights = np.array([0.75, 0.75, 0.25, 0.75, 0.75, 0.25, 0.75], dtype=np.float32)
    y, p = frame["label"].to_numpy(), np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    terms = weights * -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if study_level:
        terms = terms[~frame["study_id"].duplicated().to_numpy()]
    metrics = train_module._validation_metrics(frame, probs, weights, weighted_bce, study_level)
    assert metrics["val_loss"] == pytest.approx(terms.mean(), rel=1e-12)


def test_config_module_does_not_import_torch():
    # the command line builds and checks a TrainConfig before anything heavy is imported
    code = "import sys, mura_lib.training.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_cosine_run_cannot_be_resumed_with_more_epochs(
    tmp_path, tiny_tree, tiny_config, trained_run
):
    """The cosine schedule reaches 0 at the run's first ``epochs``: more would climb again."""
    run, _ = trained_run
    out = tmp_path / "run"
    out.mkdir()
    last = torch.load(run / "last.pt", weights_only=True)
    cosine = replace(tiny_config, lr_schedule="cosine", early_stop_patience=0)
    last["train_args"] = asdict(cosine)
    torch.save(last, out / "last.pt")
    longer = replace(cosine, epochs=cosine.epochs + 2)
    with pytest.raises(ConfigError, match=r"parameters differ .*: epochs 3 -> 5"):
        fit(tiny_tree, out, longer, resume=True, progress="none")


def test_a_session_in_the_same_second_as_the_last_sorts_after_it(tmp_path):
    """TensorBoard reads event files in name order (the second they were made comes first)."""
    stamp = int(time.time())
    earlier = tmp_path / f"events.out.tfevents.{stamp}.host.1.9"  # the session before
    earlier.write_bytes(b"")
    with epoch_scalars(tmp_path, first_epoch=1):
        pass
    names = sorted(p.name for p in tmp_path.glob(EVENT_FILES))
    assert names[0] == earlier.name and int(names[1].split(".")[3]) > stamp
