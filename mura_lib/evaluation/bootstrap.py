"""Bootstrap confidence intervals that resample patients.

The patient is the unit of independence in MURA: one patient's studies (a follow-up of the same
wrist, an elbow and a hand of the same person) share anatomy, age and the model's habits, and the
views of one study share even more. Resampling studies, or images, independently would give
intervals that are too narrow. The bootstrap therefore draws patients with replacement and takes
all their cases: every study of a drawn patient for study-level metrics, every image of those
studies for image-level ones (``groups`` = the patient of each case). A patient id names one
person across body parts (MURA's ``patient11185`` can have studies of several parts), so the
overall intervals keep a patient's studies of all parts together; a body part's intervals draw
the patients that have studies of that part, with those studies.

A resample is represented by how many times each patient was drawn; every case weighs that count,
and the metrics of all resamples are then computed at once (see
:mod:`mura_lib.evaluation.metrics` and :mod:`mura_lib.evaluation.calibration`), in chunks that
keep memory to a few tens of MB. The intervals are percentile intervals over the resamples
where the metric is defined.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import pandas as pd

from mura_lib.evaluation.calibration import (
    CALIBRATION_METRICS,
    weighted_brier,
    weighted_ece,
    weighted_recalibration,
)
from mura_lib.evaluation.metrics import (
    METRICS,
    metrics_from_confusion,
    predict_abnormal,
    weighted_auroc,
    weighted_average_precision,
)
from mura_lib.evaluation.predictions import PredictionsError

_CHUNK_CELLS = 1_000_000  # resamples x cases per chunk: ~8 MB per float64 work array


def resample_counts(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_units) array: how often each unit is drawn in each resample of n_units."""
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    offsets = (np.arange(n_boot) * n_units)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=n_boot * n_units).reshape(
        n_boot, n_units
    )


def group_rng(seed: int, name: str) -> np.random.Generator:
    """A generator fixed by (seed, group name): each body part gets its own stream."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def patient_units(frame: pd.DataFrame, source: str = "predictions") -> np.ndarray | None:
    """The patient of each row, the bootstrap's unit; None when the frame has no patient_id.

    Raises:
        PredictionsError: patient_id is there but empty in some rows, which would silently
            merge or split patients.
    """
    if "patient_id" not in frame.columns:
        return None
    patients = frame["patient_id"]
    if patients.isna().any():
        study = frame.loc[patients.isna(), "study_id"].iloc[0]
        raise PredictionsError(
            f"{source}: patient_id is empty in {int(patients.isna().sum())} row(s) (e.g. study "
            f"{study}); fill it from the MURA index, or drop the column to resample studies."
        )
    return patients.to_numpy()


def bootstrap_unit(patients: np.ndarray | None, n_studies: int) -> dict:
    """What the bootstrap draws, for metrics.json: the unit, how many, and how.

    Predictions without patient ids (an external CSV) fall back to studies, and say so.
    """
    if patients is None:
        return {
            "unit": "study",
            "n_units": int(n_studies),
            "resampling": "studies drawn with replacement (image-level metrics: each with all "
            "its images)",
            "unit_note": "the predictions have no patient_id column: studies are resampled as "
            "independent, which gives too narrow intervals when patients have several studies",
        }
    return {
        "unit": "patient",
        "n_units": int(pd.Series(patients).nunique()),
        "resampling": "patients drawn with replacement, each with all their studies (and, "
        "for image-level metrics, all their images); overall across body parts, per body "
        "part the patients with studies of that part",
    }


def resampled_weights(
    groups: np.ndarray | None, n_cases: int, n_boot: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Chunks of case weights, shape (resamples, n_cases), ``n_boot`` rows in all.

    A case weighs how often its unit (``groups``; None: the case itself) was drawn.
    """
    unit = np.arange(n_cases) if groups is None else pd.factorize(np.asarray(groups))[0]
    n_units = int(unit.max()) + 1 if n_cases else 0
    chunk = max(1, _CHUNK_CELLS // max(n_cases, 1))
    for start in range(0, n_boot, chunk):
        counts = resample_counts(n_units, min(chunk, n_boot - start), rng)
        yield counts[:, unit].astype(np.float64)


def bootstrap_replicates(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    rng: np.random.Generator | None = None,
    calibration: bool = False,
) -> dict[str, np.ndarray]:
    """Each metric of :data:`~mura_lib.evaluation.metrics.METRICS` on ``n_boot`` resamples.

    Args:
        y_true, prob: one entry per case; abnormal predicted when ``prob >= threshold``.
        groups: the resampling unit of each case (the patient); None when each case is its own
            unit.
        n_boot: number of resamples.
        rng: random generator (default: ``np.random.default_rng(0)``).
        calibration: also the metrics of
            :data:`~mura_lib.evaluation.calibration.CALIBRATION_METRICS`, on the same resamples.

    Returns:
        {metric: array of n_boot values}, NaN where a resample leaves it undefined.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(prob, dtype=np.float64)
    pred = predict_abnormal(p, threshold)
    cells = np.stack([~pred & (y == 0), pred & (y == 0), ~pred & (y == 1), pred & (y == 1)], 1)

    names = [*METRICS, *(CALIBRATION_METRICS if calibration else ())]
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for weights in resampled_weights(groups, len(y), n_boot, rng):
        tn, fp, fn, tp = (weights @ cells.astype(np.float64)).T
        for name, values in metrics_from_confusion(tn, fp, fn, tp).items():
            out[name].append(values)
        out["auroc"].append(weighted_auroc(y, p, weights))
        out["average_precision"].append(weighted_average_precision(y, p, weights))
        if calibration:
            out["brier"].append(weighted_brier(y, p, weights))
            out["ece"].append(weighted_ece(y, p, weights))
            slope, intercept = weighted_recalibration(y, p, weights)
            out["calibration_slope"].append(slope)
            out["calibration_intercept"].append(intercept)
    return {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in out.items()}


def percentile_ci(
    replicates: dict[str, np.ndarray], level: float = 0.95
) -> tuple[dict[str, list[float] | None], dict[str, int]]:
    """Percentile intervals of replicates, ignoring the resamples where a metric is undefined.

    Returns:
        ({metric: [lo, hi] or None when no resample defines it},
         {metric: number of resamples dropped because the metric was undefined there}, only
         for metrics with at least one dropped).
    """
    tail = 100.0 * (1.0 - level) / 2.0
    ci: dict[str, list[float] | None] = {}
    dropped: dict[str, int] = {}
    for metric, values in replicates.items():
        valid = values[~np.isnan(values)]
        if len(valid) < len(values):
            dropped[metric] = int(len(values) - len(valid))
        if len(valid) == 0:
            ci[metric] = None
        else:
            lo, hi = np.percentile(valid, [tail, 100.0 - tail])
            ci[metric] = [float(lo), float(hi)]
    return ci, dropped


def bootstrap_ci(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    name: str = "overall",
    calibration: bool = False,
) -> tuple[dict[str, list[float] | None], dict[str, int]]:
    """Percentile bootstrap intervals of every metric, resampling the units of ``groups``.

    Args:
        y_true, prob, threshold, groups, n_boot, calibration: as in
            :func:`bootstrap_replicates`.
        seed: with ``name``, fixes the resamples: the same inputs give the same intervals.
        level: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        name: the group's name (e.g. a body part), mixed into the seed so that groups do not
            share resampling patterns.

    Returns:
        As :func:`percentile_ci`.
    """
    rng = group_rng(seed, name)
    replicates = bootstrap_replicates(y_true, prob, threshold, groups, n_boot, rng, calibration)
    return percentile_ci(replicates, level)
