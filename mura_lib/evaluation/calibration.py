"""Are the study probabilities calibrated? Reliability table, Brier score, ECE, recalibration.

Four numbers summarise a study level's calibration (metrics.json, every study-level block):

* ``brier``: mean squared difference between probability and label (0 is perfect);
* ``ece``: expected calibration error over :data:`ECE_BINS` equal-width bins of [0, 1], the
  study-weighted mean |mean probability - observed abnormal rate| of the bins, the same bins
  as the reliability figure (:func:`calibration_table`);
* ``calibration_slope`` and ``calibration_intercept``: the logistic recalibration
  ``logit P(abnormal) = intercept + slope * logit(prob)``, fitted by scikit-learn without a
  penalty. Slope 1 and intercept 0 for a calibrated model; a slope below 1 means
  over-confident probabilities (too close to 0 and 1), an intercept above 0 probabilities
  too low overall. Probabilities are clipped to [:data:`LOGIT_CLIP`, 1 - LOGIT_CLIP] before the
  logit: a float32 sigmoid gives exactly 0 or 1 for large logits.

The slope and intercept have no finite value when the score separates the classes (every
abnormal study scored at or above every normal one, or below): the fit's likelihood keeps
growing with the slope. They are then undefined (None with a reason; a bootstrap resample
where that happens is dropped, like a resample with one class only).

Every function also takes a weight matrix (rows: bootstrap resamples, entries: how often each
study was drawn) so that :mod:`mura_lib.evaluation.bootstrap` computes all resamples at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

CALIBRATION_METRICS = ("brier", "ece", "calibration_slope", "calibration_intercept")
ECE_BINS = 10
LOGIT_CLIP = 1e-6
# Settings recorded in metrics.json beside the blocks that carry these metrics.
CALIBRATION_SETTINGS = {
    "ece_bins": ECE_BINS,
    "ece_binning": "equal-width bins of [0, 1] (a probability of 1 joins the top bin)",
    "recalibration": "logistic regression of the label on logit(prob), no penalty "
    "(scikit-learn, newton-cholesky)",
    "logit_clip": [LOGIT_CLIP, 1.0 - LOGIT_CLIP],
}
# Resamples fitted together (see _recalibration_fits): ~100 is the fastest on a CPU; much
# larger chunks make scikit-learn's Newton steps far slower.
_FIT_CHUNK = 100


def calibration_bins(prob: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """The equal-width bin (0 .. n_bins - 1) of each probability; 1.0 joins the top bin."""
    return np.clip((np.asarray(prob) * n_bins).astype(np.int64), 0, n_bins - 1)


def calibration_table(studies: pd.DataFrame, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Mean predicted probability against the observed abnormal rate, in equal-width bins.

    Returns:
        One row per bin of [0, 1]: bin_lo, bin_hi, n, mean_prob, observed_rate (the last two
        NaN for an empty bin). A well calibrated model has mean_prob close to observed_rate.
    """
    prob = studies["prob"].to_numpy(dtype=np.float64)
    label = studies["label"].to_numpy(dtype=np.float64)
    index = calibration_bins(prob, n_bins)
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


def weighted_brier(y: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Brier score for each row of ``weights`` (shape (B, n)) as case multiplicities."""
    w = np.atleast_2d(weights)
    return (w @ (np.asarray(prob) - np.asarray(y)) ** 2) / w.sum(axis=1)


def weighted_ece(
    y: np.ndarray, prob: np.ndarray, weights: np.ndarray, n_bins: int = ECE_BINS
) -> np.ndarray:
    """ECE for each row of ``weights``.

    A bin's share of the cases times |mean prob - observed rate| is |sum of (prob - label)|
    over the bin divided by all cases, so each row needs one matrix product.
    """
    w = np.atleast_2d(weights)
    gap = np.zeros((len(y), n_bins))
    gap[np.arange(len(y)), calibration_bins(prob, n_bins)] = np.asarray(prob) - np.asarray(y)
    return np.abs(w @ gap).sum(axis=1) / w.sum(axis=1)


def expected_calibration_error(
    y_true: np.ndarray, prob: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE of one group of studies: the bins of :func:`calibration_table`, study-weighted."""
    y = np.asarray(y_true, dtype=np.float64)
    return float(weighted_ece(y, np.asarray(prob, np.float64), np.ones(len(y)), n_bins)[0])


def clipped_logit(prob: np.ndarray) -> np.ndarray:
    """logit(prob) with prob clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP]."""
    p = np.clip(np.asarray(prob, dtype=np.float64), LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def separated(y: np.ndarray, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """For each row of ``weights``: does ``x`` separate the drawn classes (ties included)?

    Then the recalibration has no finite maximum-likelihood fit; a row holding one class only
    counts as separated too.
    """
    drawn = np.atleast_2d(weights) > 0
    pos, neg = drawn & (np.asarray(y) == 1), drawn & (np.asarray(y) == 0)
    low_pos = np.where(pos, x, np.inf).min(axis=1)
    high_pos = np.where(pos, x, -np.inf).max(axis=1)
    low_neg = np.where(neg, x, np.inf).min(axis=1)
    high_neg = np.where(neg, x, -np.inf).max(axis=1)
    return (high_neg <= low_pos) | (high_pos <= low_neg)


def _recalibration_fits(y: np.ndarray, x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(slope, intercept) of each row of ``weights``, rows fitted together.

    The rows' likelihoods share no parameter, so one unpenalised fit with a slope and an
    intercept column per row (each row's drawn cases, weighted by their counts, only in its
    own two columns) has as its maximum exactly every row's own fit; it saves scikit-learn's
    per-fit overhead, which is most of the cost of 1,000 small fits.
    """
    n_rows = len(weights)
    row, case = np.nonzero(weights)
    entry = np.arange(len(row))
    design = sp.csr_matrix(
        (np.r_[x[case], np.ones(len(row))], (np.r_[entry, entry], np.r_[2 * row, 2 * row + 1])),
        shape=(len(row), 2 * n_rows),
    )
    model = LogisticRegression(
        C=np.inf, solver="newton-cholesky", fit_intercept=False, tol=1e-8, max_iter=200
    )
    model.fit(design, y[case], sample_weight=weights[row, case])
    return model.coef_[0].reshape(n_rows, 2)


def weighted_recalibration(
    y: np.ndarray, prob: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Recalibration slope and intercept for each row of ``weights``; NaN where separated."""
    y = np.asarray(y).astype(np.int64)
    x = clipped_logit(prob)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    slope, intercept = np.full(len(w), np.nan), np.full(len(w), np.nan)
    fit = np.flatnonzero(~separated(y, x, w))
    for start in range(0, len(fit), _FIT_CHUNK):
        rows = fit[start : start + _FIT_CHUNK]
        coef = _recalibration_fits(y, x, w[rows])
        slope[rows], intercept[rows] = coef[:, 0], coef[:, 1]
    return slope, intercept


def calibration_metrics(y_true: np.ndarray, prob: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Point estimates of :data:`CALIBRATION_METRICS` for one group of studies.

    Returns:
        {metric: float or None, "undefined": {metric: reason} for each None}.
    """
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(prob, dtype=np.float64)
    ones = np.ones((1, len(y)))
    result: dict = {
        "brier": float(weighted_brier(y, p, ones)[0]),
        "ece": float(weighted_ece(y, p, ones, n_bins)[0]),
    }
    slope, intercept = weighted_recalibration(y, p, ones)
    undefined = {}
    if np.isnan(slope[0]):
        if y.min() == y.max():
            reason = f"only one class present (all {'abnormal' if y[0] else 'normal'})"
        else:
            reason = "the score separates the classes: no finite recalibration fit"
        undefined = {"calibration_slope": reason, "calibration_intercept": reason}
    result["calibration_slope"] = None if np.isnan(slope[0]) else float(slope[0])
    result["calibration_intercept"] = None if np.isnan(intercept[0]) else float(intercept[0])
    result["undefined"] = undefined
    return result
