"""Counts per split and part, the paper's Table 1, and `python -m mura_lib describe`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_PNG, frame_of, table1_studies

from mura_lib import cli
from mura_lib.config import BODY_PARTS, PROJ_ROOT
from mura_lib.data.describe import (
    PAPER_TABLE1,
    count_table,
    describe_index,
    describe_mura,
    matches_table1,
    parts_note,
    table1_counts,
)
from mura_lib.data.mura import MuraIndex

ELBOW_TRAIN = "train/XR_ELBOW/patient00001/study1_negative"


@pytest.fixture(scope="module")
def table1_frame() -> pd.DataFrame:
    return frame_of(table1_studies())


def test_paper_table1_is_consistent() -> None:
    parts = PAPER_TABLE1.loc[list(BODY_PARTS)]
    pd.testing.assert_series_equal(parts.sum(), PAPER_TABLE1.loc["total"], check_names=False)
    total = PAPER_TABLE1.loc["total"]
    assert total["train_normal"] + total["train_abnormal"] == 13457
    assert total["valid_normal"] + total["valid_abnormal"] == 1199
    assert total["train_images"] + total["valid_images"] == 40005


def test_count_table(mura_tree: Path) -> None:
    from mura_lib.data import read_mura

    counts = count_table(read_mura(mura_tree))
    # default_studies(): ELBOW train = patient 1 study1 (1 view) and study2 (2 views),
    # patients 2, 3, 4 with 2, 3 and 1 views; labels 0, 1, 0, 1 and 1 for study2.
    assert counts.loc[("train", "ELBOW")].to_dict() == {
        "n_normal": 2, "n_abnormal": 3, "n_studies": 5, "n_images": 9, "n_patients": 4,
        "abnormal_rate": 0.6, "views_mean": 1.8, "views_max": 3,
    }  # fmt: skip
    assert counts.loc[("valid", "total"), "n_images"] == 69
    assert counts.loc[("train", "total"), "n_patients"] == 9


def test_table1_counts_and_comparison(table1_frame: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(table1_counts(table1_frame), PAPER_TABLE1)
    assert matches_table1(table1_frame)
    assert PAPER_TABLE1.loc["WRIST", "train_images"] == 9752


def test_comparison_of_a_subset(table1_frame: pd.DataFrame) -> None:
    train_only = table1_frame[table1_frame["split"] == "train"]
    assert not matches_table1(train_only)
    diff = table1_counts(train_only) - PAPER_TABLE1
    assert diff.loc["total", "valid_images"] == -3197
    assert diff.loc["total", "train_images"] == 0
    text = describe_index(
        MuraIndex(
            Path("/x"), train_only, pd.DataFrame(columns=["path", "reason"]), {"train": "walk"}
        )
    )
    assert "Counts differ from the paper's Table 1 (36808 images here, 40005 there)" in text
    assert "train: 13457 studies (8280 normal, 5177 abnormal), 36808 images, 11184 patients" in text


def test_a_tree_with_other_parts_is_counted_and_said_not_to_be_mura(
    table1_frame: pd.DataFrame,
) -> None:
    # MURA's exact counts with HUMERUS renamed KNEE: every count but the part names agrees
    frame = table1_frame.assign(body_part=table1_frame["body_part"].replace("HUMERUS", "KNEE"))
    counts = count_table(frame)
    parts = [p for p in BODY_PARTS if p != "HUMERUS"]
    assert list(counts.loc["train"].index) == [*parts, "KNEE", "total"]
    assert counts.loc[("valid", "KNEE"), "n_images"] == PAPER_TABLE1.loc["HUMERUS", "valid_images"]
    table = table1_counts(frame)  # Table 1's rows: KNEE has none, HUMERUS is empty
    assert list(table.index) == list(PAPER_TABLE1.index)
    assert table.loc["HUMERUS"].sum() == 0 and table.loc["total", "train_images"] == 36808
    assert not matches_table1(frame)
    text = describe_index(
        MuraIndex(Path("/x"), frame, pd.DataFrame(columns=["path", "reason"]), {"train": "csv"})
    )
    assert re.search(r"\nKNEE\s+68\s+67\s+135\s+288\s", text)  # valid: last KNEE row
    note = (
        "This tree is not MURA-v1.1: its body parts differ from MURA's seven (extra: KNEE; "
        "missing: HUMERUS); the paper's Table 1 covers MURA's parts only."
    )
    assert note in text.splitlines() and "Counts differ" not in text


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (BODY_PARTS, None),
        ([*BODY_PARTS, "HIP", "FOOT"], "(extra: FOOT, HIP)"),
        (["WRIST", "HAND"], "(missing: ELBOW, FINGER, FOREARM, HUMERUS, SHOULDER)"),
        (["ANKLE", "ELBOW"], "(extra: ANKLE; missing: FINGER, FOREARM, HAND, HUMERUS,"),
    ],
)
def test_parts_note_names_the_extra_and_missing_parts(parts, expected) -> None:
    note = parts_note(parts)
    if expected is None:
        assert note is None
    else:
        assert note.startswith("This tree is not MURA-v1.1: its body parts differ from MURA's")
        assert expected in note and "\n" not in note


def test_describe_text(mura_tree: Path) -> None:
    (mura_tree / ELBOW_TRAIN / "._image1.png").write_bytes(b"\x00\x05\x16\x07")
    text = describe_mura(mura_tree.parent)
    assert text.startswith(f"MURA tree: {mura_tree}\ntrain: read from its CSV files\n")
    assert "train: 35 studies (14 normal, 21 abnormal), 69 images, 9 patients" in text
    assert re.search(r"\nELBOW\s+2\s+3\s+5\s+9\s+4\s+60\.0%\s+1\.80\s+3\n", text)
    assert re.search(r"\ntotal\s+14\s+21\s+35\s+69\s+9\s+60\.0%\s+1\.97\s+3\n", text)
    assert "Patients in both train and valid: none" in text
    assert "Skipped 1 entries that are not images of the data set:" in text
    assert f"{mura_tree / ELBOW_TRAIN / '._image1.png'}  (AppleDouble file" in text


def test_describe_warns_about_shared_patients(make_tree) -> None:
    from conftest import Study

    root = make_tree([Study("train", "HAND", 7, 1, 0), Study("valid", "HAND", 7, 1, 1)], csv=False)
    text = describe_mura(root)
    assert "WARNING: 1 patient ids appear in both train and valid (e.g. 7)" in text
    assert "train: read by walking its folders (no CSV files)" in text


def test_cli_describe(mura_tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["describe", str(mura_tree)]) == 0
    out = capsys.readouterr().out
    assert "valid: 35 studies (14 normal, 21 abnormal), 69 images, 9 patients" in out


@pytest.mark.parametrize("make_bad", ["missing", "not_mura", "bad_csv"])
def test_cli_describe_bad_tree(
    tmp_path: Path, mura_tree: Path, make_bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if make_bad == "missing":
        root, expected = tmp_path / "nope", "no such folder"
    elif make_bad == "not_mura":
        root, expected = tmp_path / "photos", "not a MURA tree"
        root.mkdir()
        (root / "a.png").write_bytes(TINY_PNG)
    else:
        root, expected = mura_tree, "train_image_paths.csv, line 1:"
        (mura_tree / "train_image_paths.csv").write_text("x.png\n")
    assert cli.main(["describe", str(root)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and expected in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_cli_subprocess_wrong_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mura_lib", "describe", str(tmp_path)],
        capture_output=True, text=True, cwd=PROJ_ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path}: not a MURA tree.")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
