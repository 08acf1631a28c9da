"""Choosing the decision threshold, and the triage operating points.

The threshold is chosen on the VALIDATION subset and then applied, unchanged, to the test set;
choosing it on the test set would make the reported kappa optimistic (the defect this project
was started to fix: the source project selected and evaluated on the same set).

Every rule uses the project's decision rule: abnormal when ``prob >= threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from mura_lib.errors import ConfigError
from mura_lib.evaluation.metrics import metrics_from_confusion

THRESHOLD_RULES = ("max_kappa", "youden", "fixed")
FIXED_THRESHOLD = 0.5  # the paper's: abnormal when the mean probability is above 0.5
_TIE_TOLERANCE = 1e-12  # criterion values closer than this count as equal


class ThresholdChoice(NamedTuple):
    """A chosen threshold and how it was chosen.

    Attributes:
        value: the threshold (abnormal when ``prob >= value``).
        rule: the rule's name, one of :data:`THRESHOLD_RULES`.
        criterion: the value the rule maximised on the data it saw (kappa, Youden's J), or
            None for "fixed" and for a fallback.
        note: why the rule fell back to 0.5, if it did; otherwise None.
    """

    value: float
    rule: str
    criterion: float | None = None
    note: str | None = None


def _confusion_at(y: np.ndarray, prob: np.ndarray, thresholds: np.ndarray) -> tuple:
    """Confusion counts (tn, fp, fn, tp) for each threshold, from one sort of the scores."""
    order = np.argsort(prob, kind="mergesort")
    p_sorted, y_sorted = prob[order], y[order]
    pos_before = np.r_[0, np.cumsum(y_sorted)]  # abnormal cases among the i lowest scores
    below = np.searchsorted(p_sorted, thresholds, side="left")  # cases with prob < t
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    fn = pos_before[below]
    tn = below - fn
    return tn, n_neg - tn, fn, n_pos - fn


def choose_threshold(
    y_true: np.ndarray, prob: np.ndarray, rule: str = "max_kappa"
) -> ThresholdChoice:
    """Choose the decision threshold on validation studies by a stated rule.

    Rules:
        ``"max_kappa"`` (default): the threshold that maximises study-level Cohen's kappa, the
        paper's metric. ``"youden"``: the one that maximises Youden's J = sensitivity +
        specificity - 1. ``"fixed"``: 0.5, the paper's operating point.

    For the two search rules the candidates are 0.5 and the midpoints between consecutive
    distinct scores (plus one point below the lowest and one above the highest score), so the
    chosen value never sits on an observed score. Candidates whose criterion ties with the
    best (within 1e-12) are broken toward 0.5: the closest to 0.5 wins, and 0.5 itself when
    it lies in an optimal interval. With a single class in ``y_true`` (or no study at all)
    there is nothing to choose with: the rule falls back to 0.5 and says so in ``note``.

    Args:
        y_true: study labels of the validation subset (1 = abnormal).
        prob: study scores (e.g. ``study_scores(val_predictions)["prob"]``).
        rule: one of :data:`THRESHOLD_RULES`.

    Raises:
        ConfigError: unknown rule.
    """
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"threshold rule must be one of {THRESHOLD_RULES}, not {rule!r}.")
    if rule == "fixed":
        return ThresholdChoice(FIXED_THRESHOLD, rule)
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(prob, dtype=np.float64)
    scores = np.unique(p)
    if len(np.unique(y)) < 2:
        # kappa would be 0 wherever the predictions are mixed: no information to choose with
        note = f"{rule} needs both classes in the validation studies (one class only): used 0.5"
        return ThresholdChoice(FIXED_THRESHOLD, rule, None, note)
    candidates = np.unique(
        np.r_[
            FIXED_THRESHOLD,
            (scores[:-1] + scores[1:]) / 2.0,
            scores[0] / 2.0,  # below every score: all abnormal
            (scores[-1] + 1.0) / 2.0 if scores[-1] < 1.0 else np.nextafter(1.0, 2.0),
        ]
    )
    metrics = metrics_from_confusion(*_confusion_at(y, p, candidates))
    if rule == "max_kappa":
        criterion = metrics["kappa"]
    else:
        criterion = metrics["sensitivity"] + metrics["specificity"] - 1.0
    best = np.nanmax(criterion)
    tied = np.flatnonzero(criterion >= best - _TIE_TOLERANCE)
    # candidates are sorted, so argmin returns the lower of two equally distant ones
    pick = tied[np.argmin(np.abs(candidates[tied] - FIXED_THRESHOLD))]
    return ThresholdChoice(float(candidates[pick]), rule, float(criterion[pick]))


class SensitivityThreshold(NamedTuple):
    """The highest threshold whose sensitivity reaches a target (see threshold_at_sensitivity)."""

    threshold: float | None
    sensitivity: float | None


def threshold_at_sensitivity(
    y_true: np.ndarray, prob: np.ndarray, target: float
) -> SensitivityThreshold:
    """The highest threshold that still calls at least ``target`` of the abnormal cases.

    With k = ceil(target x number of abnormal cases), this is the k-th highest abnormal score:
    every case scoring at least that much is called abnormal. Returns (None, None) when there
    is no abnormal case.
    """
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"target sensitivity must be in (0, 1], not {target!r}.")
    y = np.asarray(y_true).astype(np.int64)
    positives = np.sort(np.asarray(prob, dtype=np.float64)[y == 1])[::-1]
    if len(positives) == 0:
        return SensitivityThreshold(None, None)
    # round() first so that e.g. 0.95 x 20 = 19.000000000000004 does not become 20
    k = int(np.ceil(round(target * len(positives), 9)))
    threshold = float(positives[k - 1])
    return SensitivityThreshold(threshold, float(np.mean(positives >= threshold)))


def triage_table(
    studies: pd.DataFrame,
    sensitivities: Sequence[float] = (0.90, 0.95),
    calibrate_on: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """How many normal studies could wait if the model only flagged likely abnormal ones.

    For each target sensitivity, find the threshold reaching it, then count on ``studies`` the
    normal studies scoring below it: those a reader could leave for later while the model still
    catches the target share of abnormal studies.

    Args:
        studies: study scores (``study_scores`` output: label, prob).
        sensitivities: the targets.
        calibrate_on: study scores to choose the thresholds on (the validation subset); None
            chooses them on ``studies`` itself, which is optimistic on the achieved sensitivity.

    Returns:
        One row per target: target_sensitivity, threshold, sensitivity (achieved on
        ``studies``), normal_below (share of normal studies below the threshold, i.e. the
        specificity), all_below (share of all studies below it), abnormal_missed (count) and
        n_studies.
    """
    source = studies if calibrate_on is None else calibrate_on
    y = studies["label"].to_numpy().astype(np.int64)
    p = studies["prob"].to_numpy(dtype=np.float64)
    rows = []
    for target in sensitivities:
        threshold = threshold_at_sensitivity(source["label"], source["prob"], target).threshold
        row = {"target_sensitivity": float(target), "threshold": threshold}
        if threshold is None:
            row.update(sensitivity=None, normal_below=None, all_below=None, abnormal_missed=None)
        else:
            flagged = p >= threshold
            row["sensitivity"] = float(flagged[y == 1].mean()) if (y == 1).any() else None
            row["normal_below"] = float((~flagged[y == 0]).mean()) if (y == 0).any() else None
            row["all_below"] = float((~flagged).mean())
            row["abnormal_missed"] = int((~flagged & (y == 1)).sum())
        row["n_studies"] = len(y)
        rows.append(row)
    return pd.DataFrame(rows)


def held_out_threshold(frames: Sequence[pd.DataFrame], rule: str) -> tuple[ThresholdChoice, dict]:
    """An ensemble's threshold, chosen by ``rule`` on its members' validation predictions.

    ``frames`` holds each member's predictions on the images it held out for validation. An
    image's probability is the mean over the members that held it out: all of them for the
    best epochs of one run (one validation subset), one each for the runs of a
    cross-validation (out-of-fold predictions: every training study scored by the run that
    never saw it). No image is scored by a member that trained on it.

    Returns the choice and a description of the studies it was chosen on.
    """
    from mura_lib.evaluation.studies import study_scores

    rows = pd.concat(frames, ignore_index=True).drop_duplicates("rel_path")
    position = pd.Index(rows["rel_path"])
    probs = np.full((len(rows), len(frames)), np.nan)
    for k, frame in enumerate(frames):
        probs[position.get_indexer(frame["rel_path"]), k] = frame["prob"].to_numpy()
    studies = study_scores(rows.assign(prob=np.nanmean(probs, axis=1)))
    choice = choose_threshold(studies["label"], studies["prob"], rule)
    held_by_all = not np.isnan(probs).any()
    chosen_on = {
        "subset": "val"
        if held_by_all
        else "val, out of run (each image scored by the members that held it out)",
        "n_studies": len(studies),
        "n_images": len(rows),
        "tta": "none",
    }
    return choice, chosen_on
