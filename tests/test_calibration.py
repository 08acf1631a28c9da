"""Tests of mura_lib.evaluation.calibration: reliability table, Brier, ECE, recalibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mura_lib.evaluation.calibration import (
    calibration_metrics,
    calibration_table,
    expected_calibration_error,
    weighted_ece,
    weighted_recalibration,
)


def _studies(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0.0, 1.0)  # some exactly 0 and 1
    return y, p


def test_calibration_table_and_its_ece() -> None:
    studies = pd.DataFrame({"prob": [0.05, 0.15, 0.12, 0.95, 1.0], "label": [0, 0, 1, 1, 1]})
    table = calibration_table(studies, n_bins=10)
    assert table["n"].tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table.loc[1, "mean_prob"] == pytest.approx(0.135)
    assert table.loc[1, "observed_rate"] == 0.5
    assert np.isnan(table.loc[2, "mean_prob"])
    expected = (1 * 0.05 + 2 * abs(0.135 - 0.5) + 2 * abs(0.975 - 1.0)) / 5
    assert expected_calibration_error(studies["label"], studies["prob"]) == pytest.approx(expected)


def test_point_metrics_equal_a_recomputation() -> None:
    y, p = _studies()
    result = calibration_metrics(y, p)
    assert result["brier"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    table = calibration_table(pd.DataFrame({"label": y, "prob": p}))
    used = table[table["n"] > 0]
    ece = (used["n"] * (used["mean_prob"] - used["observed_rate"]).abs()).sum() / len(y)
    assert result["ece"] == pytest.approx(ece, rel=1e-12)
    q = np.clip(p, 1e-6, 1 - 1e-6)
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000)  # lbfgs, a fitted intercept
    fit.fit(np.log(q / (1 - q))[:, None], y)
    assert result["calibration_slope"] == pytest.approx(fit.coef_[0, 0], rel=1e-5)
    assert result["calibration_intercept"] == pytest.approx(fit.intercept_[0], abs=1e-5)
    assert result["undefined"] == {}


def test_weighted_rows_equal_the_repeated_cases() -> None:
    y, p = _studies(60, seed=2)
    counts = np.random.default_rng(0).integers(0, 3, (4, len(y))).astype(float)
    slope, intercept = weighted_recalibration(y, p, counts)
    ece = weighted_ece(y, p, counts)
    for row in range(4):
        rows = np.repeat(np.arange(len(y)), counts[row].astype(int))
        alone = calibration_metrics(y[rows], p[rows])
        assert slope[row] == pytest.approx(alone["calibration_slope"], rel=1e-6)
        assert intercept[row] == pytest.approx(alone["calibration_intercept"], abs=1e-6)
        assert ece[row] == pytest.approx(alone["ece"], rel=1e-12)


@pytest.mark.parametrize(
    ("y", "p", "reason"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.4, 0.9], "the score separates the classes"),
        ([1, 1, 0, 0], [0.1, 0.3, 0.6, 0.9], "the score separates the classes"),
        ([0, 0, 0], [0.1, 0.5, 0.9], "only one class present (all normal)"),
    ],
)
def test_recalibration_without_a_finite_fit_is_undefined(y, p, reason) -> None:
    result = calibration_metrics(np.array(y), np.array(p))
    assert result["calibration_slope"] is None and result["calibration_intercept"] is None
    assert result["undefined"]["calibration_slope"].startswith(reason)
    assert result["brier"] is not None and result["ece"] is not None
