"""Repeated runs: one training run per seed and fold, and the ensemble of all of them.

A single run's numbers move with its seed alone (initialisation, batch order, augmentation and
the validation split), so a claim about a change needs several runs and their spread. A
profile names ``seeds`` (a list) and ``folds`` (K patient-grouped folds of official train, each
held out by one run; 0: one validation split of ``val_fraction``); every (seed, fold) pair is
a run, trained in turn. Several runs live in ``models/<profile>/runs/<name>/``; a single run
keeps ``models/<profile>/`` itself, as a profile without ``seeds`` always had.

The first run is the reference of notebook 03. ``runs_ensemble.json`` names every run's chosen
checkpoint (a deep ensemble), its threshold chosen on the runs' own validation predictions,
each study scored by the runs that held it out (out of fold for a cross-validation), so no
image is read again and none is scored by a run that trained on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from mura_lib.data.splits import check_folds
from mura_lib.errors import ConfigError
from mura_lib.training.config import TrainConfig
from mura_lib.training.launch import fit_on

RUNS_DIR = "runs"
RUNS_ENSEMBLE = "runs_ensemble.json"


@dataclass(frozen=True)
class Run:
    """One training run of a profile: its folder name, seed and held-out fold."""

    name: str
    seed: int
    fold: int


def planned_runs(seeds: Sequence[int], folds: int = 0) -> list[Run]:
    """The runs of ``seeds`` x ``folds``: ``seed3`` without folds, ``fold1-seed3`` with them."""
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds={seeds!r}: give a list of integers, e.g. [0, 1, 2]")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"seeds={seeds!r}: a seed given twice would train the same run twice")
    check_folds(folds, 0)
    if not folds:
        return [Run(f"seed{seed}", seed, 0) for seed in seeds]
    return [Run(f"fold{k}-seed{seed}", seed, k) for seed in seeds for k in range(folds)]


def run_config(config: TrainConfig, run: Run) -> TrainConfig:
    """``config`` with the run's seed and held-out fold."""
    return replace(config, seed=run.seed, fold=run.fold)


def run_folders(models: str | Path, runs: Sequence[Run]) -> dict[str, Path]:
    """{run name: its models folder}: ``models`` itself for a single run."""
    models = Path(models)
    if len(runs) == 1:
        return {runs[0].name: models}
    return {run.name: models / RUNS_DIR / run.name for run in runs}


def fit_runs(
    gpus: int,
    data_root: str | Path,
    models: str | Path,
    config: TrainConfig,
    runs: Sequence[Run],
    *,
    resume: bool = False,
) -> dict[str, dict]:
    """Train every run in turn (each under torchrun with ``gpus`` > 1); {name: summary}.

    With ``resume`` a single run continues as `mura train --resume` does; of several runs,
    each continues from its last.pt, and one that never started starts now. Several runs
    end with ``runs_ensemble.json`` in ``models``.
    """
    if sorted({run.fold for run in runs}) != list(range(max(config.folds, 1))):
        raise ConfigError(
            f"the runs hold out folds {sorted({run.fold for run in runs})}, the config has "
            f"folds={config.folds}: plan them with planned_runs(seeds, config.folds)"
        )
    folders = run_folders(models, runs)
    summaries = {}
    for i, run in enumerate(runs):
        folder = folders[run.name]
        resumable = resume and (len(runs) == 1 or (folder / "last.pt").exists())
        if len(runs) > 1:
            print(f"run {i + 1} of {len(runs)}: {run.name}", flush=True)
        summaries[run.name] = fit_on(
            gpus,
            data_root,
            folder,
            run_config(config, run),
            resume=resumable,
            overwrite=not resumable,
        )
    if len(runs) > 1:
        write_runs_ensemble(models, runs)
    return summaries


def write_runs_ensemble(models: str | Path, runs: Sequence[Run]) -> Path:
    """``models/runs_ensemble.json``: every run's best.pt, thresholded on held-out studies."""
    from mura_lib.inference.members import build_ensemble

    out = Path(models) / RUNS_ENSEMBLE
    build_ensemble(
        [folder / "best.pt" for folder in run_folders(models, runs).values()],
        out,
        chosen_by={"how": "the chosen checkpoint of every run", "runs": [r.name for r in runs]},
    )
    return out


def runs_training_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per run: its chosen epoch, threshold and validation metrics."""
    rows = {
        name: {
            "best_epoch": s["best_epoch"],
            "epochs_run": s["epochs_run"],
            "threshold": s["threshold"],
            **{f"val_{k.removeprefix('val_')}": v for k, v in s["metrics"].items()},
        }
        for name, s in summaries.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")
