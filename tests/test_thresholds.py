"""Tests of mura_lib.evaluation.thresholds: threshold rules and the triage table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_curve

from mura_lib.errors import ConfigError
from mura_lib.evaluation.thresholds import (
    ThresholdChoice,
    choose_threshold,
    threshold_at_sensitivity,
    triage_table,
)


def _kappa_at(y, p, t) -> float:
    return cohen_kappa_score(y, (np.asarray(p) >= t).astype(int))


def test_fixed_rule_is_the_papers_half() -> None:
    assert choose_threshold([0, 1], [0.2, 0.3], "fixed") == ThresholdChoice(0.5, "fixed")


def test_max_kappa_keeps_half_when_it_lies_in_an_optimal_interval() -> None:
    choice = choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.8])
    assert (choice.value, choice.rule, choice.criterion) == (0.5, "max_kappa", 1.0)


def test_max_kappa_takes_a_midpoint_between_scores() -> None:
    choice = choose_threshold([0, 0, 1, 1], [0.6, 0.65, 0.8, 0.9])
    assert choice.value == pytest.approx(0.725)
    assert choice.criterion == 1.0


def test_max_kappa_ties_are_broken_toward_half() -> None:
    y, p = [0, 1, 0, 1], [0.05, 0.15, 0.8, 0.9]
    # (0.05, 0.15] and (0.8, 0.9] give the same kappa; 0.85 is nearer to 0.5 than 0.1
    assert _kappa_at(y, p, 0.1) == pytest.approx(_kappa_at(y, p, 0.85))
    assert choose_threshold(y, p).value == pytest.approx(0.85)


def test_max_kappa_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1).round(3)
    choice = choose_threshold(y, p)
    best = max(_kappa_at(y, p, t) for t in np.unique(p))
    assert choice.criterion == pytest.approx(best)
    assert _kappa_at(y, p, choice.value) == pytest.approx(best)


def test_youden_matches_roc_curve() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1)
    choice = choose_threshold(y, p, "youden")
    fpr, tpr, _ = roc_curve(y, p)
    assert choice.rule == "youden"
    assert choice.criterion == pytest.approx(np.max(tpr - fpr))


@pytest.mark.parametrize("rule", ["max_kappa", "youden"])
@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1], []])
def test_single_class_validation_falls_back_to_half_and_says_why(y: list, rule: str) -> None:
    choice = choose_threshold(y, [0.1, 0.2, 0.3][: len(y)], rule)
    assert choice.value == 0.5 and choice.criterion is None
    assert "one class only" in choice.note


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"threshold rule must be one of .*not 'f1'"):
        choose_threshold([0, 1], [0.1, 0.9], "f1")


@pytest.mark.parametrize(
    "target, threshold, achieved",
    [(0.9, 0.2, 0.9), (0.95, 0.1, 1.0), (0.5, 0.6, 0.5), (0.05, 1.0, 0.1)],
)
def test_threshold_at_sensitivity(target: float, threshold: float, achieved: float) -> None:
    positives = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    y = np.r_[np.ones(10, int), np.zeros(3, int)]
    p = np.r_[positives, 0.05, 0.5, 0.95]
    result = threshold_at_sensitivity(y, p, target)
    assert result.threshold == pytest.approx(threshold)
    assert result.sensitivity == pytest.approx(achieved)
    assert result.sensitivity >= target


def test_threshold_at_sensitivity_without_abnormal_cases() -> None:
    assert threshold_at_sensitivity([0, 0], [0.1, 0.2], 0.9) == (None, None)


def test_triage_table_counts_normal_studies_that_could_wait() -> None:
    studies = pd.DataFrame(
        {"label": [1] * 10 + [0] * 4, "prob": [0.9] * 8 + [0.3, 0.1] + [0.05, 0.2, 0.25, 0.95]}
    )
    table = triage_table(studies, sensitivities=(0.8, 0.9))
    first, second = table.to_dict("records")
    assert first["threshold"] == 0.9 and first["sensitivity"] == 0.8
    assert first["normal_below"] == 0.75 and first["abnormal_missed"] == 2
    assert first["all_below"] == pytest.approx(5 / 14)
    assert second["threshold"] == 0.3 and second["normal_below"] == 0.75
    assert table["n_studies"].tolist() == [14, 14]


def test_triage_thresholds_can_come_from_validation() -> None:
    val = pd.DataFrame({"label": [1, 1, 0], "prob": [0.8, 0.6, 0.1]})
    test = pd.DataFrame({"label": [1, 1, 0, 0], "prob": [0.9, 0.5, 0.7, 0.2]})
    row = triage_table(test, sensitivities=(0.9,), calibrate_on=val).iloc[0]
    assert row["threshold"] == 0.6  # chosen on val
    assert row["sensitivity"] == 0.5 and row["normal_below"] == 0.5  # measured on test
