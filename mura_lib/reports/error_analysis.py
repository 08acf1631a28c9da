"""Looking at mistakes: the most confident errors and (on the synthetic sample) which kinds of
abnormality the model misses. Their views with class activation maps are drawn by
:func:`mura_lib.reports.cam_figures.study_cam_figure`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def confident_errors(
    studies: pd.DataFrame, threshold: float, n: int = 4
) -> dict[str, pd.DataFrame]:
    """The ``n`` most confident false negatives (abnormal, lowest score) and false positives
    (normal, highest score) among study scores."""
    fn = studies[(studies["label"] == 1) & (studies["prob"] < threshold)].nsmallest(n, "prob")
    fp = studies[(studies["label"] == 0) & (studies["prob"] >= threshold)].nlargest(n, "prob")
    return {"false_negatives": fn, "false_positives": fp}


def read_synthetic_truth(data_root: str | Path) -> pd.DataFrame | None:
    """The synthetic sample's ground truth (kind, subtlety per image), or None for real data.

    ``data_root`` is the MURA-v1.1 folder or its parent; the sidecar lies beside MURA-v1.1.
    """
    root = Path(data_root)
    for candidate in (root / "synthetic_truth.csv", root.parent / "synthetic_truth.csv"):
        if candidate.is_file():
            return pd.read_csv(candidate)
    return None


def misses_by_kind(
    predictions: pd.DataFrame, truth: pd.DataFrame, threshold: float
) -> pd.DataFrame:
    """Per abnormality kind and subtlety band: abnormal studies, and the share detected.

    A study's kind is that of its most visible (least subtle) abnormal view.
    """
    from mura_lib.evaluation.studies import study_scores

    studies = study_scores(predictions)
    merged = predictions.merge(truth, on="rel_path", how="left")
    abnormal_views = merged[merged["kind"].fillna("none") != "none"]
    per_study = (
        abnormal_views.sort_values("subtlety").groupby("study_id")[["kind", "subtlety"]].first()
    )
    rows = studies[studies["label"] == 1].merge(per_study, on="study_id", how="left")
    rows["subtlety_band"] = pd.cut(
        rows["subtlety"],
        [0, 0.33, 0.67, 1.0],
        labels=["obvious", "moderate", "subtle"],
        include_lowest=True,
    )
    rows["detected"] = rows["prob"] >= threshold
    table = rows.groupby(["kind", "subtlety_band"], observed=True).agg(
        studies=("study_id", "size"), detected=("detected", "mean"), mean_prob=("prob", "mean")
    )
    return table.reset_index()


def attention_spread(predictions: pd.DataFrame) -> pd.DataFrame:
    """How far a study-level model's view weights are from uniform, by number of views.

    Per view count: the studies, the uniform weight 1/n, and the mean and largest weight of
    the most-trusted view. A head that learnt nothing beyond the mean gives 1/n throughout.
    """
    per_study = predictions.groupby("study_id")["view_weight"].agg(n_views="size", top="max")
    table = per_study.groupby("n_views")["top"].agg(studies="size", mean_top="mean", max_top="max")
    return table.assign(uniform=1.0 / table.index)[["studies", "uniform", "mean_top", "max_top"]]
