"""Tests of mura_lib.reports.evaluation_figures: every figure function returns a Figure that
can be saved (with reports.figures.save_figure)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from mura_lib.evaluation import calibration_table, per_part_table
from mura_lib.reports import evaluation_figures as plots
from mura_lib.reports.figures import save_figure

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def studies() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = ["ELBOW", "FINGER", "HUMERUS"]
    frame = pd.DataFrame({"body_part": [parts[i % 3] for i in range(90)]})
    frame["label"] = np.where(frame["body_part"] == "HUMERUS", 0, rng.integers(0, 2, 90))
    frame["prob"] = np.clip(rng.normal(0.35 + 0.3 * frame["label"], 0.2), 0, 1)
    return frame


def _report_like() -> dict:
    def block(kappa):
        return {"n": 10, "n_positive": 5, "kappa": kappa, "ci": {"kappa": [kappa - 0.1, kappa]}}

    parts = {"ELBOW": block(0.6), "WRIST": block(0.7)}
    return {"study": {"overall": block(0.65), "by_body_part": parts}}


def test_curves_skip_single_class_parts(studies: pd.DataFrame) -> None:
    fig = plots.plot_roc_curves(studies)
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(label.startswith("all (AUROC") for label in labels)
    assert "HUMERUS: one class, no curve" in labels
    assert isinstance(plots.plot_pr_curves(studies), Figure)


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix(normalize: bool) -> None:
    fig = plots.plot_confusion_matrix({"tn": 5, "fp": 1, "fn": 0, "tp": 0}, normalize=normalize)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert ("5" in texts) if not normalize else ("0.83\n(5)" in texts)


def test_calibration_and_per_part(studies: pd.DataFrame) -> None:
    assert isinstance(plots.plot_calibration(calibration_table(studies)), Figure)
    table = per_part_table(_report_like(), {"WRIST": 0.931})
    assert isinstance(plots.plot_per_part(table), Figure)


def test_functions_draw_on_a_given_axes(studies: pd.DataFrame) -> None:
    fig, axes = plt.subplots(1, 2)
    assert plots.plot_roc_curves(studies, ax=axes[0]) is fig
    assert plots.plot_pr_curves(studies, ax=axes[1]) is fig


def test_save_figure_creates_the_folder(tmp_path: Path, studies: pd.DataFrame) -> None:
    path = save_figure(plots.plot_roc_curves(studies), tmp_path / "figures" / "a" / "roc.png")
    assert path.is_file() and path.stat().st_size > 1000
