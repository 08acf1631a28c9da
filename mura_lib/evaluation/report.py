"""The evaluation report (metrics.json) and the tables built from it.

:func:`evaluation_report` turns a predictions frame into one JSON-ready dict: study-level and
image-level metrics, overall and per body part, each with bootstrap confidence intervals that
resample patients (:mod:`mura_lib.evaluation.bootstrap`), at the chosen threshold and at the
paper's fixed 0.5; study-level blocks also hold calibration metrics. It is a pure function of
its arguments: the same predictions (in memory, or read back from the CSV they were written
to; see :mod:`mura_lib.evaluation.predictions`) give the same dict, bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mura_lib.data.mura_layout import ordered_parts
from mura_lib.evaluation.bootstrap import (
    bootstrap_ci,
    bootstrap_unit,
    patient_units,
)
from mura_lib.evaluation.calibration import (
    CALIBRATION_METRICS,
    CALIBRATION_SETTINGS,
    calibration_metrics,
)
from mura_lib.evaluation.metrics import binary_metrics
from mura_lib.evaluation.predictions import check_predictions, read_predictions
from mura_lib.evaluation.references import PAPER_TEST_KAPPA  # noqa: F401 (re-exported)
from mura_lib.evaluation.studies import study_scores
from mura_lib.evaluation.thresholds import FIXED_THRESHOLD, ThresholdChoice

SCHEMA_VERSION = 1
DECISION_RULE = "abnormal if prob >= threshold"


def metric_block(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    units: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    name: str = "overall",
    level: float = 0.95,
    calibration: bool = False,
) -> dict:
    """Point metrics of one group plus bootstrap intervals ("ci", and "ci_dropped" if any).

    ``units`` (the patient of each case) are what the bootstrap draws; None draws cases. With
    ``calibration`` the block also holds the calibration metrics of
    :mod:`mura_lib.evaluation.calibration`. With ``n_boot=0`` the block has no intervals ("ci"
    is empty).
    """
    block = binary_metrics(y_true, prob, threshold)
    if calibration:
        calibrated = calibration_metrics(y_true, prob)
        block["undefined"] |= calibrated.pop("undefined")
        block |= calibrated
    block["ci"] = {}
    if n_boot > 0 and block["n"] > 0:
        ci, dropped = bootstrap_ci(
            y_true, prob, threshold, units, n_boot, seed, level, name, calibration
        )
        # a metric undefined on the group itself gets no interval either
        block["ci"] = {m: (v if block[m] is not None else None) for m, v in ci.items()}
        if dropped:
            block["ci_dropped"] = dropped
    return block


def _level(
    frame: pd.DataFrame,
    threshold: float,
    image: bool,
    boot: dict,
    calibration: bool = False,
) -> dict:
    """{"overall": block, "by_body_part": {part: block}} for studies or for images.

    ``boot`` holds n_boot, seed and level; the bootstrap unit is the patient when the frame
    has patient ids, else the row's study.
    """

    def block(rows: pd.DataFrame, name: str) -> dict:
        patients = patient_units(rows)
        units = patients
        if patients is None and image:
            units = rows["study_id"].to_numpy()  # without patients, a study keeps its views
        result = metric_block(
            rows["label"].to_numpy(),
            rows["prob"].to_numpy(),
            threshold,
            units,
            name=("image:" if image else "study:") + name,
            calibration=calibration,
            **boot,
        )
        if image:
            result["n_studies"] = int(rows["study_id"].nunique())
        if patients is not None:
            result["n_patients"] = int(pd.Series(patients).nunique())
        return result

    return {
        "overall": block(frame, "overall"),
        "by_body_part": {
            part: block(frame[frame["body_part"] == part], part)
            for part in ordered_parts(frame["body_part"])
        },
    }


def evaluation_report(
    predictions: pd.DataFrame | str | os.PathLike,
    threshold: float | ThresholdChoice = FIXED_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
    threshold_rule: str | None = None,
    level: float = 0.95,
) -> dict:
    """Evaluate per-image predictions: the content of metrics.json.

    Args:
        predictions: the predictions frame (one row per image), or the path of its CSV.
        threshold: the decision threshold chosen on the validation subset (a float, or the
            :class:`ThresholdChoice` returned by ``choose_threshold``, whose rule is recorded).
        n_boot: bootstrap resamples for the intervals (0: none).
        seed: bootstrap seed; the same seed gives the same intervals.
        threshold_rule: how a float threshold was chosen, recorded as given (default "given").
        level: coverage of the intervals.

    Returns:
        A JSON-ready dict (no NaN; None + a reason where a metric is undefined)::

            {"schema_version", "threshold", "threshold_rule", "threshold_note" (why a rule
             fell back to 0.5, else None), "decision", "aggregation",
             "prob_precision", "bootstrap": {n_boot, seed, level, method, unit, n_units,
             resampling (and unit_note when the unit is not the patient)},
             "calibration": {ece_bins, ece_binning, recalibration, logit_clip},
             "n_images", "n_studies",
             "study": {"overall": block, "by_body_part": {part: block}},
             "image": {"overall": block, "by_body_part": {part: block}},
             "at_0.5": {"study": {"overall": block, "by_body_part": {...}}}}

        where a block holds n, n_positive, n_negative, kappa, auroc, average_precision, f1,
        accuracy, sensitivity, specificity, precision, confusion, undefined and
        ci {metric: [lo, hi] or None}, and n_patients when the predictions have patient ids;
        image blocks also hold n_studies, study blocks brier, ece, calibration_slope and
        calibration_intercept (the same at either threshold).
    """
    if isinstance(predictions, (str, os.PathLike)):
        frame = read_predictions(predictions)
        source = str(predictions)
    else:
        frame = check_predictions(predictions)
        source = "predictions frame"
    threshold_note = None
    if isinstance(threshold, ThresholdChoice):
        threshold_rule = threshold_rule or threshold.rule
        threshold_note = threshold.note
        threshold = threshold.value
    threshold = float(threshold)
    studies = study_scores(frame, source=source)
    patients = patient_units(frame, source)
    boot = {"n_boot": int(n_boot), "seed": int(seed), "level": float(level)}
    study = _level(studies, threshold, False, boot, calibration=True)
    at_half = _level(studies, FIXED_THRESHOLD, False, boot)
    _copy_calibration(study, at_half)
    return {
        "schema_version": SCHEMA_VERSION,
        "threshold": threshold,
        "threshold_rule": threshold_rule or "given",
        "threshold_note": threshold_note,
        "decision": DECISION_RULE,
        "aggregation": "mean",  # the paper's study score: the mean of the views
        "prob_precision": "float32",
        "bootstrap": {**boot, "method": "percentile", **bootstrap_unit(patients, len(studies))},
        "calibration": CALIBRATION_SETTINGS,
        "n_images": len(frame),
        "n_studies": len(studies),
        "study": study,
        "image": _level(frame, threshold, True, boot),
        "at_0.5": {"study": at_half},
    }


def _copy_calibration(source: dict, target: dict) -> None:
    """Give ``target``'s blocks the calibration metrics of ``source``'s: they do not depend
    on the threshold, and the resamples of a study-level group are the same at any."""
    parts = source["by_body_part"]
    pairs = [(source["overall"], target["overall"])]
    pairs += [(parts[p], target["by_body_part"][p]) for p in parts]
    for src, dst in pairs:
        for metric in CALIBRATION_METRICS:
            dst[metric] = src[metric]
            if metric in src["undefined"]:
                dst["undefined"][metric] = src["undefined"][metric]
            if metric in src["ci"]:
                dst["ci"][metric] = src["ci"][metric]
            if metric in src.get("ci_dropped", {}):
                dst.setdefault("ci_dropped", {})[metric] = src["ci_dropped"][metric]


def per_part_table(
    report: Mapping,
    reference: Mapping[str, float] | None = None,
    metric: str = "kappa",
    level: str = "study",
    reference_label: str = "reference",
) -> pd.DataFrame:
    """Our per-part metric, with its interval, next to reference figures.

    Args:
        report: an :func:`evaluation_report` dict (or metrics.json loaded).
        reference: {body part or "overall": value}, e.g. :data:`PAPER_TEST_KAPPA`; parts it
            lacks get NaN. Say where the reference figures come from (the paper's are on the
            hidden test set, ours on the official valid set: not directly comparable).
        metric: which metric of the blocks.
        level: "study" or "image" (or "at_0.5" for the study level at 0.5).
        reference_label: the name of the reference column.

    Returns:
        One row per body part in the report, then "overall": body_part, n, n_positive,
        <metric>, ci_lo, ci_hi, <reference_label>, difference (ours - reference).
    """
    section = report[level]["study"] if level == "at_0.5" else report[level]
    reference = dict(reference or {})
    rows = []
    for part, block in [*section["by_body_part"].items(), ("overall", section["overall"])]:
        ci = block.get("ci", {}).get(metric)
        ours = block[metric]
        ref = reference.get(part)
        rows.append(
            {
                "body_part": part,
                "n": block["n"],
                "n_positive": block["n_positive"],
                metric: np.nan if ours is None else ours,
                "ci_lo": np.nan if ci is None else ci[0],
                "ci_hi": np.nan if ci is None else ci[1],
                reference_label: np.nan if ref is None else ref,
                "difference": np.nan if ours is None or ref is None else ours - ref,
            }
        )
    return pd.DataFrame(rows)


def calibration_summary(report: Mapping, part: str = "overall") -> pd.DataFrame:
    """The four calibration numbers of one study-level group, with their intervals.

    Returns:
        One row per metric (brier, ece, calibration_slope, calibration_intercept): value,
        ci_lo, ci_hi, and ideal (the value of a perfectly calibrated model).
    """
    section = report["study"]
    block = section["overall"] if part == "overall" else section["by_body_part"][part]
    ideal = {"brier": 0.0, "ece": 0.0, "calibration_slope": 1.0, "calibration_intercept": 0.0}
    rows = []
    for metric in CALIBRATION_METRICS:
        value, ci = block.get(metric), block.get("ci", {}).get(metric)
        rows.append(
            {
                "metric": metric,
                "value": np.nan if value is None else value,
                "ci_lo": np.nan if ci is None else ci[0],
                "ci_hi": np.nan if ci is None else ci[1],
                "ideal": ideal[metric],
            }
        )
    return pd.DataFrame(rows).set_index("metric")
