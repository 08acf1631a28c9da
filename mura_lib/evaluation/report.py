"""The evaluation report (metrics.json) and the tables built from it.

:func:`evaluation_report` turns a predictions frame into one JSON-ready dict: study-level and
image-level metrics, overall and per body part, each with bootstrap confidence intervals, at
the chosen threshold and at the paper's fixed 0.5. It is a pure function of its arguments: the
same predictions (in memory, or read back from the CSV they were written to; see
:mod:`mura_lib.evaluation.predictions`) give the same dict, bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mura_lib.data.mura_layout import ordered_parts
from mura_lib.evaluation.bootstrap import bootstrap_ci
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
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    name: str = "overall",
) -> dict:
    """Point metrics of one group plus bootstrap intervals ("ci", and "ci_dropped" if any).

    ``groups`` (the study of each image) makes the bootstrap resample studies for image-level
    metrics; with ``n_boot=0`` the block has no intervals ("ci" is empty).
    """
    block = binary_metrics(y_true, prob, threshold)
    if groups is not None:
        block["n_studies"] = int(pd.Series(groups).nunique())
    block["ci"] = {}
    if n_boot > 0 and block["n"] > 0:
        ci, dropped = bootstrap_ci(y_true, prob, threshold, groups, n_boot, seed, name=name)
        # a metric undefined on the group itself gets no interval either
        block["ci"] = {m: (v if block[m] is not None else None) for m, v in ci.items()}
        if dropped:
            block["ci_dropped"] = dropped
    return block


def _level(frame: pd.DataFrame, threshold: float, image: bool, n_boot: int, seed: int) -> dict:
    """{"overall": block, "by_body_part": {part: block}} for studies or for images."""

    def block(rows: pd.DataFrame, name: str) -> dict:
        groups = rows["study_id"].to_numpy() if image else None
        return metric_block(
            rows["label"].to_numpy(),
            rows["prob"].to_numpy(),
            threshold,
            groups,
            n_boot,
            seed,
            name=("image:" if image else "study:") + name,
        )

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
             "prob_precision", "bootstrap": {n_boot, seed, level, method, unit},
             "n_images", "n_studies",
             "study": {"overall": block, "by_body_part": {part: block}},
             "image": {"overall": block, "by_body_part": {part: block}},
             "at_0.5": {"study": {"overall": block, "by_body_part": {...}}}}

        where a block holds n, n_positive, n_negative, kappa, auroc, average_precision, f1,
        accuracy, sensitivity, specificity, precision, confusion, undefined and
        ci {metric: [lo, hi] or None}; image blocks also hold n_studies.
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
    return {
        "schema_version": SCHEMA_VERSION,
        "threshold": threshold,
        "threshold_rule": threshold_rule or "given",
        "threshold_note": threshold_note,
        "decision": DECISION_RULE,
        "aggregation": "mean",  # the paper's study score: the mean of the views
        "prob_precision": "float32",
        "bootstrap": {
            "n_boot": int(n_boot),
            "seed": int(seed),
            "level": float(level),
            "method": "percentile",
            "unit": "study (image-level metrics resample studies with all their images)",
        },
        "n_images": len(frame),
        "n_studies": len(studies),
        "study": _level(studies, threshold, False, n_boot, seed),
        "image": _level(frame, threshold, True, n_boot, seed),
        "at_0.5": {"study": _level(studies, FIXED_THRESHOLD, False, n_boot, seed)},
    }


def calibration_table(studies: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted probability against the observed abnormal rate, in equal-width bins.

    Returns:
        One row per bin of [0, 1]: bin_lo, bin_hi, n, mean_prob, observed_rate (the last two
        NaN for an empty bin). A well calibrated model has mean_prob close to observed_rate.
    """
    prob = studies["prob"].to_numpy(dtype=np.float64)
    label = studies["label"].to_numpy(dtype=np.float64)
    index = np.clip((prob * n_bins).astype(np.int64), 0, n_bins - 1)  # 1.0 joins the top bin
    n = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(index, weights=prob, minlength=n_bins) / n
        observed = np.bincount(index, weights=label, minlength=n_bins) / n
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "bin_lo": edges[:-1],
            "bin_hi": edges[1:],
            "n": n,
            "mean_prob": np.where(n > 0, mean_prob, np.nan),
            "observed_rate": np.where(n > 0, observed, np.nan),
        }
    )


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Case-weighted mean |mean_prob - observed_rate| over the bins of a calibration table."""
    used = table[table["n"] > 0]
    gap = (used["mean_prob"] - used["observed_rate"]).abs()
    return float((gap * used["n"]).sum() / used["n"].sum())


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
