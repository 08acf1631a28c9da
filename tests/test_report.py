"""Tests of mura_lib.evaluation.report: metrics.json content, CSV round trip, tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura_lib.config import BODY_PARTS
from mura_lib.errors import MuraError
from mura_lib.evaluation import (
    PAPER_TEST_KAPPA,
    calibration_table,
    choose_threshold,
    evaluation_report,
    expected_calibration_error,
    per_part_table,
    study_scores,
    write_predictions,
)
from mura_lib.evaluation.metrics import METRICS

N_BOOT = 100  # enough to exercise the intervals, fast


def _predictions(n_studies: int = 140, seed: int = 0, one_class: str = "HUMERUS") -> pd.DataFrame:
    """Valid-like predictions, 1-3 views a study; every study of `one_class` is normal."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        part = BODY_PARTS[s % len(BODY_PARTS)]
        label = 0 if part == one_class else int(rng.integers(0, 2))
        for view in range(1, int(rng.integers(1, 4)) + 1):
            rows.append(
                {
                    "study_id": f"valid/{part}/patient{11185 + s:05d}/study1",
                    "body_part": part,
                    "patient_id": 11185 + s,
                    "view": view,
                    "label": label,
                    "prob": float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0.0, 1.0)),
                    "path": f"/data/{s}/image{view}.png",
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report() -> dict:
    return evaluation_report(_predictions(), 0.45, n_boot=N_BOOT, threshold_rule="max_kappa")


def test_report_schema(report: dict) -> None:
    assert report["threshold"] == 0.45 and report["threshold_rule"] == "max_kappa"
    assert report["aggregation"] == "mean"
    assert report["bootstrap"]["n_boot"] == N_BOOT and report["n_studies"] == 140
    for section in (report["study"], report["image"], report["at_0.5"]["study"]):
        assert list(section["by_body_part"]) == list(BODY_PARTS)
        for block in [section["overall"], *section["by_body_part"].values()]:
            for key in (*METRICS, "n", "n_positive", "confusion", "undefined", "ci"):
                assert key in block
    assert report["image"]["overall"]["n"] == report["n_images"]
    assert report["image"]["overall"]["n_studies"] == 140
    assert set(report["study"]["overall"]["ci"]) == set(METRICS)


def test_report_is_json_ready_with_single_class_part(report: dict) -> None:
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    humerus = report["study"]["by_body_part"]["HUMERUS"]
    assert humerus["auroc"] is None and humerus["ci"]["auroc"] is None
    assert humerus["undefined"]["auroc"] == "only one class present (all normal)"
    assert humerus["specificity"] is not None


def test_study_metrics_use_the_mean_of_views(report: dict) -> None:
    studies = study_scores(_predictions())
    confusion = report["study"]["overall"]["confusion"]
    assert confusion["tp"] + confusion["fp"] == int((studies["prob"] >= 0.45).sum())
    at_half = report["at_0.5"]["study"]["overall"]["confusion"]
    assert at_half["tp"] + at_half["fp"] == int((studies["prob"] >= 0.5).sum())


def test_intervals_contain_point_estimates(report: dict) -> None:
    block = report["study"]["overall"]
    for name in METRICS:
        lo, hi = block["ci"][name]
        assert lo <= block[name] <= hi


def test_report_is_deterministic(report: dict) -> None:
    again = evaluation_report(_predictions(), 0.45, n_boot=N_BOOT, threshold_rule="max_kappa")
    assert again == report


@pytest.mark.parametrize("writer", ["write_predictions", "to_csv"])
def test_report_survives_csv_round_trip(tmp_path: Path, writer: str) -> None:
    predictions = _predictions(seed=5)
    path = tmp_path / "run" / "predictions.csv"
    if writer == "write_predictions":
        write_predictions(predictions, path)
    else:
        path.parent.mkdir()
        predictions.to_csv(path, index=False)
    # the threshold is chosen on the frame in memory and on the file: both must agree too
    choice = choose_threshold(*study_scores(predictions)[["label", "prob"]].T.to_numpy())
    back = study_scores(pd.read_csv(path))
    assert choose_threshold(back["label"], back["prob"]) == choice
    before = evaluation_report(predictions, choice, n_boot=N_BOOT)
    assert evaluation_report(pd.read_csv(path), choice, n_boot=N_BOOT) == before
    assert evaluation_report(path, choice, n_boot=N_BOOT) == before
    assert before["threshold_rule"] == "max_kappa" and before["threshold_note"] is None


def test_report_records_a_threshold_fallback() -> None:
    choice = choose_threshold([0, 0], [0.2, 0.3])
    report = evaluation_report(_predictions(), choice, n_boot=0)
    assert report["threshold"] == 0.5 and "one class only" in report["threshold_note"]


def test_report_on_a_bad_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    frame = _predictions()
    frame.loc[0, "label"] = 1 - frame.loc[0, "label"]  # views of study 0 now disagree
    frame.to_csv(path, index=False)
    with pytest.raises(MuraError, match=rf"^{path}: the views of study valid/ELBOW/patient11185"):
        evaluation_report(path, 0.5, n_boot=0)


def test_other_parts_follow_muras_with_no_paper_reference() -> None:
    # LERA's parts in place of two of MURA's: listed after MURA's, in sorted order
    renamed = _predictions().replace({"body_part": {"ELBOW": "KNEE", "HAND": "ANKLE"}})
    report = evaluation_report(renamed, 0.5, n_boot=0)
    parts = [p for p in BODY_PARTS if p not in ("ELBOW", "HAND")]
    assert list(report["study"]["by_body_part"]) == [*parts, "ANKLE", "KNEE"]
    table = per_part_table(report, PAPER_TEST_KAPPA).set_index("body_part")
    assert np.isnan(table.loc["KNEE", "reference"]) and table.loc["KNEE", "n"] == 20


def test_without_bootstrap_there_are_no_intervals() -> None:
    report = evaluation_report(_predictions(), 0.5, n_boot=0)
    assert report["study"]["overall"]["ci"] == {}


def test_calibration_table() -> None:
    studies = pd.DataFrame({"prob": [0.05, 0.15, 0.12, 0.95, 1.0], "label": [0, 0, 1, 1, 1]})
    table = calibration_table(studies, n_bins=10)
    assert table["n"].tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table.loc[1, "mean_prob"] == pytest.approx(0.135)
    assert table.loc[1, "observed_rate"] == 0.5
    assert np.isnan(table.loc[2, "mean_prob"])
    expected = (1 * 0.05 + 2 * abs(0.135 - 0.5) + 2 * abs(0.975 - 1.0)) / 5
    assert expected_calibration_error(table) == pytest.approx(expected)


def test_per_part_table_sets_reference_beside_ours(report: dict) -> None:
    table = per_part_table(report, PAPER_TEST_KAPPA, reference_label="paper (test set)")
    assert table["body_part"].tolist() == [*BODY_PARTS, "overall"]
    wrist = table.set_index("body_part").loc["WRIST"]
    ours = report["study"]["by_body_part"]["WRIST"]["kappa"]
    assert wrist["kappa"] == ours and wrist["paper (test set)"] == 0.931
    assert wrist["difference"] == pytest.approx(ours - 0.931)
    assert wrist["ci_lo"] <= ours <= wrist["ci_hi"]
    assert np.isnan(table.set_index("body_part").loc["ELBOW", "paper (test set)"])
    auroc = per_part_table(report, metric="auroc", level="image").set_index("body_part")
    assert np.isnan(auroc.loc["HUMERUS", "auroc"])
