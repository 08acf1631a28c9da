"""Binary classification metrics that never crash and never return NaN.

One decision rule everywhere: a case is predicted abnormal when ``prob >= threshold``.

:func:`binary_metrics` gives the point estimates. A group where a metric is undefined (AUROC
on a body part whose studies are all normal, say) gets ``None`` for that metric and a reason in
``"undefined"``, so the result is always JSON-serialisable with ``allow_nan=False``.

The ``*_from_confusion`` and ``weighted_*`` functions compute the same metrics for many
weightings of the cases at once (rows of a weight matrix). The bootstrap uses them: a resample
is a vector of how often each case was drawn, so 1000 resamples are a few matrix operations
instead of 1000 calls to scikit-learn. Ties are handled as scikit-learn does (AUROC counts a
tie as one half; average precision treats tied scores as one threshold).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, cohen_kappa_score, roc_auc_score

# The metrics a metric block carries, in report order; all lie in [0, 1] except kappa.
METRICS = (
    "kappa",
    "auroc",
    "average_precision",
    "f1",
    "accuracy",
    "sensitivity",
    "specificity",
    "precision",
)


def predict_abnormal(prob: np.ndarray, threshold: float) -> np.ndarray:
    """The project's decision rule: abnormal (True) when ``prob >= threshold``."""
    return np.asarray(prob) >= threshold


def metrics_from_confusion(
    tn: np.ndarray, fp: np.ndarray, fn: np.ndarray, tp: np.ndarray
) -> dict[str, np.ndarray]:
    """Threshold metrics from (possibly weighted, possibly vectorised) confusion counts.

    Returns arrays shaped like the inputs, NaN where a metric is undefined. Kappa is Cohen's:
    (p_o - p_e) / (1 - p_e), undefined when chance agreement p_e is 1 (truth and prediction
    all in one and the same class), as in scikit-learn.
    """
    tn, fp, fn, tp = (np.asarray(a, dtype=np.float64) for a in (tn, fp, fn, tp))
    n = tn + fp + fn + tp
    with np.errstate(divide="ignore", invalid="ignore"):
        p_o = (tp + tn) / n
        p_e = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
        kappa = np.where(p_e < 1.0, (p_o - p_e) / (1.0 - p_e), np.nan)
        return {
            "kappa": kappa,
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "accuracy": np.where(n > 0, p_o, np.nan),
            "sensitivity": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
            "specificity": np.where(tn + fp > 0, tn / (tn + fp), np.nan),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
        }


def _ties(score_sorted: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    return np.flatnonzero(np.r_[True, score_sorted[1:] != score_sorted[:-1]])


def weighted_auroc(y: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``weights`` (shape (B, n)) as case multiplicities.

    Mann-Whitney form: the weighted share of (abnormal, normal) pairs ranked correctly, ties
    counting one half. Equals ``roc_auc_score`` on the resampled arrays; NaN where a row
    holds a single class.
    """
    order = np.argsort(prob, kind="mergesort")
    starts = _ties(np.asarray(prob)[order])
    w = np.atleast_2d(weights)[:, order]
    pos = np.asarray(y)[order] == 1
    g_pos = np.add.reduceat(w * pos, starts, axis=1)
    g_neg = np.add.reduceat(w * ~pos, starts, axis=1)
    neg_below = np.cumsum(g_neg, axis=1) - g_neg
    n_pos, n_neg = g_pos.sum(axis=1), g_neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (g_pos * (neg_below + 0.5 * g_neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def weighted_average_precision(y: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's step-wise sum) for each row of ``weights``.

    AP = sum over distinct thresholds, highest first, of (recall gain) x (precision there).
    NaN where a row holds no abnormal case.
    """
    order = np.argsort(-np.asarray(prob), kind="mergesort")
    starts = _ties(np.asarray(prob)[order])
    w = np.atleast_2d(weights)[:, order]
    pos = np.asarray(y)[order] == 1
    g_pos = np.add.reduceat(w * pos, starts, axis=1)
    g_all = np.add.reduceat(w, starts, axis=1)
    n_pos = g_pos.sum(axis=1)
    called = np.cumsum(g_all, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(called > 0, np.cumsum(g_pos, axis=1) / called, 0.0)
        ap = (g_pos * precision).sum(axis=1) / n_pos
    return np.where(n_pos > 0, ap, np.nan)


def _class_reason(n_pos: int, n_neg: int) -> str | None:
    if n_pos + n_neg == 0:
        return "no cases"
    if n_pos == 0:
        return "only one class present (all normal)"
    if n_neg == 0:
        return "only one class present (all abnormal)"
    return None


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    """Point estimates of the threshold and ranking metrics of one group of cases.

    Args:
        y_true: 1 = abnormal, 0 = normal.
        prob: probability of abnormal.
        threshold: abnormal when ``prob >= threshold``.

    Returns:
        A JSON-ready dict: n, n_positive, n_negative, the :data:`METRICS` (float or None),
        confusion {tn, fp, fn, tp} and undefined {metric: reason} for each None.
    """
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(prob, dtype=np.float64)
    pred = predict_abnormal(p, threshold)
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    n_pos, n_neg = tp + fn, tn + fp
    values = {k: float(v) for k, v in metrics_from_confusion(tn, fp, fn, tp).items()}

    # The reference implementations give the reported values wherever they are defined.
    if not np.isnan(values["kappa"]):
        values["kappa"] = float(cohen_kappa_score(y, pred.astype(np.int64), labels=[0, 1]))
    class_reason = _class_reason(n_pos, n_neg)
    values["auroc"] = float(roc_auc_score(y, p)) if class_reason is None else np.nan
    values["average_precision"] = float(average_precision_score(y, p)) if n_pos else np.nan

    reasons = {
        "kappa": "truth and prediction all in one class (chance agreement is 1)",
        "auroc": class_reason,
        "average_precision": "no abnormal cases",
        "f1": "no abnormal cases and none predicted abnormal",
        "accuracy": "no cases",
        "sensitivity": "no abnormal cases",
        "specificity": "no normal cases",
        "precision": "no case predicted abnormal",
    }
    result: dict = {"n": n_pos + n_neg, "n_positive": n_pos, "n_negative": n_neg}
    undefined: dict[str, str] = {}
    for name in METRICS:
        if np.isnan(values[name]):
            result[name] = None
            undefined[name] = "no cases" if n_pos + n_neg == 0 else reasons[name]
        else:
            result[name] = values[name]
    result["confusion"] = {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    result["undefined"] = undefined
    return result
