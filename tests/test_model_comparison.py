"""Notebook 03's comparison tables (mura_lib.reports.model_comparison) on synthetic folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_compare import predictions_frame

from mura_lib.evaluation.compare import compare_evaluations
from mura_lib.evaluation.predictions import write_predictions
from mura_lib.evaluation.report import evaluation_report
from mura_lib.inference.evaluate import write_json
from mura_lib.reports import model_comparison


def write_folder(folder: Path, y: np.ndarray, prob: np.ndarray, tta: str, members: int) -> Path:
    frame = predictions_frame(y, prob, ["XR_HAND", "XR_WRIST"])
    write_predictions(frame, folder / "predictions.csv")
    report = evaluation_report(folder / "predictions.csv", threshold=0.5, n_boot=40)
    report |= {"tta": tta, "model": {"members": [{}] * members}}
    write_json(report, folder / "metrics.json")
    return folder


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    y = (rng.random(80) < 0.5).astype(int)
    noisy = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.25, 80), 0, 1)
    good = np.where(y == 1, 0.8, 0.2)
    return {
        "single": write_folder(tmp_path, y, noisy, "none", 1),
        "single + flip": write_folder(tmp_path / "variants" / "single_flip", y, noisy, "flip", 1),
        "ensemble": write_folder(tmp_path / "variants" / "ensemble", y, good, "none", 5),
    }


def test_variants_lists_the_ensemble_only_when_it_exists(tmp_path) -> None:
    ckpt = tmp_path / "best.pt"
    assert list(model_comparison.variants(ckpt, tmp_path / "ensemble.json")) == [
        "single",
        "single + flip",
    ]
    (tmp_path / "ensemble.json").write_text("{}")
    found = model_comparison.variants(ckpt, tmp_path / "ensemble.json")
    assert found["ensemble + flip"] == (tmp_path / "ensemble.json", "flip")


def test_table_holds_each_variant_and_its_paired_difference(folders) -> None:
    comparisons = model_comparison.compare_variants(folders, n_boot=40, seed=0)
    assert set(comparisons) == {"single + flip", "ensemble"}
    table = model_comparison.variants_table(folders, comparisons)
    assert list(table.index) == ["single", "single + flip", "ensemble"]
    assert np.isnan(table.loc["single", "kappa_diff"])  # the reference has no difference
    assert table.loc["single + flip", "auroc_diff"] == 0.0
    assert table.loc["ensemble", "members"] == 5 and table.loc["single + flip", "tta"] == "flip"
    paired = compare_evaluations(folders["single"], folders["ensemble"], n_boot=40, seed=0)
    assert table.loc["ensemble", "auroc_diff"] == paired["study"]["overall"]["auroc"]["diff"]
    assert model_comparison.significant(comparisons) == {
        "single + flip": {"kappa": False, "auroc": False},
        "ensemble": {"kappa": True, "auroc": True},
    }


def test_per_part_differences_has_every_part_and_overall(folders) -> None:
    comparisons = model_comparison.compare_variants(folders, n_boot=40, seed=0)
    table = model_comparison.per_part_differences(comparisons, "kappa")
    assert list(table.index) == ["XR_HAND", "XR_WRIST", "overall"]
    assert list(table.columns) == ["single + flip", "ensemble"]
    overall = comparisons["ensemble"]["study"]["overall"]["kappa"]
    lo, hi = overall["ci"]
    assert table.loc["overall", "ensemble"] == f"{overall['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def test_record_comparison_adds_the_block_and_keeps_the_rest(folders) -> None:
    metrics_path = folders["single"] / "metrics.json"
    before = json.loads(metrics_path.read_text())
    comparisons = model_comparison.compare_variants(folders, n_boot=40, seed=0)
    model_comparison.record_comparison(metrics_path, folders, comparisons)
    after = json.loads(metrics_path.read_text())
    assert {k: v for k, v in after.items() if k != "comparison"} == before
    variants = after["comparison"]["variants"]
    assert variants["ensemble"]["folder"] == "variants/ensemble"
    assert variants["ensemble"]["result"]["b"] == "ensemble"


def test_the_study_heads_are_also_compared_with_their_equal_work_control(folders) -> None:
    assert model_comparison.study_heads_against_control(folders) == []  # no control, no heads
    rng = np.random.default_rng(6)
    y = (rng.random(80) < 0.5).astype(int)
    control, head = model_comparison.FINE_TUNED, "study attention"
    folders[control] = write_folder(
        folders["single"] / "variants" / "single_fine-tuned", y, np.full(80, 0.5), "none", 1
    )
    folders[head] = write_folder(
        folders["single"] / "variants" / "study_attention", y, np.where(y == 1, 0.7, 0.3), "none", 1
    )
    names = model_comparison.study_heads_against_control(folders)
    assert names == [head]
    against = model_comparison.compare_variants(
        folders, n_boot=40, seed=0, reference=control, names=names
    )
    assert list(against) == [head] and against[head]["a"] == control
    paired = compare_evaluations(folders[control], folders[head], n_boot=40, seed=0)
    assert against[head]["study"]["overall"]["auroc"] == paired["study"]["overall"]["auroc"]
    metrics_path = folders["single"] / "metrics.json"
    model_comparison.record_comparison(
        metrics_path, folders, against, reference=control, key="study_heads_vs_control"
    )
    block = json.loads(metrics_path.read_text())["study_heads_vs_control"]
    assert block["reference"] == control
    assert block["variants"][head]["folder"] == "variants/study_attention"
