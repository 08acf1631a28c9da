"""split_by_patient: no patient on both sides, part rates kept, deterministic, test untouched;
K patient-grouped folds that hold out every training study once."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest
from conftest import Study, default_studies, frame_of, table1_studies

from mura_lib.config import BODY_PARTS
from mura_lib.data import split_by_patient
from mura_lib.data.splits import subset_summary
from mura_lib.errors import ConfigError


@pytest.fixture(scope="module")
def table1_frame() -> pd.DataFrame:
    """An index frame with the paper's Table-1 counts and patient structure (no files)."""
    return frame_of(table1_studies())


def study_level(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates("study_id")


def test_subsets_and_no_patient_leakage(table1_frame: pd.DataFrame) -> None:
    out = split_by_patient(table1_frame)
    assert list(out.columns) == [*table1_frame.columns, "subset"]
    assert set(out["subset"]) == {"train", "val", "test"}
    assert (out.loc[out["split"] == "valid", "subset"] == "test").all()
    assert out.loc[out["split"] == "train", "subset"].isin(["train", "val"]).all()
    sides = out[out["split"] == "train"].groupby("patient_id")["subset"].nunique()
    assert (sides == 1).all()
    # the frame passed in is not modified
    assert "subset" not in table1_frame.columns


def test_fractions_and_part_rates_are_kept(table1_frame: pd.DataFrame) -> None:
    out = split_by_patient(table1_frame, val_fraction=0.2, seed=0)
    studies = study_level(out[out["split"] == "train"])
    val_share = (studies["subset"] == "val").groupby(studies["body_part"]).mean()
    assert val_share.between(0.195, 0.205).all(), val_share
    rates = studies.pivot_table(index="body_part", columns="subset", values="label")
    assert (rates["train"] - rates["val"]).abs().max() < 0.005, rates
    image_share = (out.loc[out["split"] == "train", "subset"] == "val").mean()
    assert image_share == pytest.approx(0.2, abs=0.01)


def test_deterministic_from_the_seed(table1_frame: pd.DataFrame) -> None:
    a = split_by_patient(table1_frame, seed=3)["subset"]
    b = split_by_patient(table1_frame, seed=3)["subset"]
    c = split_by_patient(table1_frame, seed=4)["subset"]
    pd.testing.assert_series_equal(a, b)
    assert not a.equals(c)


def test_official_valid_never_chosen(table1_frame: pd.DataFrame) -> None:
    valid = table1_frame[table1_frame["split"] == "valid"]
    out = split_by_patient(table1_frame)
    pd.testing.assert_frame_equal(out.loc[valid.index, valid.columns], valid)
    assert (out.loc[valid.index, "subset"] == "test").all()


def test_patients_with_several_parts_stay_whole() -> None:
    studies = [
        Study("train", part, patient, 1, (patient + i) % 2, 2)
        for patient in range(1, 201)
        for i, part in enumerate(("ELBOW", "WRIST", "HAND")[: 1 + patient % 3])
    ]
    out = split_by_patient(frame_of(studies), val_fraction=0.3, seed=1)
    assert (out.groupby("patient_id")["subset"].nunique() == 1).all()
    share = (study_level(out)["subset"] == "val").mean()
    assert share == pytest.approx(0.3, abs=0.03)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_tree_cells_are_never_overfilled(seed: int) -> None:
    # Sample-sized: 7 parts x 45 studies, 260 patients, many with studies of several parts.
    rng = random.Random(seed)
    owners = list(range(1, 261)) + [rng.randint(1, 260) for _ in range(55)]
    rng.shuffle(owners)
    studies, next_study = [], {}
    for i, patient in enumerate(owners):
        part = BODY_PARTS[i % 7]
        k = next_study[(part, patient)] = next_study.get((part, patient), 0) + 1
        studies.append(Study("train", part, patient, k, int(rng.random() < 0.4), 1))
    out = split_by_patient(frame_of(studies), val_fraction=0.2, seed=seed)
    cells = out.groupby(["body_part", "label"])["subset"]
    target = 0.2 * cells.size()
    in_val = cells.apply(lambda s: int((s == "val").sum()))
    assert (in_val <= target + 0.5).all()
    assert in_val.sum() >= 0.9 * target.sum()


def test_existing_subset_column_is_replaced() -> None:
    frame = frame_of(default_studies()).assign(subset="old")
    out = split_by_patient(frame)
    assert list(out.columns).count("subset") == 1
    assert "old" not in set(out["subset"])


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.1, 1.5, math.nan, "0.2", None, True])
def test_bad_val_fraction(bad: object) -> None:
    with pytest.raises(
        ConfigError, match=r"val_fraction must be a number strictly between 0 and 1"
    ):
        split_by_patient(frame_of(default_studies()), val_fraction=bad)  # type: ignore[arg-type]


def test_no_train_rows() -> None:
    frame = frame_of([s for s in default_studies() if s.split == "valid"])
    with pytest.raises(ConfigError, match=r"no official-train rows to split"):
        split_by_patient(frame)


def test_too_few_patients() -> None:
    frame = frame_of([Study("train", "HAND", 1, 1, 0, 3), Study("train", "HAND", 2, 1, 1, 1)])
    with pytest.raises(ConfigError, match=r"2 training patients are too few .*val_fraction=0\.2"):
        split_by_patient(frame)


def test_subset_summary(table1_frame: pd.DataFrame) -> None:
    summary = subset_summary(split_by_patient(table1_frame))
    assert list(summary.index.get_level_values("subset").unique()) == ["train", "val", "test"]
    assert list(summary.columns) == ["patients", "studies", "images", "abnormal_rate"]
    assert summary["images"].sum() == 40005
    assert summary.loc[("test", "WRIST"), "studies"] == 237


def test_folds_partition_the_training_patients(table1_frame: pd.DataFrame) -> None:
    train_studies = set(table1_frame.loc[table1_frame["split"] == "train", "study_id"])
    held_out = []
    for fold in range(5):
        split = split_by_patient(table1_frame, seed=2, folds=5, fold=fold)
        val = split[split["subset"] == "val"]
        train = split[split["subset"] == "train"]
        assert not set(val["patient_id"]) & set(train["patient_id"])
        assert (split.loc[split["split"] == "valid", "subset"] == "test").all()
        held_out.append(set(val["study_id"]))
        # a fifth of every part's studies, each part's abnormal rate kept
        for part, studies in val.drop_duplicates("study_id").groupby("body_part"):
            all_part = table1_frame[
                (table1_frame.split == "train") & (table1_frame.body_part == part)
            ]
            assert len(studies) == pytest.approx(all_part["study_id"].nunique() / 5, rel=0.2)
            rate = all_part.drop_duplicates("study_id")["label"].mean()
            assert studies["label"].mean() == pytest.approx(rate, abs=0.08)
    assert set().union(*held_out) == train_studies
    assert sum(len(s) for s in held_out) == len(train_studies)  # each study held out once


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [(1, 0, "K >= 2 folds"), (-2, 0, "K >= 2 folds"), (3, 3, "use 0 to 2"), (0, 1, "use 0")],
)
def test_bad_folds_are_refused(table1_frame, folds, fold, message) -> None:
    with pytest.raises(ConfigError, match=message):
        split_by_patient(table1_frame, folds=folds, fold=fold)
