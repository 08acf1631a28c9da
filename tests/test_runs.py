"""Repeated runs: seeds x folds, patient-grouped folds, the runs' ensemble and their spread."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura_lib.data import read_mura
from mura_lib.errors import ConfigError
from mura_lib.evaluation.predictions import read_predictions
from mura_lib.evaluation.runs import RUN_METRICS, runs_block, runs_table
from mura_lib.evaluation.studies import study_scores
from mura_lib.evaluation.thresholds import choose_threshold, held_out_threshold
from mura_lib.inference.ensemble import read_manifest
from mura_lib.training.runs import (
    RUNS_ENSEMBLE,
    Run,
    fit_runs,
    planned_runs,
    run_folders,
    runs_training_table,
)

pytest_plugins = ["fixtures_training"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_planned_runs_are_seeds_times_folds() -> None:
    assert planned_runs([3]) == [Run("seed3", 3, 0)]
    assert [r.name for r in planned_runs([0, 1], folds=2)] == [
        "fold0-seed0",
        "fold1-seed0",
        "fold0-seed1",
        "fold1-seed1",
    ]
    assert [r.fold for r in planned_runs([5], folds=3)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("seeds", "folds", "message"),
    [
        ([], 0, "give a list of integers"),
        ([0, True], 0, "give a list of integers"),
        ([1, 1], 0, "given twice"),
        ([0], 1, "K >= 2 folds"),
    ],
)
def test_bad_runs_are_refused(seeds, folds, message) -> None:
    with pytest.raises(ConfigError, match=message):
        planned_runs(seeds, folds)


def test_a_single_run_keeps_the_models_folder(tmp_path: Path) -> None:
    assert run_folders(tmp_path, planned_runs([0])) == {"seed0": tmp_path}
    assert run_folders(tmp_path, planned_runs([0, 2])) == {
        "seed0": tmp_path / "runs" / "seed0",
        "seed2": tmp_path / "runs" / "seed2",
    }


def test_held_out_threshold_scores_each_image_by_the_members_that_held_it_out() -> None:
    rng = np.random.default_rng(0)
    images = pd.DataFrame(
        {
            "study_id": [f"s{i // 2}" for i in range(12)],
            "body_part": "WRIST",
            "patient_id": [i // 2 for i in range(12)],
            "view": [i % 2 + 1 for i in range(12)],
            "label": [(i // 2) % 2 for i in range(12)],
            "rel_path": [f"img{i}.png" for i in range(12)],
        }
    )
    probs = rng.uniform(size=(12, 3))
    # member 0 held out images 0-7, member 1 images 4-11, member 2 images 0-3 and 8-11
    held = [list(range(8)), list(range(4, 12)), [*range(4), *range(8, 12)]]
    frames = [images.iloc[rows].assign(prob=probs[rows, k]) for k, rows in enumerate(held)]
    choice, chosen_on = held_out_threshold(frames, "max_kappa")
    expected = [np.mean([probs[i, k] for k in range(3) if i in held[k]]) for i in range(12)]
    studies = study_scores(images.assign(prob=expected))
    assert choice == choose_threshold(studies["label"], studies["prob"], "max_kappa")
    assert chosen_on["n_images"] == 12 and chosen_on["n_studies"] == 6
    assert chosen_on["subset"].startswith("val, out of run")
    # members of one run (one validation subset): the plain mean, subset "val"
    same = [images.assign(prob=probs[:, k]) for k in range(3)]
    choice, chosen_on = held_out_threshold(same, "youden")
    studies = study_scores(images.assign(prob=probs.mean(axis=1)))
    assert choice == choose_threshold(studies["label"], studies["prob"], "youden")
    assert chosen_on["subset"] == "val"


def test_fold_runs_cover_official_train_and_their_ensemble_is_thresholded_out_of_fold(
    tmp_path, tiny_tree, tiny_config
) -> None:
    config = replace(tiny_config, epochs=1, early_stop_patience=0, folds=2)
    runs = planned_runs([0], folds=2)
    summaries = fit_runs(0, tiny_tree, tmp_path, config, runs)
    assert list(summaries) == ["fold0-seed0", "fold1-seed0"]
    assert list(runs_training_table(summaries).index) == list(summaries)
    folders = run_folders(tmp_path, runs)
    frames = [read_predictions(folders[r.name] / "val_predictions.csv") for r in runs]
    val_studies = [set(f["study_id"]) for f in frames]
    train = read_mura(tiny_tree).query("split == 'train'")
    assert not val_studies[0] & val_studies[1]
    assert val_studies[0] | val_studies[1] == set(train["study_id"])

    manifest = read_manifest(tmp_path / RUNS_ENSEMBLE)
    assert [m["path"] for m in manifest["members"]] == [
        "runs/fold0-seed0/best.pt",
        "runs/fold1-seed0/best.pt",
    ]
    out_of_fold = study_scores(pd.concat(frames))
    expected = choose_threshold(out_of_fold["label"], out_of_fold["prob"], config.threshold_rule)
    assert manifest["threshold"] == expected.value
    assert manifest["threshold_chosen_on"]["n_studies"] == train["study_id"].nunique()


def test_runs_that_disagree_with_the_config_are_refused(tmp_path, tiny_tree, tiny_config):
    with pytest.raises(ConfigError, match="plan them with planned_runs"):
        fit_runs(0, tiny_tree, tmp_path, tiny_config, planned_runs([0], folds=2))


def write_evaluation(folder: Path, auroc: float | None, kappa: float) -> Path:
    """A metrics.json holding the figures a runs block reads."""
    overall = {name: 0.5 for _, _, name in RUN_METRICS} | {"auroc": auroc, "kappa": kappa}
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"study": {"overall": overall}, "image": {"overall": {"auroc": 0.7}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_the_runs_block_gives_each_run_and_their_spread(tmp_path: Path) -> None:
    folders = {
        "seed0": write_evaluation(tmp_path, 0.8, 0.5),
        "seed1": write_evaluation(tmp_path / "runs" / "seed1", 0.9, 0.6),
        "seed2": write_evaluation(tmp_path / "runs" / "seed2", None, 0.7),
    }
    ensemble = write_evaluation(tmp_path / "variants" / "all_runs", 0.95, 0.65)
    block = runs_block(folders, tmp_path, ensemble)
    assert block["n_runs"] == 3 and block["reference"] == "seed0"
    assert block["per_run"]["seed1"]["folder"] == "runs/seed1"
    assert block["summary"]["study_kappa"] == pytest.approx(
        {"mean": 0.6, "sd": 0.1, "min": 0.5, "max": 0.7}
    )
    # an undefined AUROC is left out of the spread, not counted as 0
    assert block["summary"]["study_auroc"] == pytest.approx(
        {"mean": 0.85, "sd": np.std([0.8, 0.9], ddof=1), "min": 0.8, "max": 0.9}
    )
    assert block["ensemble"]["study_auroc"] == 0.95
    table = runs_table(block)
    assert list(table.columns) == [*folders, "ensemble of all runs", "mean", "sd", "min", "max"]
    assert table.loc["study_kappa", "sd"] == pytest.approx(0.1)
