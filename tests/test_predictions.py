"""Tests of mura_lib.evaluation.predictions: checks, canonical probabilities, CSV round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura_lib.errors import MuraError
from mura_lib.evaluation.predictions import (
    canonical_prob,
    check_predictions,
    read_predictions,
    write_predictions,
)


def _frame(n: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "study_id": [f"valid/WRIST/patient{11185 + i // 2:05d}/study1" for i in range(n)],
            "body_part": "WRIST",
            "view": [1 + i % 2 for i in range(n)],
            "label": [(i // 2) % 2 for i in range(n)],
            "prob": rng.random(n),  # full float64 precision, 17 significant digits
        }
    )


def test_check_returns_canonical_copy() -> None:
    frame = _frame()
    frame["label"] = frame["label"].astype(float)
    checked = check_predictions(frame)
    assert checked["label"].dtype == np.int64
    assert (checked["prob"].to_numpy() == canonical_prob(frame["prob"])).all()
    assert (checked["prob"].astype(np.float32).astype(np.float64) == checked["prob"]).all()
    assert frame["label"].dtype == float  # the input is left alone


@pytest.mark.parametrize("writer", ["write_predictions", "to_csv", "to_csv %.9g"])
def test_csv_round_trip_is_exact(tmp_path: Path, writer: str) -> None:
    frame = _frame()
    path = tmp_path / "predictions.csv"
    if writer == "write_predictions":
        write_predictions(frame, path)
    elif writer == "to_csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_csv(path, index=False, float_format="%.9g")
    for back in (read_predictions(path), check_predictions(pd.read_csv(path))):
        pd.testing.assert_frame_equal(back, check_predictions(frame), check_exact=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns=["prob"]), r"missing column\(s\) prob"),
        (lambda f: f.iloc[:0], "no rows to evaluate"),
        (lambda f: f.assign(label=2), r"label must be 0 \(normal\) or 1 \(abnormal\); row 0"),
        (lambda f: f.assign(prob=np.r_[1.5, f["prob"][1:]]), r"logits instead"),
        (lambda f: f.assign(prob=np.r_[np.nan, f["prob"][1:]]), r"prob must be .* row 0"),
    ],
)
def test_bad_predictions_are_refused_with_file_name(tmp_path: Path, change, message) -> None:
    path = tmp_path / "predictions.csv"
    change(_frame()).to_csv(path, index=False)
    with pytest.raises(MuraError, match=message) as info:
        read_predictions(path)
    assert str(info.value).startswith(str(path))


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MuraError, match="no such predictions file. Run the prediction step"):
        read_predictions(tmp_path / "nope.csv")
