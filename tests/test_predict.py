"""evaluate_checkpoint (predictions.csv, metrics.json) and predict_paths (studies, files, CAMs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mura_lib.data import read_mura
from mura_lib.errors import CheckpointError, MuraError
from mura_lib.evaluation.predictions import read_predictions
from mura_lib.evaluation.report import evaluation_report
from mura_lib.inference.evaluate import evaluate_checkpoint
from mura_lib.inference.predict import cam_file_names, predict_paths

pytest_plugins = ["fixtures_training"]  # tiny_tree, trained_run, shared_cache_dir
pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_BOOT, SEED = 40, 7  # few resamples: the test is about equality, not about the intervals
METRICS = ("kappa", "auroc", "f1", "accuracy", "sensitivity", "specificity", "n")


@pytest.fixture(scope="module")
def best(trained_run) -> Path:
    return trained_run[0] / "best.pt"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, best, tiny_tree, shared_cache_dir, one_torch_thread):
    """(output folder, returned report) of evaluating the session's best.pt on valid."""
    out = tmp_path_factory.mktemp("evaluate")
    report = evaluate_checkpoint(
        best,
        tiny_tree,
        out,
        device="cpu",
        n_boot=N_BOOT,
        seed=SEED,
        cache_dir=str(shared_cache_dir),
        progress="none",
    )
    return out, report


@pytest.fixture
def two_view_study(tmp_path, tiny_tree) -> Path:
    """A copy of a valid study with two views, plus a macOS AppleDouble file beside them."""
    frame = read_mura(tiny_tree)
    views = frame[frame["split"] == "valid"].groupby("study_id")["path"].apply(list)
    source = Path(next(paths for paths in views if len(paths) == 2)[0]).parent
    study = shutil.copytree(source, tmp_path / "XR_HAND" / "patient11190" / source.name)
    (study / "._image1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
    return study


def test_predictions_csv_has_one_row_per_valid_image(evaluated, tiny_tree):
    out, _ = evaluated
    predictions = pd.read_csv(out / "predictions.csv")
    valid = read_mura(tiny_tree).query("split == 'valid'")
    assert len(predictions) == len(valid)
    assert {"study_id", "body_part", "label", "prob"} <= set(predictions.columns)
    assert sorted(predictions["study_id"].unique()) == sorted(valid["study_id"].unique())
    assert predictions["study_id"].str.startswith("valid/").all()
    assert predictions["prob"].between(0, 1).all()


def test_metrics_json_holds_every_block(evaluated, best, tiny_tree):
    out, report = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    checkpoint = torch.load(best, weights_only=True)
    assert metrics["threshold"] == checkpoint["threshold"]  # chosen on val, never on valid
    assert metrics["threshold_rule"] == checkpoint["threshold_rule"]
    valid = read_mura(tiny_tree).query("split == 'valid'")
    blocks = {
        "study.overall": metrics["study"]["overall"],
        "image.overall": metrics["image"]["overall"],
        **{f"study.{part}": block for part, block in metrics["study"]["by_body_part"].items()},
    }
    assert set(metrics["study"]["by_body_part"]) == set(valid["body_part"])
    for name, block in blocks.items():
        assert set(METRICS) <= set(block), name
    assert metrics["study"]["overall"]["n"] == valid["study_id"].nunique()
    assert metrics["image"]["overall"]["n"] == len(valid)
    assert json.loads(json.dumps(report)) == metrics  # the returned report is what was written


def test_metrics_json_equals_a_recomputation_from_the_csv(evaluated):
    out, _ = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    again = evaluation_report(
        read_predictions(out / "predictions.csv"),
        threshold=metrics["threshold"],
        threshold_rule=metrics["threshold_rule"],
        n_boot=N_BOOT,
        seed=SEED,
    )
    again = json.loads(json.dumps(again))  # as written: tuples become lists
    for section in ("study", "image", "at_0.5", "n_images", "n_studies", "bootstrap"):
        assert again[section] == metrics[section], section  # exact, bit for bit


def test_study_folder_is_the_mean_of_its_views(best, two_view_study):
    views = [two_view_study / "image1.png", two_view_study / "image2.png"]
    study, first, second = predict_paths(best, [two_view_study, *views], device="cpu")
    assert study["input"] == str(two_view_study)
    assert study["n_views"] == 2  # the AppleDouble file is not a view
    assert (first["n_views"], second["n_views"]) == (1, 1)
    assert study["view_probs"] == pytest.approx([first["prob"], second["prob"]], abs=2e-6)
    assert study["prob"] == pytest.approx(np.mean(study["view_probs"]), abs=2e-6)
    threshold = torch.load(best, weights_only=True)["threshold"]
    for result in (study, first, second):
        assert result["threshold"] == threshold
        expected = "abnormal" if result["prob"] >= threshold else "normal"
        assert result["prediction"] == expected


def test_cam_overlays(best, two_view_study, tmp_path):
    cams = tmp_path / "cams"
    with_cam = predict_paths(best, [two_view_study], device="cpu", cam_dir=cams)
    without = predict_paths(best, [two_view_study], device="cpu")
    assert with_cam[0]["view_probs"] == pytest.approx(without[0]["view_probs"], abs=1e-6)
    names = sorted(p.name for p in cams.iterdir())
    assert names == [f"XR_HAND_patient11190_{two_view_study.name}_image{v}_cam.png" for v in (1, 2)]
    for view, name in zip(("image1.png", "image2.png"), names, strict=True):
        with Image.open(two_view_study / view) as film, Image.open(cams / name) as overlay:
            assert overlay.mode == "RGB" and overlay.size == film.size  # over the film
    assert torch.load(best, weights_only=True)["image_size"] != film.size[0]


def test_cam_file_names_never_collide():
    views = [
        Path("/data/MURA-v1.1/valid/XR_HAND/patient11185/study1_positive/image1.png"),
        Path("/data/MURA-v1.1/valid/XR_HAND/patient11186/study1_positive/image1.png"),
        Path("/data/MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png"),
        Path("/data/MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png"),
        Path("/scan.png"),
    ]
    assert cam_file_names(views) == [
        "XR_HAND_patient11185_study1_positive_image1_cam.png",
        "XR_HAND_patient11186_study1_positive_image1_cam.png",
        "XR_WRIST_patient11185_study1_positive_image1_cam.png",
        "XR_WRIST_patient11185_study1_positive_image1-2_cam.png",  # the same file given twice
        "scan_cam.png",
    ]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "nope.png", "does not exist: pass image files or study folders"),
        (lambda tmp: tmp, "holds no PNG image: pass a study folder or image files"),
    ],
    ids=["missing-file", "folder-without-png"],
)
def test_bad_inputs_are_named(best, tmp_path, make, expected):
    path = make(tmp_path)
    (tmp_path / "._image1.png").write_bytes(b"not an image")  # only an AppleDouble file
    with pytest.raises(MuraError) as info:
        predict_paths(best, [path], device="cpu")
    assert str(info.value) == f"{path} {expected}"


def test_last_checkpoint_has_no_threshold(trained_run, tiny_tree):
    last = trained_run[0] / "last.pt"
    with pytest.raises(
        CheckpointError, match=r"has no decision threshold \(a last.pt\?\): use the best.pt"
    ):
        predict_paths(last, [tiny_tree], device="cpu")


def test_missing_checkpoint(tmp_path, tiny_tree):
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate_checkpoint(tmp_path / "missing.pt", tiny_tree, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_split_absent_from_the_data(tmp_path, best, tiny_tree, shared_cache_dir):
    train_only = tmp_path / "MURA-v1.1"
    shutil.copytree(tiny_tree / "train" / "XR_HAND", train_only / "train" / "XR_HAND")
    with pytest.raises(MuraError, match="has no 'valid' images; splits present: \\['train'\\]"):
        evaluate_checkpoint(
            best, train_only, tmp_path / "out", device="cpu", cache_dir=str(shared_cache_dir)
        )
