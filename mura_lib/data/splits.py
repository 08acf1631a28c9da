"""Split official-train rows into train and validation by patient; official-valid is the test set.

MURA's test set was never released, so the official valid split plays the test set and model
selection (early stopping, checkpoint choice, thresholds) needs its own validation subset
carved from official train. The original project selected on the set it reported, which made
its numbers optimistic; this split keeps the two apart.

Grouping is by patient id across body parts: the same patient can have a wrist and an elbow
study, and views of one patient look alike, so a patient's rows all go to one side.

Assignment is greedy and deterministic. Each (body part, label) pair is a cell with a target of
`val_fraction` times its number of training studies. Patients are visited in an order drawn
from `seed`; a patient goes to validation when adding its studies brings the validation counts
closer (in squared distance) to the targets without overfilling any cell by more than half a
study, else to train. Validation thus gets close to `val_fraction` of the studies of every part
and label, so each part's abnormal rate is about the same in train and val, also for patients
with studies of several parts. On a toy tree where every patient would overfill some cell, the
overfill rule is dropped rather than leave validation empty.

With ``folds`` = K the patients are dealt into K folds instead, by the same rule: fold k takes
a 1 / (K - k) share of the patients left, so each fold is close to a K-th of every (body part,
label) cell. Fold ``fold`` is the validation subset: K runs, one per fold, hold out every
training study exactly once (cross-validation).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mura_lib.errors import ConfigError

SUBSETS = ("train", "val", "test")


def split_by_patient(
    frame: pd.DataFrame,
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    folds: int = 0,
    fold: int = 0,
) -> pd.DataFrame:
    """Add a `subset` column: "train" / "val" (official train, by patient) or "test".

    Args:
        frame: an image index frame (see :func:`mura_lib.data.mura.read_mura`); it needs the
            columns split, patient_id, study_id, body_part and label.
        val_fraction: share of the official-train studies to put in "val", 0 < f < 1. It is
            met per body part and label, so the share of patients and images is close to it.
        seed: the seed of the patient order; the same frame and seed give the same split.
        folds: K >= 2 deals the patients into K folds and holds out fold ``fold`` (then
            `val_fraction` is not used); 0 carves one validation subset of `val_fraction`.
        fold: the held-out fold, 0 to K - 1.

    Returns:
        A copy of `frame` with `subset` as last column; official-valid rows are "test".

    Raises:
        ConfigError: `val_fraction` is not in (0, 1), `folds`/`fold` are out of range, there is
            no official-train row, or there are too few patients to leave both train and val
            non-empty.
    """
    check_folds(folds, fold)
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, numbers.Real)
        or not 0.0 < float(val_fraction) < 1.0
    ):
        raise ConfigError(
            f"val_fraction must be a number strictly between 0 and 1 (e.g. 0.2), "
            f"got {val_fraction!r}."
        )
    out = frame.drop(columns="subset", errors="ignore").copy()
    is_train = (out["split"] == "train").to_numpy()
    if not is_train.any():
        raise ConfigError(
            "split_by_patient: the frame has no official-train rows to split into train and "
            "val. Read a tree that holds MURA-v1.1/train/."
        )
    train = out.loc[is_train]
    if folds:
        val_patients = _fold_patients(train, folds, int(seed))[fold]
    else:
        val_patients = _greedy_val_patients(train, float(val_fraction), int(seed), strict=True)
    if not val_patients and not folds:
        val_patients = _greedy_val_patients(train, float(val_fraction), int(seed), strict=False)
    in_val = out["patient_id"].isin(val_patients).to_numpy() & is_train
    if not in_val.any() or in_val.sum() == is_train.sum():
        n_patients = out.loc[is_train, "patient_id"].nunique()
        raise ConfigError(
            f"split_by_patient: {n_patients} training patients are too few to give both train "
            f"and val rows with "
            + (f"{folds} folds" if folds else f"val_fraction={val_fraction}")
            + ". Use more data or another fraction."
        )
    out["subset"] = np.where(is_train, np.where(in_val, "val", "train"), "test")
    return out


def split_of_run(frame: pd.DataFrame, train_args: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`split_by_patient` as the run with these training arguments (a TrainConfig's
    fields, or a checkpoint's ``train_args``) split the frame; runs that predate folds had
    none."""
    return split_by_patient(
        frame,
        train_args["val_fraction"],
        train_args["seed"],
        folds=int(train_args.get("folds", 0)),
        fold=int(train_args.get("fold", 0)),
    )


def check_folds(folds: int, fold: int) -> None:
    """``folds`` is 0 or at least 2, and ``fold`` one of them (0 without folds)."""
    if folds == 1 or folds < 0:
        raise ConfigError(f"folds={folds}: use 0 (one validation split) or K >= 2 folds")
    if not 0 <= fold < max(folds, 1):
        raise ConfigError(
            f"fold={fold}: with folds={folds} use 0" + (f" to {folds - 1}" if folds else "")
        )


def _fold_patients(train: pd.DataFrame, folds: int, seed: int) -> list[set[int]]:
    """The patient ids of each of ``folds`` folds: fold k is carved from the patients not yet
    dealt by the validation rule, at a fraction 1 / (folds - k), so that every fold gets close
    to a K-th of every (body part, label) cell; the last fold is the rest."""
    folds_out = []
    remaining = train
    for k in range(folds - 1):
        fraction = 1.0 / (folds - k)
        chosen = _greedy_val_patients(remaining, fraction, seed, strict=True)
        chosen = chosen or _greedy_val_patients(remaining, fraction, seed, strict=False)
        folds_out.append(chosen)
        remaining = remaining[~remaining["patient_id"].isin(chosen)]
    folds_out.append(set(remaining["patient_id"].tolist()))
    return folds_out


def _greedy_val_patients(
    train: pd.DataFrame, val_fraction: float, seed: int, strict: bool
) -> set[int]:
    """Patient ids chosen for validation (see the module docstring; `strict`: overfill rule)."""
    studies = train.drop_duplicates("study_id")[["patient_id", "body_part", "label"]]
    cell = studies["body_part"].astype(str) + ":" + studies["label"].astype(str)
    cells = sorted(cell.unique())
    cell_index = cell.map({c: i for i, c in enumerate(cells)}).to_numpy()
    # Studies per patient and cell, as short lists of (cell, count): most patients have one.
    per_patient: dict[int, dict[int, int]] = {}
    for pid, ci in zip(studies["patient_id"].to_numpy(), cell_index, strict=True):
        per_patient.setdefault(int(pid), {}).setdefault(int(ci), 0)
        per_patient[int(pid)][int(ci)] += 1
    totals = np.bincount(cell_index, minlength=len(cells))
    deficit = [val_fraction * float(t) for t in totals]  # target minus current val count
    patients = np.array(sorted(per_patient))
    order = np.random.default_rng(seed).permutation(len(patients))
    chosen: set[int] = set()
    for pid in patients[order].tolist():
        counts = per_patient[pid]
        # Decrease of sum((deficit - added)^2) if this patient joins val. A patient that would
        # overfill a cell by more than half a study is refused even when it helps other cells:
        # on small trees, patients with several parts otherwise skew a part's abnormal rate.
        gain = sum(2.0 * deficit[c] * n - n * n for c, n in counts.items())
        overfills = strict and any(deficit[c] - n < -0.5 for c, n in counts.items())
        if gain > 0 and not overfills:
            chosen.add(pid)
            for c, n in counts.items():
                deficit[c] -= n
    return chosen


def subset_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per subset (train / val / test) and body part: patients, studies, images, abnormal rate.

    Args:
        frame: the output of :func:`split_by_patient`.
    """
    studies = frame.drop_duplicates("study_id")
    grouped = frame.groupby(["subset", "body_part"], sort=False)
    table = pd.DataFrame(
        {
            "patients": grouped["patient_id"].nunique(),
            "studies": grouped["study_id"].nunique(),
            "images": grouped.size(),
            "abnormal_rate": studies.groupby(["subset", "body_part"], sort=False)["label"].mean(),
        }
    )
    order = [s for s in ("train", "val", "test") if s in table.index.get_level_values(0)]
    return table.reindex(order, level=0).round({"abnormal_rate": 3})
