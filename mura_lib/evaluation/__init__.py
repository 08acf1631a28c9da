"""Evaluation: pure functions on a predictions frame (one row per image, see `predictions`).

predictions   validate, canonicalise (float32 probabilities), read and write predictions.csv
studies       per-image probabilities -> one score per study (mean of views, as the paper)
metrics       kappa, AUROC, AP, F1, accuracy, sensitivity, specificity; None + reason if undefined
bootstrap     confidence intervals resampling patients
calibration   reliability table, Brier score, ECE, logistic recalibration slope and intercept
thresholds    the decision threshold chosen on validation studies; triage operating points
report        metrics.json, per-part and calibration-summary tables

Light on purpose: numpy, pandas and scikit-learn only (no torch), so notebooks and the CLI can
evaluate a predictions.csv without loading a model.
"""

from mura_lib.evaluation.bootstrap import bootstrap_ci
from mura_lib.evaluation.calibration import calibration_table, expected_calibration_error
from mura_lib.evaluation.metrics import METRICS, binary_metrics, predict_abnormal
from mura_lib.evaluation.predictions import (
    PredictionsError,
    check_predictions,
    read_predictions,
    write_predictions,
)
from mura_lib.evaluation.report import (
    PAPER_TEST_KAPPA,
    calibration_summary,
    evaluation_report,
    per_part_table,
)
from mura_lib.evaluation.studies import study_scores
from mura_lib.evaluation.thresholds import (
    THRESHOLD_RULES,
    ThresholdChoice,
    choose_threshold,
    threshold_at_sensitivity,
    triage_table,
)

__all__ = [
    "METRICS",
    "PAPER_TEST_KAPPA",
    "THRESHOLD_RULES",
    "PredictionsError",
    "ThresholdChoice",
    "binary_metrics",
    "bootstrap_ci",
    "calibration_summary",
    "calibration_table",
    "check_predictions",
    "choose_threshold",
    "evaluation_report",
    "expected_calibration_error",
    "per_part_table",
    "predict_abnormal",
    "read_predictions",
    "study_scores",
    "threshold_at_sensitivity",
    "triage_table",
    "write_predictions",
]
