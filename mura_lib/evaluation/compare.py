"""Is model B better than model A on the same studies? Paired comparisons of two prediction sets.

Two models evaluated on the same test studies are not independent samples: a hard study is hard
for both. Comparing their separate confidence intervals (which overlap far more often than the
difference is in doubt) wastes that pairing. Here both are resampled together:

* **Paired bootstrap** of the difference ``b - a`` in study-level kappa, accuracy (each model at
  its own decision threshold, chosen on validation) and AUROC: every resample draws the same
  patients, with all their studies, for both models (the patient is the unit of independence,
  see :mod:`mura_lib.evaluation.bootstrap`), and the interval is the percentile interval of
  the differences.
* **McNemar's exact test** for the accuracy difference: among the studies that exactly one
  model gets right at its threshold, is each model equally likely to be that one? A two-sided
  binomial test of ``n_a_only`` out of ``n_a_only + n_b_only`` at 1/2 (p = 1 when no study is
  discordant).
* **DeLong's test** for the AUROC difference (DeLong, DeLong & Clarke-Pearson 1988), with the
  fast midrank algorithm of Sun & Xu (2014): the two AUROCs' covariance from their structural
  components, a z statistic and a two-sided p value.

Overall and per body part, as every other metric of the project. Pure functions of the
prediction frames, like the rest of :mod:`mura_lib.evaluation`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm, rankdata

from mura_lib.data.mura_layout import ordered_parts
from mura_lib.errors import MuraError
from mura_lib.evaluation.bootstrap import (
    bootstrap_replicates,
    bootstrap_unit,
    group_rng,
    patient_units,
)
from mura_lib.evaluation.metrics import binary_metrics, predict_abnormal
from mura_lib.evaluation.predictions import read_predictions
from mura_lib.evaluation.studies import study_scores
from mura_lib.publication import check_publication

COMPARED_METRICS = ("kappa", "accuracy", "auroc")


def delong_test(y_true: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray) -> dict:
    """DeLong's test of AUROC(b) - AUROC(a) on the same cases.

    Returns:
        {"auroc_a", "auroc_b", "diff", "se", "z", "p"}; ``p`` is two-sided. Two identical
        score vectors give diff 0, se 0 and p 1. Every value is None (with "undefined": the
        reason) when a class has fewer than two cases, where the covariance is undefined.
    """
    y = np.asarray(y_true).astype(bool)
    scores = np.stack([np.asarray(prob_a, np.float64), np.asarray(prob_b, np.float64)])
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return {
            **dict.fromkeys(("auroc_a", "auroc_b", "diff", "se", "z", "p")),
            "undefined": f"needs two abnormal and two normal studies ({m} and {n})",
        }
    pos, neg = scores[:, y], scores[:, ~y]
    # Midranks within the positives, within the negatives, and over all cases (Sun & Xu).
    rank_pos = rankdata(pos, axis=1)
    rank_neg = rankdata(neg, axis=1)
    rank_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    auc = rank_all[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v_pos = (rank_all[:, :m] - rank_pos) / n  # structural components of the abnormal cases
    v_neg = 1.0 - (rank_all[:, m:] - rank_neg) / m  # ... and of the normal ones
    cov = np.cov(v_pos) / m + np.cov(v_neg) / n
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = float(auc[1] - auc[0])
    se = math.sqrt(max(var, 0.0))
    if se <= 1e-15:  # the two models rank every pair alike: no evidence of a difference
        z, p = 0.0, 1.0
    else:
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    return {
        "auroc_a": float(auc[0]),
        "auroc_b": float(auc[1]),
        "diff": diff,
        "se": se,
        "z": float(z),
        "p": p,
    }


def mcnemar_test(
    y_true: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    threshold_a: float,
    threshold_b: float,
) -> dict:
    """McNemar's exact test of the two models' decisions, each at its own threshold.

    Returns:
        {"n_a_only": studies right by A only, "n_b_only": right by B only, "mcnemar_p":
        two-sided exact binomial p of n_a_only among the discordant studies, 1.0 if none}.
    """
    y = np.asarray(y_true).astype(bool)
    right_a = predict_abnormal(prob_a, threshold_a) == y
    right_b = predict_abnormal(prob_b, threshold_b) == y
    a_only, b_only = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"n_a_only": a_only, "n_b_only": b_only, "mcnemar_p": float(p)}


def paired_bootstrap(
    y_true: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    threshold_a: float,
    threshold_b: float,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    name: str = "overall",
    groups: np.ndarray | None = None,
) -> dict[str, dict]:
    """Per metric of :data:`COMPARED_METRICS`: {"a", "b", "diff", "ci", "n_boot_used"}.

    Both models are scored on the same resamples (one generator fixed by ``seed`` and
    ``name``, restarted for each model) of the units in ``groups`` (the patient of each study;
    None: the studies themselves), so ``diff`` is paired resample by resample. ``ci`` is the
    percentile interval of ``b - a`` over the resamples where the metric is defined for both,
    or None where no resample defines it.
    """
    y = np.asarray(y_true)
    point_a = binary_metrics(y, prob_a, threshold_a)
    point_b = binary_metrics(y, prob_b, threshold_b)
    reps_a = bootstrap_replicates(y, prob_a, threshold_a, groups, n_boot, group_rng(seed, name))
    reps_b = bootstrap_replicates(y, prob_b, threshold_b, groups, n_boot, group_rng(seed, name))
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for metric in COMPARED_METRICS:
        a, b = point_a[metric], point_b[metric]
        diffs = reps_b[metric] - reps_a[metric]
        diffs = diffs[~np.isnan(diffs)]
        ci = None
        if len(diffs) and a is not None and b is not None:
            lo, hi = np.percentile(diffs, [tail, 100.0 - tail])
            ci = [float(lo), float(hi)]
        out[metric] = {
            "a": a,
            "b": b,
            "diff": None if a is None or b is None else float(b - a),
            "ci": ci,
            "n_boot_used": int(len(diffs)),
        }
    return out


def _paired(
    studies_a: pd.DataFrame, studies_b: pd.DataFrame, names: tuple[str, str]
) -> np.ndarray | None:
    """Refuse two study sets that are not the same studies with the same labels and patients;
    return the patient of each study (None when neither set has patient ids)."""
    ids_a, ids_b = set(studies_a["study_id"]), set(studies_b["study_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise MuraError(
            f"{names[0]} and {names[1]} are not over the same studies ({len(only_a)} only in "
            f"the first, e.g. {only_a[:2]}; {len(only_b)} only in the second, e.g. "
            f"{only_b[:2]}): evaluate both models on the same split of the same data"
        )
    if not np.array_equal(studies_a["label"].to_numpy(), studies_b["label"].to_numpy()):
        raise MuraError(
            f"{names[0]} and {names[1]} give the same studies different labels: they were "
            "evaluated on different copies of the data"
        )
    patients_a = patient_units(studies_a, names[0])
    patients_b = patient_units(studies_b, names[1])
    if patients_a is not None and patients_b is not None:
        differ = pd.Series(patients_a).astype(str) != pd.Series(patients_b).astype(str)
        if differ.any():
            study = studies_a["study_id"].iloc[int(np.flatnonzero(differ)[0])]
            raise MuraError(
                f"{names[0]} and {names[1]} give study {study} (and {int(differ.sum()) - 1} "
                "more) different patients: they were evaluated on different copies of the data"
            )
    return patients_b if patients_a is None else patients_a


def compare_predictions(
    predictions_a: pd.DataFrame,
    predictions_b: pd.DataFrame,
    threshold_a: float,
    threshold_b: float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    names: tuple[str, str] = ("A", "B"),
) -> dict:
    """Paired comparison of two per-image prediction frames over the same studies.

    Returns a JSON-ready dict::

        {"a": names[0], "b": names[1], "n_studies", "aggregation",
         "thresholds": {"a", "b"},
         "bootstrap": {n_boot, seed, level, method, unit, n_units, resampling (, unit_note)},
         "tests": {"accuracy": how McNemar's test is done, "auroc": DeLong's},
         "study": {"overall": {"kappa": {...}, "accuracy": {..., "mcnemar_p", "n_a_only",
                   "n_b_only"}, "auroc": {..., "delong_p", "delong_z"}},
                   "by_body_part": {part: the same}}}

    where each metric holds ``a``, ``b``, ``diff`` (b - a) and ``ci`` (paired bootstrap). The
    patients come from the frames' patient_id; frames without one are resampled by study,
    which ``bootstrap`` says.
    """
    studies_a = study_scores(predictions_a, source=names[0])
    studies_b = study_scores(predictions_b, source=names[1])
    patients = _paired(studies_a, studies_b, names)

    def block(rows: np.ndarray, name: str) -> dict:
        y = studies_a["label"].to_numpy()[rows]
        pa, pb = studies_a["prob"].to_numpy()[rows], studies_b["prob"].to_numpy()[rows]
        groups = None if patients is None else patients[rows]
        result = paired_bootstrap(
            y, pa, pb, threshold_a, threshold_b, n_boot, seed, level, name, groups
        )
        result["accuracy"] |= mcnemar_test(y, pa, pb, threshold_a, threshold_b)
        delong = delong_test(y, pa, pb)
        result["auroc"]["delong_p"] = delong["p"]
        result["auroc"]["delong_z"] = delong["z"]
        if "undefined" in delong:
            result["auroc"]["delong_undefined"] = delong["undefined"]
        return result

    by_part = {}
    for part in ordered_parts(studies_a["body_part"]):
        in_part = (studies_a["body_part"] == part).to_numpy()
        by_part[part] = block(in_part, f"compare:{part}")
    return {
        "a": names[0],
        "b": names[1],
        "n_studies": len(studies_a),
        "aggregation": "mean",
        "thresholds": {"a": float(threshold_a), "b": float(threshold_b)},
        "bootstrap": {
            "n_boot": int(n_boot),
            "seed": int(seed),
            "level": float(level),
            "method": "paired percentile (both models on the same resamples)",
            **bootstrap_unit(patients, len(studies_a)),
        },
        "tests": {
            "accuracy": "McNemar's exact test: two-sided binomial test of n_a_only among the "
            "n_a_only + n_b_only studies that one model only gets right, each at its threshold",
            "auroc": "DeLong's test (midrank algorithm of Sun & Xu), two-sided",
        },
        "study": {
            "overall": block(np.ones(len(studies_a), dtype=bool), "compare:overall"),
            "by_body_part": by_part,
        },
    }


def read_evaluation(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    """The predictions frame and metrics.json of an evaluation folder (`mura evaluate --out`)."""
    folder = Path(folder)
    check_publication(folder)  # results/<profile> of `make reproduce`: with their models?
    pred, metrics = folder / "predictions.csv", folder / "metrics.json"
    for path in (pred, metrics):
        if not path.is_file():
            raise MuraError(f"{path} does not exist: pass folders written by `mura evaluate --out`")
    try:
        report = json.loads(metrics.read_text())
    except json.JSONDecodeError as err:
        raise MuraError(f"{metrics} is not valid JSON ({err}): evaluate again") from err
    if not isinstance(report, dict) or "threshold" not in report:
        raise MuraError(f"{metrics} has no decision threshold: it is not a metrics.json of ours")
    return read_predictions(pred), report


def compare_evaluations(
    folder_a: str | Path,
    folder_b: str | Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    names: tuple[str, str] | None = None,
) -> dict:
    """:func:`compare_predictions` of two `mura evaluate` output folders, at their thresholds.

    ``names`` label the two in the result (default: the folders as given).
    """
    pred_a, report_a = read_evaluation(folder_a)
    pred_b, report_b = read_evaluation(folder_b)
    return compare_predictions(
        pred_a,
        pred_b,
        report_a["threshold"],
        report_b["threshold"],
        n_boot=n_boot,
        seed=seed,
        names=names or (str(folder_a), str(folder_b)),
    )
