"""Tests of mura_lib.evaluation.studies: per-image probabilities to study scores."""

from __future__ import annotations

import pandas as pd
import pytest

from mura_lib.errors import MuraError
from mura_lib.evaluation.studies import study_scores


def _predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "study_id": ["valid/ELBOW/patient11185/study1"] * 3
            + ["valid/HAND/patient11186/study1"]
            + ["valid/HAND/patient11186/study2"] * 2,
            "body_part": ["ELBOW"] * 3 + ["HAND"] * 3,
            "patient_id": [11185] * 3 + [11186] * 3,
            "view": [1, 2, 3, 1, 1, 2],
            "label": [1, 1, 1, 0, 0, 0],
            "prob": [0.25, 0.5, 0.75, 0.125, 0.875, 0.375],
            "path": [f"/x/image{i}.png" for i in range(6)],
        }
    )


def test_study_scores_are_the_mean_of_the_views() -> None:
    studies = study_scores(_predictions())
    assert list(studies.columns) == [
        "study_id", "body_part", "patient_id", "label", "prob", "n_views",
    ]  # fmt: skip
    assert studies["study_id"].tolist() == [
        "valid/ELBOW/patient11185/study1",
        "valid/HAND/patient11186/study1",
        "valid/HAND/patient11186/study2",
    ]
    assert studies["prob"].tolist() == [0.5, 0.125, 0.625]
    assert studies["n_views"].tolist() == [3, 1, 2]
    assert studies["label"].tolist() == [1, 0, 0]
    assert studies["patient_id"].tolist() == [11185, 11186, 11186]


def test_study_scores_do_not_depend_on_row_order() -> None:
    frame = _predictions()
    shuffled = frame.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(study_scores(shuffled), study_scores(frame))


def test_minimal_columns_are_enough() -> None:
    frame = _predictions()[["study_id", "body_part", "label", "prob"]]
    studies = study_scores(frame)
    assert list(studies.columns) == ["study_id", "body_part", "label", "prob", "n_views"]


def test_views_disagreeing_on_label_name_the_study() -> None:
    frame = _predictions()
    frame.loc[1, "label"] = 0
    with pytest.raises(MuraError, match=r"study valid/ELBOW/patient11185/study1 disagree on label"):
        study_scores(frame, source="results/x/predictions.csv")
    with pytest.raises(MuraError, match=r"^results/x/predictions\.csv: "):
        study_scores(frame, source="results/x/predictions.csv")


def test_views_disagreeing_on_body_part_are_refused() -> None:
    frame = _predictions()
    frame.loc[0, "body_part"] = "WRIST"
    with pytest.raises(MuraError, match="disagree on body_part"):
        study_scores(frame)
