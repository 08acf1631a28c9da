"""Bootstrap confidence intervals that resample studies.

The study is the unit of MURA's labels and of the paper's metric, and the views of one study
are strongly correlated, so resampling images independently would give intervals that are too
narrow. :func:`bootstrap_ci` therefore draws studies with replacement; image-level metrics
take every image of each drawn study (``groups`` = the study of each image).

A resample is represented by how many times each study was drawn; the metrics of all
resamples are then computed at once (see :mod:`mura_lib.evaluation.metrics`), in chunks that
keep memory to a few tens of MB. The intervals are percentile intervals over the resamples
where the metric is defined.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from mura_lib.evaluation.metrics import (
    METRICS,
    metrics_from_confusion,
    predict_abnormal,
    weighted_auroc,
    weighted_average_precision,
)

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


def bootstrap_replicates(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Each metric of :data:`~mura_lib.evaluation.metrics.METRICS` on ``n_boot`` resamples.

    Args:
        y_true, prob: one entry per case; abnormal predicted when ``prob >= threshold``.
        groups: the resampling unit of each case (e.g. study_id for images); None when each
            case is its own unit (study-level metrics).
        n_boot: number of resamples.
        rng: random generator (default: ``np.random.default_rng(0)``).

    Returns:
        {metric: array of n_boot values}, NaN where a resample leaves it undefined.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(prob, dtype=np.float64)
    if groups is None:
        unit = np.arange(len(y))
    else:
        unit = pd.factorize(np.asarray(groups))[0]
    n_units = int(unit.max()) + 1 if len(unit) else 0
    pred = predict_abnormal(p, threshold)
    cells = np.stack([~pred & (y == 0), pred & (y == 0), ~pred & (y == 1), pred & (y == 1)], 1)

    out: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    chunk = max(1, _CHUNK_CELLS // max(len(y), 1))
    for start in range(0, n_boot, chunk):
        counts = resample_counts(n_units, min(chunk, n_boot - start), rng)
        weights = counts[:, unit].astype(np.float64)
        tn, fp, fn, tp = (weights @ cells.astype(np.float64)).T
        for name, values in metrics_from_confusion(tn, fp, fn, tp).items():
            out[name].append(values)
        out["auroc"].append(weighted_auroc(y, p, weights))
        out["average_precision"].append(weighted_average_precision(y, p, weights))
    return {name: np.concatenate(parts) if parts else np.empty(0) for name, parts in out.items()}


def bootstrap_ci(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    name: str = "overall",
) -> tuple[dict[str, list[float] | None], dict[str, int]]:
    """Percentile bootstrap intervals of every metric, resampling studies.

    Args:
        y_true, prob, threshold, groups, n_boot: as in :func:`bootstrap_replicates`.
        seed: with ``name``, fixes the resamples: the same inputs give the same intervals.
        level: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        name: the group's name (e.g. a body part), mixed into the seed so that groups do not
            share resampling patterns.

    Returns:
        ({metric: [lo, hi] or None when no resample defines it},
         {metric: number of resamples dropped because the metric was undefined there}, only
         for metrics with at least one dropped).
    """
    replicates = bootstrap_replicates(
        y_true, prob, threshold, groups, n_boot=n_boot, rng=group_rng(seed, name)
    )
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
