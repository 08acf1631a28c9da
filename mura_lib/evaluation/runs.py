"""The spread of repeated runs: each run's test metrics, their mean, standard deviation and range.

Every run is evaluated on the same test studies, each at its own threshold (chosen on its own
validation studies), into a folder of its own (`mura evaluate`'s metrics.json). The spread is
over runs: the sample standard deviation (n - 1) says how far one run's figure may be from
another's, which a bootstrap interval of one run cannot say (it holds the model fixed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

# (column, level, metric) of each figure summarised over runs
RUN_METRICS = (
    ("study_auroc", "study", "auroc"),
    ("study_kappa", "study", "kappa"),
    ("study_average_precision", "study", "average_precision"),
    ("study_f1", "study", "f1"),
    ("study_sensitivity", "study", "sensitivity"),
    ("study_specificity", "study", "specificity"),
    ("study_brier", "study", "brier"),
    ("study_ece", "study", "ece"),
    ("image_auroc", "image", "auroc"),
)
SPREAD = ("mean", "sd", "min", "max")


def run_figures(metrics: dict) -> dict:
    """The figures of :data:`RUN_METRICS` from one evaluation's metrics.json (overall)."""
    return {column: metrics[level]["overall"][name] for column, level, name in RUN_METRICS}


def runs_block(folders: dict[str, Path], relative_to: Path, ensemble: Path | None = None) -> dict:
    """metrics.json's ``runs`` block for the evaluations in ``folders`` ({run: folder}, the
    reference first), folders named relative to ``relative_to``; ``ensemble`` is the
    evaluation folder of the ensemble of all runs, when there is one."""
    per_run = {
        name: {
            "folder": Path(os.path.relpath(folder, relative_to)).as_posix(),
            **run_figures(json.loads((folder / "metrics.json").read_text())),
        }
        for name, folder in folders.items()
    }
    summary = {}
    for column, _, _ in RUN_METRICS:
        values = np.array([run[column] for run in per_run.values()], dtype=float)
        summary[column] = _spread(values)
    block = {
        "n_runs": len(per_run),
        "reference": next(iter(per_run)),
        "spread": "over runs, each evaluated on the same test studies at its own threshold: "
        "mean, sample standard deviation (n - 1) and range; metrics undefined for a run are "
        "left out",
        "per_run": per_run,
        "summary": summary,
    }
    if ensemble is not None:
        block["ensemble"] = {
            "folder": Path(os.path.relpath(ensemble, relative_to)).as_posix(),
            **run_figures(json.loads((ensemble / "metrics.json").read_text())),
        }
    return block


def _spread(values: np.ndarray) -> dict:
    values = values[~np.isnan(values)]
    if not len(values):
        return dict.fromkeys(SPREAD)
    return {
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def runs_table(block: dict) -> pd.DataFrame:
    """One row per figure; one column per run, then the ensemble of all runs and the mean,
    sd, min and max over the runs."""
    figures = [column for column, _, _ in RUN_METRICS]
    columns = {name: {f: run[f] for f in figures} for name, run in block["per_run"].items()}
    if "ensemble" in block:
        columns["ensemble of all runs"] = {f: block["ensemble"][f] for f in figures}
    for stat in SPREAD:
        columns[stat] = {f: block["summary"][f][stat] for f in figures}
    return pd.DataFrame(columns, dtype=float)
