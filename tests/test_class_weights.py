"""Class weights from study counts, against values computed by hand."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import Study, frame_of

from mura_lib.data.class_weights import (
    inverse_frequency_weights,
    paper_part_weights,
    study_counts,
)
from mura_lib.errors import ConfigError

# WRIST: 3 normal (1 + 2 + 3 views), 1 abnormal (4 views); ELBOW: 1 normal, 1 abnormal.
STUDIES = [
    Study("train", "WRIST", 1, 1, 0, 1),
    Study("train", "WRIST", 1, 2, 0, 2),
    Study("train", "WRIST", 2, 1, 0, 3),
    Study("train", "WRIST", 3, 1, 1, 4),
    Study("train", "ELBOW", 3, 1, 0, 2),
    Study("train", "ELBOW", 4, 1, 1, 1),
]


@pytest.fixture
def frame() -> pd.DataFrame:
    return frame_of(STUDIES)


def test_study_counts(frame: pd.DataFrame) -> None:
    counts = study_counts(frame)
    assert list(counts.index) == ["ELBOW", "WRIST"]  # the paper's order
    assert counts.loc["WRIST"].to_dict() == {"n_normal": 3, "n_abnormal": 1}
    assert counts.loc["ELBOW"].to_dict() == {"n_normal": 1, "n_abnormal": 1}


def test_paper_part_weights(frame: pd.DataFrame) -> None:
    w = paper_part_weights(frame)
    assert list(w.columns) == ["n_normal", "n_abnormal", "w_abnormal", "w_normal"]
    # WRIST: |N| / (|A| + |N|) = 3/4 for the abnormal term, |A| / (|A| + |N|) = 1/4 for normal.
    assert w.loc["WRIST", "w_abnormal"] == pytest.approx(0.75)
    assert w.loc["WRIST", "w_normal"] == pytest.approx(0.25)
    assert w.loc["ELBOW", ["w_abnormal", "w_normal"]].tolist() == pytest.approx([0.5, 0.5])


def test_other_parts_get_their_own_weights_after_muras(frame: pd.DataFrame) -> None:
    # KNEE (LERA's): 2 normal, 1 abnormal; listed after MURA's parts, whatever the row order
    knee = [Study("train", "KNEE", 9, 1, 0), Study("train", "KNEE", 10, 1, 0),
            Study("train", "KNEE", 11, 1, 1)]  # fmt: skip
    w = paper_part_weights(pd.concat([frame_of(knee), frame], ignore_index=True))
    assert list(w.index) == ["ELBOW", "WRIST", "KNEE"]
    assert w.loc["KNEE", ["w_abnormal", "w_normal"]].tolist() == pytest.approx([2 / 3, 1 / 3])


def test_paper_weights_on_table1_counts() -> None:
    # Paper's Table 1, SHOULDER train: 1364 normal, 1457 abnormal studies.
    studies = [Study("train", "SHOULDER", i, 1, int(i > 1364)) for i in range(1, 2822)]
    w = paper_part_weights(frame_of(studies)).loc["SHOULDER"]
    assert w["w_abnormal"] == pytest.approx(1364 / 2821)
    assert w["w_normal"] == pytest.approx(1457 / 2821)


def test_inverse_frequency_weights(frame: pd.DataFrame) -> None:
    # 6 studies: 4 normal, 2 abnormal; 13 images: 8 normal, 5 abnormal.
    assert inverse_frequency_weights(frame) == pytest.approx({0: 6 / 4, 1: 6 / 2})
    assert inverse_frequency_weights(frame, unit="image") == pytest.approx({0: 13 / 8, 1: 13 / 5})


def test_part_without_one_class(frame: pd.DataFrame) -> None:
    extra = frame_of([Study("train", "HAND", 9, 1, 0, 2)])
    both = pd.concat([frame, extra], ignore_index=True)
    with pytest.raises(ConfigError, match=r"HAND \(1 normal, 0 abnormal\) in the training rows"):
        paper_part_weights(both)
    w = paper_part_weights(both, missing_class="equal")
    assert w.loc["HAND", ["w_abnormal", "w_normal"]].tolist() == [0.5, 0.5]
    assert w.loc["WRIST", "w_abnormal"] == pytest.approx(0.75)


def test_class_missing_everywhere() -> None:
    frame = frame_of([Study("train", "HAND", 1, 1, 0, 2)])
    with pytest.raises(
        ConfigError, match=r"1 normal and 0 abnormal studies; both classes are needed"
    ):
        inverse_frequency_weights(frame)


def test_no_rows() -> None:
    with pytest.raises(ConfigError, match=r"no training rows"):
        paper_part_weights(frame_of([Study("train", "HAND", 1, 1, 0)]).iloc[:0])
