"""Tests of mura_lib.evaluation.metrics: agreement with scikit-learn, undefined metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mura_lib.evaluation.metrics import (
    METRICS,
    binary_metrics,
    metrics_from_confusion,
    predict_abnormal,
    weighted_auroc,
    weighted_average_precision,
)

CASES = {
    "hand-made": (
        [0, 0, 0, 0, 1, 1, 1, 0, 1, 1],
        [0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.9, 0.5, 0.5, 0.65],
    ),
    "ties across classes": ([0, 1, 0, 1, 1, 0], [0.3, 0.3, 0.6, 0.6, 0.9, 0.1]),
    "random": (
        np.random.default_rng(0).integers(0, 2, 200),
        np.random.default_rng(1).random(200).round(2),
    ),
}


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.65])
@pytest.mark.parametrize("case", CASES)
def test_binary_metrics_match_sklearn(case: str, threshold: float) -> None:
    y, p = (np.asarray(a) for a in CASES[case])
    pred = (p >= threshold).astype(int)
    m = binary_metrics(y, p, threshold)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert m["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert (m["n"], m["n_positive"], m["n_negative"]) == (len(y), y.sum(), len(y) - y.sum())
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["accuracy"] == pytest.approx(np.mean(y == pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["undefined"] == {}


def test_probability_equal_to_threshold_is_abnormal() -> None:
    assert predict_abnormal(np.array([0.49, 0.5, 0.51]), 0.5).tolist() == [False, True, True]
    assert binary_metrics([1], [0.5], 0.5)["confusion"]["tp"] == 1


def test_all_normal_group_reports_what_it_can() -> None:
    y, p = np.zeros(4, int), np.array([0.1, 0.2, 0.6, 0.3])
    m = binary_metrics(y, p, 0.5)
    assert m["auroc"] is None and m["average_precision"] is None and m["sensitivity"] is None
    assert m["undefined"]["auroc"] == "only one class present (all normal)"
    assert m["undefined"]["sensitivity"] == "no abnormal cases"
    assert m["specificity"] == 0.75 and m["accuracy"] == 0.75
    # one prediction disagrees, so kappa is defined: 0, as scikit-learn says
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, (p >= 0.5).astype(int)))
    assert m["f1"] == 0.0  # one false positive, no true positive: defined and zero
    json.dumps(m, allow_nan=False)


def test_group_entirely_agreeing_on_one_class_has_no_kappa() -> None:
    m = binary_metrics([1, 1, 1], [0.9, 0.8, 0.7], 0.5)
    assert m["kappa"] is None and "chance agreement" in m["undefined"]["kappa"]
    assert m["auroc"] is None
    assert m["undefined"]["auroc"] == "only one class present (all abnormal)"
    assert m["specificity"] is None and m["undefined"]["specificity"] == "no normal cases"
    assert m["average_precision"] == 1.0 and m["sensitivity"] == 1.0 and m["f1"] == 1.0
    json.dumps(m, allow_nan=False)


def test_empty_group_is_all_undefined() -> None:
    m = binary_metrics(np.array([], int), np.array([]), 0.5)
    assert m["n"] == 0
    assert all(m[name] is None for name in METRICS)
    assert set(m["undefined"].values()) == {"no cases"}
    json.dumps(m, allow_nan=False)


def test_metrics_from_confusion_is_vectorised() -> None:
    y, p = (np.asarray(a) for a in CASES["random"])
    thresholds = [0.2, 0.5, 0.8]
    counts = [binary_metrics(y, p, t)["confusion"] for t in thresholds]
    arrays = [np.array([c[k] for c in counts]) for k in ("tn", "fp", "fn", "tp")]
    vector = metrics_from_confusion(*arrays)
    for i, t in enumerate(thresholds):
        point = binary_metrics(y, p, t)
        for name, values in vector.items():
            assert values[i] == pytest.approx(point[name])


@pytest.mark.parametrize("case", CASES)
def test_weighted_ranking_metrics_equal_sklearn_on_resamples(case: str) -> None:
    y, p = (np.asarray(a) for a in CASES[case])
    rng = np.random.default_rng(3)
    resample = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y))
    weights = np.vstack([resample, np.ones(len(y), int)])
    auc = weighted_auroc(y, p, weights.astype(float))
    ap = weighted_average_precision(y, p, weights.astype(float))
    for row, w in enumerate(weights):
        idx = np.repeat(np.arange(len(y)), w)
        if len(set(y[idx])) == 2:
            assert auc[row] == pytest.approx(roc_auc_score(y[idx], p[idx]))
        assert ap[row] == pytest.approx(average_precision_score(y[idx], p[idx]))


def test_weighted_metrics_are_nan_for_single_class_resamples() -> None:
    y, p = np.array([0, 1, 1]), np.array([0.2, 0.4, 0.9])
    weights = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    assert np.isnan(weighted_auroc(y, p, weights)).all()
    ap = weighted_average_precision(y, p, weights)
    assert np.isnan(ap[0]) and ap[1] == 1.0
