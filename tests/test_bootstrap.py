"""Tests of mura_lib.evaluation.bootstrap: intervals resampling studies."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mura_lib.evaluation.bootstrap import bootstrap_ci, bootstrap_replicates, resample_counts
from mura_lib.evaluation.metrics import METRICS, binary_metrics


def _studies(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0)
    return y, p


def test_resample_counts_draw_each_resample_of_full_size() -> None:
    counts = resample_counts(50, 20, np.random.default_rng(0))
    assert counts.shape == (20, 50)
    assert (counts.sum(axis=1) == 50).all()


def test_interval_contains_point_estimate() -> None:
    y, p = _studies()
    ci, dropped = bootstrap_ci(y, p, 0.5, n_boot=500, seed=0)
    point = binary_metrics(y, p, 0.5)
    assert dropped == {}
    for name in METRICS:
        lo, hi = ci[name]
        assert lo <= point[name] <= hi, name
        assert hi - lo < 0.25


def test_interval_is_deterministic_from_seed() -> None:
    y, p = _studies()
    first = bootstrap_ci(y, p, 0.5, n_boot=200, seed=7)
    assert bootstrap_ci(y, p, 0.5, n_boot=200, seed=7) == first
    assert bootstrap_ci(y, p, 0.5, n_boot=200, seed=8) != first
    assert bootstrap_ci(y, p, 0.5, n_boot=200, seed=7, name="WRIST") != first


def test_image_level_resamples_whole_studies() -> None:
    # Two identical views per study: resampling studies with their images gives the same
    # metrics as resampling the studies, replicate by replicate.
    y, p = _studies(100)
    groups = np.repeat(np.arange(100), 2)
    by_image = bootstrap_replicates(
        y[groups], p[groups], 0.5, groups, n_boot=50, rng=np.random.default_rng(1)
    )
    by_study = bootstrap_replicates(y, p, 0.5, n_boot=50, rng=np.random.default_rng(1))
    for name in METRICS:
        np.testing.assert_allclose(by_image[name], by_study[name])


def test_tiny_group_drops_undefined_resamples_and_says_so() -> None:
    ci, dropped = bootstrap_ci(np.array([0, 1, 1]), np.array([0.2, 0.6, 0.4]), 0.5, n_boot=100)
    assert 0 < dropped["auroc"] < 100
    assert all(v is None or all(np.isfinite(v)) for v in ci.values())


def test_thousand_resamples_of_mura_valid_size_are_fast() -> None:
    y, p = _studies(1200)
    start = time.perf_counter()
    bootstrap_ci(y, p, 0.5, n_boot=1000)
    # about 0.2 s on one core; a generous bound for a shared machine
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize("n_boot", [1, 3])
def test_few_resamples_still_give_intervals(n_boot: int) -> None:
    y, p = _studies(40)
    ci, _ = bootstrap_ci(y, p, 0.5, n_boot=n_boot)
    assert ci["kappa"][0] <= ci["kappa"][1]
