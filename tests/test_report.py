"""Tests of mura_lib.evaluation.report: metrics.json content, CSV round trip, tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mura_lib.config import BODY_PARTS
from mura_lib.errors import MuraError
from mura_lib.evaluation import (
    PAPER_TEST_KAPPA,
    calibration_summary,
    choose_threshold,
    evaluation_report,
    per_part_table,
    study_scores,
    write_predictions,
)
from mura_lib.evaluation.bootstrap import bootstrap_ci
from mura_lib.evaluation.calibration import CALIBRATION_METRICS
from mura_lib.evaluation.metrics import METRICS

N_BOOT = 100  # enough to exercise the intervals, fast
N_BOOT_REPEAT = 20  # where a report is only compared with itself, computed again


def _predictions(n_studies: int = 140, seed: int = 0, one_class: str = "HUMERUS") -> pd.DataFrame:
    """Valid-like predictions, 1-3 views a study; every study of `one_class` is normal.

    A patient has three consecutive studies (two of them, the last), each of another part.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        part = BODY_PARTS[s % len(BODY_PARTS)]
        label = 0 if part == one_class else int(rng.integers(0, 2))
        patient = 11185 + s // 3
        for view in range(1, int(rng.integers(1, 4)) + 1):
            rows.append(
                {
                    "study_id": f"valid/{part}/patient{patient:05d}/study1",
                    "body_part": part,
                    "patient_id": patient,
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
    assert set(report["study"]["overall"]["ci"]) == {*METRICS, *CALIBRATION_METRICS}
    assert set(report["image"]["overall"]["ci"]) == set(METRICS)
    assert report["calibration"]["ece_bins"] == 10
    assert report["calibration"]["ece_binning"].startswith("equal-width")


def test_bootstrap_names_the_patient_as_its_unit(report: dict) -> None:
    assert report["bootstrap"]["unit"] == "patient"
    assert report["bootstrap"]["n_units"] == 47  # 140 studies, three a patient
    assert report["study"]["overall"]["n_patients"] == 47
    assert report["image"]["overall"]["n_patients"] == 47
    assert report["study"]["by_body_part"]["WRIST"]["n_patients"] == 20
    # the intervals are those of the patient bootstrap (tested in test_bootstrap.py)
    studies = study_scores(_predictions())
    y, p, patients = (studies[c].to_numpy() for c in ("label", "prob", "patient_id"))
    by_patient, _ = bootstrap_ci(y, p, 0.45, patients, N_BOOT, name="study:overall")
    by_study, _ = bootstrap_ci(y, p, 0.45, None, N_BOOT, name="study:overall")
    assert report["study"]["overall"]["ci"]["kappa"] == by_patient["kappa"] != by_study["kappa"]


def test_without_patient_ids_the_report_says_it_resamples_studies() -> None:
    report = evaluation_report(_predictions().drop(columns="patient_id"), 0.5, n_boot=20)
    assert report["bootstrap"]["unit"] == "study" and report["bootstrap"]["n_units"] == 140
    assert "no patient_id column" in report["bootstrap"]["unit_note"]
    assert "n_patients" not in report["study"]["overall"]


def test_empty_patient_ids_are_refused_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    frame = _predictions()
    frame["patient_id"] = frame["patient_id"].astype(object)
    frame.loc[frame["study_id"] == frame["study_id"].iloc[-1], "patient_id"] = None
    frame.to_csv(path, index=False)
    with pytest.raises(MuraError, match=rf"^{path}: patient_id is empty in \d+ row\(s\)"):
        evaluation_report(path, 0.5, n_boot=10)


def test_calibration_metrics_of_the_study_blocks(report: dict) -> None:
    studies = study_scores(_predictions())
    block = report["study"]["overall"]
    y, p = studies["label"].to_numpy(), studies["prob"].to_numpy()
    assert block["brier"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    q = np.clip(p, 1e-6, 1 - 1e-6)
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(
        np.log(q / (1 - q))[:, None], y
    )
    assert block["calibration_slope"] == pytest.approx(fit.coef_[0, 0], rel=1e-5)
    assert block["calibration_intercept"] == pytest.approx(fit.intercept_[0], abs=1e-5)
    for metric in CALIBRATION_METRICS:
        lo, hi = block["ci"][metric]
        assert lo <= block[metric] <= hi
        # threshold-free: the same numbers at 0.5
        assert report["at_0.5"]["study"]["overall"][metric] == block[metric]
        assert report["at_0.5"]["study"]["overall"]["ci"][metric] == [lo, hi]
    humerus = report["study"]["by_body_part"]["HUMERUS"]  # all normal: no recalibration
    assert humerus["calibration_slope"] is None and humerus["ci"]["calibration_slope"] is None
    assert humerus["undefined"]["calibration_slope"] == "only one class present (all normal)"
    summary = calibration_summary(report)
    assert summary.loc["calibration_slope", "value"] == block["calibration_slope"]
    assert summary.loc["ece", "ci_hi"] == block["ci"]["ece"][1]


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
    before = evaluation_report(predictions, choice, n_boot=N_BOOT_REPEAT)
    assert evaluation_report(pd.read_csv(path), choice, n_boot=N_BOOT_REPEAT) == before
    assert evaluation_report(path, choice, n_boot=N_BOOT_REPEAT) == before
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
