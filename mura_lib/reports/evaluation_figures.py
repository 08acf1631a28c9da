"""Evaluation figures: ROC and precision-recall curves per body part, confusion matrix,
calibration curve, per-part metric chart.

Each function takes data (study scores from ``study_scores``, a confusion dict from a metric
block, a calibration table, a per-part table) and an optional matplotlib Axes to draw on, and
returns the Figure. Nothing here calls ``plt.show()``: notebooks display the returned figure,
scripts save it with :func:`mura_lib.reports.figures.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from mura_lib.data.mura_layout import ordered_parts


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 5.0)) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _groups(studies: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """("all", every study) then each body part present, in the paper's order."""
    parts = ordered_parts(studies["body_part"])
    return [("all", studies)] + [(p, studies[studies["body_part"] == p]) for p in parts]


def _two_classes(rows: pd.DataFrame) -> bool:
    return rows["label"].nunique() == 2


def plot_roc_curves(studies: pd.DataFrame, ax: Axes | None = None, title: str = "ROC") -> Figure:
    """ROC curve of all studies (thick) and of each body part, AUROC in the legend.

    Parts with a single class have no ROC curve and are listed as skipped in the legend.
    """
    fig, ax = _axes(ax)
    for name, rows in _groups(studies):
        if not _two_classes(rows):
            ax.plot([], [], " ", label=f"{name}: one class, no curve")
            continue
        fpr, tpr, _ = roc_curve(rows["label"], rows["prob"])
        auc = roc_auc_score(rows["label"], rows["prob"])
        lw, color = (2.5, "black") if name == "all" else (1.2, None)
        ax.plot(fpr, tpr, lw=lw, color=color, label=f"{name} (AUROC {auc:.3f}, n={len(rows)})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_pr_curves(
    studies: pd.DataFrame, ax: Axes | None = None, title: str = "Precision-recall"
) -> Figure:
    """Precision-recall curve of all studies and of each body part, AP in the legend."""
    fig, ax = _axes(ax)
    for name, rows in _groups(studies):
        if not (rows["label"] == 1).any():
            ax.plot([], [], " ", label=f"{name}: no abnormal study, no curve")
            continue
        precision, recall, _ = precision_recall_curve(rows["label"], rows["prob"])
        ap = average_precision_score(rows["label"], rows["prob"])
        lw, color = (2.5, "black") if name == "all" else (1.2, None)
        ax.step(recall, precision, where="post", lw=lw, color=color, label=f"{name} (AP {ap:.3f})")
    prevalence = float(studies["label"].mean())
    ax.axhline(prevalence, ls=":", color="grey", lw=1, label=f"prevalence {prevalence:.2f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower left")
    return fig


def plot_confusion_matrix(
    confusion: Mapping[str, int],
    ax: Axes | None = None,
    title: str = "Confusion matrix",
    normalize: bool = False,
) -> Figure:
    """Heatmap of a confusion dict {tn, fp, fn, tp} (e.g. ``report["study"]["overall"]``).

    Rows are the truth, columns the prediction. ``normalize`` shows each row as shares (the
    diagonal then reads specificity and sensitivity); cells always show the counts too.
    """
    import seaborn as sns

    counts = np.array([[confusion["tn"], confusion["fp"]], [confusion["fn"], confusion["tp"]]])
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / counts.sum(axis=1, keepdims=True)
    values = np.nan_to_num(shares) if normalize else counts
    if normalize:
        annot = [[f"{shares[i, j]:.2f}\n({counts[i, j]})" for j in range(2)] for i in range(2)]
    else:
        annot = [[str(c) for c in row] for row in counts]
    fig, ax = _axes(ax, figsize=(4.5, 4.0))
    sns.heatmap(
        values,
        annot=np.array(annot),
        fmt="",
        cmap="Blues",
        cbar=False,
        square=True,
        vmin=0,
        xticklabels=["normal", "abnormal"],
        yticklabels=["normal", "abnormal"],
        ax=ax,
    )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def plot_calibration(
    table: pd.DataFrame, ax: Axes | None = None, title: str = "Calibration"
) -> Figure:
    """Observed abnormal rate against mean predicted probability, per bin of a calibration
    table (``calibration_table``); marker area grows with the number of studies in the bin."""
    fig, ax = _axes(ax, figsize=(5.0, 5.0))
    used = table[table["n"] > 0]
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    ax.plot(used["mean_prob"], used["observed_rate"], color="C0", lw=1.2)
    sizes = 20 + 200 * used["n"] / max(int(used["n"].max()), 1) if len(used) else []
    ax.scatter(used["mean_prob"], used["observed_rate"], s=sizes, color="C0", zorder=3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability")
    ax.set(ylabel="observed abnormal rate", title=title)
    ax.set_aspect("equal")
    ax.legend(fontsize="small", loc="upper left")
    return fig


def plot_per_part(
    table: pd.DataFrame,
    metric: str = "kappa",
    reference_label: str | None = "reference",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Horizontal bars of a per-part table (``per_part_table``) with their intervals, and the
    reference figures as markers where the table has them."""
    fig, ax = _axes(ax, figsize=(6.0, 4.0))
    y = np.arange(len(table))
    values = table[metric].to_numpy(dtype=float)
    err = np.vstack([values - table["ci_lo"], table["ci_hi"] - values])
    ax.barh(y, np.nan_to_num(values), color="C0", alpha=0.7, label="ours")
    ax.errorbar(values, y, xerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3)
    if reference_label and reference_label in table and table[reference_label].notna().any():
        ax.scatter(
            table[reference_label], y, marker="D", color="C3", zorder=3, label=reference_label
        )
    ax.set_yticks(y, table["body_part"])
    ax.invert_yaxis()
    ax.set(xlabel=metric, title=title or f"{metric} per body part")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_paired_differences(
    comparisons: Mapping[str, Mapping],
    title: str = "difference from the single checkpoint",
    reference: str = "single",
) -> Figure:
    """Each variant's paired difference from the ``reference`` (study kappa, AUROC), overall,
    with its 95% paired-bootstrap interval; an interval that crosses 0 is no evidence."""
    names = list(comparisons)
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(names) + 1.8), squeeze=False)
    for ax, metric in zip(axes[0], ("kappa", "auroc"), strict=True):
        for row, name in enumerate(names):
            block = comparisons[name]["study"]["overall"][metric]
            if block["diff"] is None:
                continue
            lo, hi = block["ci"] if block["ci"] is not None else (block["diff"], block["diff"])
            crosses = lo <= 0 <= hi
            ax.errorbar(
                block["diff"],
                row,
                xerr=[[block["diff"] - lo], [hi - block["diff"]]],
                fmt="o",
                color="grey" if crosses else "C2" if block["diff"] > 0 else "C3",
                capsize=4,
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set(xlabel=f"study {metric}: variant - {reference}", title=metric)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig
