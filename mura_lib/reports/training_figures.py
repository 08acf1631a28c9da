"""Figures of a training run: learning curves and the validation score distribution."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def plot_learning_curves(history: pd.DataFrame) -> Figure:
    """Loss, study kappa/AUROC and learning rate per epoch; the chosen epoch is marked."""
    fig, (ax_loss, ax_metric, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    epochs = history["epoch"]
    ax_loss.plot(epochs, history["train_loss"], "o-", label="train (augmented)")
    ax_loss.plot(epochs, history["val_loss"], "o-", label="val")
    ax_loss.set(title="weighted BCE loss", xlabel="epoch")
    for column, label in (("study_kappa", "study kappa @0.5"), ("study_auroc", "study AUROC")):
        ax_metric.plot(epochs, history[column].astype(float), "o-", label=label)
    ax_metric.set(
        title="validation metrics", xlabel="epoch", ylim=(min(0, ax_metric.get_ylim()[0]), 1)
    )
    ax_lr.step(epochs, history["lr"], where="post")
    ax_lr.set(title="learning rate", xlabel="epoch", yscale="log")
    best = history.loc[history["best"].astype(bool), "epoch"]
    if len(best):
        for ax in (ax_loss, ax_metric, ax_lr):
            ax.axvline(best.iloc[-1], color="grey", linestyle=":", label="chosen epoch")
    ax_loss.legend(fontsize="small")
    ax_metric.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_score_distribution(studies: pd.DataFrame, threshold: float, title: str = "") -> Figure:
    """Histogram of study probabilities by label, with the decision threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(0, 1, 21)
    for label, name, color in ((0, "normal", "C0"), (1, "abnormal", "C3")):
        ax.hist(
            studies.loc[studies["label"] == label, "prob"],
            bins=bins,
            alpha=0.6,
            label=name,
            color=color,
        )
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set(
        xlabel="study probability of abnormal",
        ylabel="studies",
        title=title or "validation studies",
    )
    ax.legend(fontsize="small")
    return fig
