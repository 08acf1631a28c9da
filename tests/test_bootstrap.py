"""Tests of mura_lib.evaluation.bootstrap: intervals resampling patients."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from mura_lib.evaluation.bootstrap import (
    bootstrap_ci,
    bootstrap_replicates,
    group_rng,
    patient_units,
    resample_counts,
    resampled_weights,
)
from mura_lib.evaluation.metrics import METRICS, binary_metrics
from mura_lib.evaluation.predictions import PredictionsError


def _studies(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0)
    return y, p


def test_resample_counts_draw_each_resample_of_full_size() -> None:
    counts = resample_counts(50, 20, np.random.default_rng(0))
    assert counts.shape == (20, 50)
    assert (counts.sum(axis=1) == 50).all()


def test_interval_contains_point_estimate() -> None:
    y, p = _studies()
    ci, dropped = bootstrap_ci(y, p, 0.5, n_boot=500, seed=0)
    point = binary_metrics(y, p, 0.5)
    assert dropped == {}
    for name in METRICS:
        lo, hi = ci[name]
        assert lo <= point[name] <= hi, name
        assert hi - lo < 0.25


def test_interval_is_deterministic_from_seed() -> None:
    y, p = _studies()
    first = bootstrap_ci(y, p, 0.5, n_boot=200, seed=7)
    assert bootstrap_ci(y, p, 0.5, n_boot=200, seed=7) == first
    assert bootstrap_ci(y, p, 0.5, n_boot=200, seed=8) != first
    assert bootstrap_ci(y, p, 0.5, n_boot=200, seed=7, name="WRIST") != first


def test_image_level_resamples_whole_studies() -> None:
    # Two identical views per study: resampling studies with their images gives the same
    # metrics as resampling the studies, replicate by replicate.
    y, p = _studies(100)
    groups = np.repeat(np.arange(100), 2)
    by_image = bootstrap_replicates(
        y[groups], p[groups], 0.5, groups, n_boot=50, rng=np.random.default_rng(1)
    )
    by_study = bootstrap_replicates(y, p, 0.5, n_boot=50, rng=np.random.default_rng(1))
    for name in METRICS:
        np.testing.assert_allclose(by_image[name], by_study[name])


def test_tiny_group_drops_undefined_resamples_and_says_so() -> None:
    ci, dropped = bootstrap_ci(np.array([0, 1, 1]), np.array([0.2, 0.6, 0.4]), 0.5, n_boot=100)
    assert 0 < dropped["auroc"] < 100
    assert all(v is None or all(np.isfinite(v)) for v in ci.values())


def test_thousand_resamples_of_mura_valid_size_are_fast() -> None:
    y, p = _studies(1200)
    start = time.perf_counter()
    bootstrap_ci(y, p, 0.5, n_boot=1000)
    # about 0.2 s on one core; a generous bound for a shared machine
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize("n_boot", [1, 3])
def test_few_resamples_still_give_intervals(n_boot: int) -> None:
    y, p = _studies(40)
    ci, _ = bootstrap_ci(y, p, 0.5, n_boot=n_boot)
    assert ci["kappa"][0] <= ci["kappa"][1]


def _patients(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    """Studies of patients with one to four studies each, some in several body parts."""
    rng = np.random.default_rng(seed)
    rows = []
    for patient in rng.permutation(n_patients):
        for _ in range(int(rng.integers(1, 5))):
            label = int(rng.integers(0, 2))
            rows.append(
                {
                    "patient_id": 11185 + int(patient),
                    "body_part": ("WRIST", "HAND")[int(rng.integers(0, 2))],
                    "label": label,
                    "prob": float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0.0, 1.0)),
                }
            )
    return pd.DataFrame(rows)


def _draws_by_hand(patients: np.ndarray, n_boot: int, seed: int, name: str) -> list[np.ndarray]:
    """The rows of each resample, drawn patient by patient from the generator the library
    uses: patients numbered in order of first appearance, all their rows taken."""
    order = list(dict.fromkeys(patients.tolist()))
    rows_of = [np.flatnonzero(patients == pid) for pid in order]
    draws = group_rng(seed, name).integers(0, len(order), size=(n_boot, len(order)))
    return [np.concatenate([rows_of[u] for u in draw]) for draw in draws]


def _percentile(values: list[float]) -> list[float]:
    values = np.asarray(values, dtype=float)
    return np.percentile(values[~np.isnan(values)], [2.5, 97.5]).tolist()


def test_intervals_resample_patients_as_a_loop_over_resamples_does() -> None:
    studies = _patients()
    y, p = studies["label"].to_numpy(), studies["prob"].to_numpy()
    patients = studies["patient_id"].to_numpy()
    ci, _ = bootstrap_ci(y, p, 0.5, patients, n_boot=80, seed=3, name="study:overall")
    kappa, auroc = [], []
    for rows in _draws_by_hand(patients, 80, 3, "study:overall"):
        kappa.append(cohen_kappa_score(y[rows], (p[rows] >= 0.5).astype(int)))
        auroc.append(roc_auc_score(y[rows], p[rows]) if len(set(y[rows])) == 2 else np.nan)
    np.testing.assert_allclose(ci["kappa"], _percentile(kappa), rtol=1e-12)
    np.testing.assert_allclose(ci["auroc"], _percentile(auroc), rtol=1e-12)


def test_calibration_intervals_refit_each_patient_resample() -> None:
    studies = _patients(40, seed=1)
    y, p = studies["label"].to_numpy(), studies["prob"].to_numpy()
    patients = studies["patient_id"].to_numpy()
    ci, _ = bootstrap_ci(
        y, p, 0.5, patients, n_boot=40, seed=0, name="study:WRIST", calibration=True
    )
    brier, slope, intercept = [], [], []
    for rows in _draws_by_hand(patients, 40, 0, "study:WRIST"):
        brier.append(np.mean((p[rows] - y[rows]) ** 2))
        q = np.clip(p[rows], 1e-6, 1 - 1e-6)
        # one fit per resample on the drawn rows themselves (no weights, fitted intercept)
        fit = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10)
        fit.fit(np.log(q / (1 - q))[:, None], y[rows])
        slope.append(fit.coef_[0, 0])
        intercept.append(fit.intercept_[0])
    np.testing.assert_allclose(ci["brier"], _percentile(brier), rtol=1e-12)
    np.testing.assert_allclose(ci["calibration_slope"], _percentile(slope), rtol=1e-5)
    np.testing.assert_allclose(ci["calibration_intercept"], _percentile(intercept), atol=1e-5)


def test_a_patient_is_drawn_with_all_studies_across_parts() -> None:
    studies = _patients()
    patients = studies["patient_id"].to_numpy()
    (weights,) = resampled_weights(patients, len(studies), 100, np.random.default_rng(0))
    for pid in np.unique(patients):
        rows = weights[:, patients == pid]
        assert (rows == rows[:, :1]).all()  # the patient's studies share every count
    assert not (weights[:, patients == patients[0]] == 0).all()
    assert set(studies.groupby("patient_id")["body_part"].nunique()) == {1, 2}


def test_patient_id_with_gaps_is_refused_in_one_line() -> None:
    frame = pd.DataFrame({"study_id": ["a", "b"], "patient_id": [1, None]})
    with pytest.raises(PredictionsError, match=r"^x.csv: patient_id is empty in 1 row\(s\)"):
        patient_units(frame, "x.csv")
