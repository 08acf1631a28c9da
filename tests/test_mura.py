"""read_mura and scan_mura on small trees: CSV and walk agree, quirks skipped, bad input named."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_PNG, Study, default_studies, frame_of, write_lines, write_tree

from mura_lib.config import BODY_PARTS, SAMPLE_ROOT
from mura_lib.data import read_mura, scan_mura
from mura_lib.data.mura import COLUMNS, SKIP_EMPTY_STUDY
from mura_lib.data.mura_layout import (
    SKIP_APPLEDOUBLE,
    SKIP_FOLDER_IN_STUDY,
    SKIP_HIDDEN,
    SKIP_MACOSX,
    SKIP_NOT_PNG,
    SKIP_STRAY_FILE,
    SKIP_UNLISTED,
    ordered_parts,
)
from mura_lib.errors import MuraFormatError

STUDY = "train/XR_ELBOW/patient00001/study1_negative"  # a study of default_studies()


def edit_csv(root: Path, name: str, edit) -> None:
    """Rewrite root/name with edit(list of lines) -> list of lines (LF)."""
    path = root / name
    write_lines(path, edit(path.read_text().splitlines()))


def raises(match: str):
    return pytest.raises(MuraFormatError, match=match)


# ---------------------------------------------------------------- the frame


def test_frame_matches_contract(mura_tree: Path, studies: list[Study]) -> None:
    frame = read_mura(mura_tree)
    assert tuple(frame.columns) == COLUMNS
    assert isinstance(frame.index, pd.RangeIndex)
    for col in ("patient_id", "study", "view", "label"):
        assert frame[col].dtype == "int64"
    pd.testing.assert_frame_equal(frame, frame_of(studies, mura_tree))
    row = frame.iloc[0]
    assert row.rel_path == "MURA-v1.1/train/XR_ELBOW/patient00001/study1_negative/image1.png"
    assert row.study_id == "train/ELBOW/patient00001/study1"
    assert Path(row.path).is_file() and Path(row.path).is_absolute()


@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_csv_variants_and_walk_give_the_same_frame(make_tree, header: bool, crlf: bool) -> None:
    root = make_tree(header=header, crlf=crlf)
    from_csv = scan_mura(root)
    from_walk = scan_mura(root, source="walk")
    assert from_csv.source == {"train": "csv", "valid": "csv"}
    assert from_walk.source == {"train": "walk", "valid": "walk"}
    pd.testing.assert_frame_equal(from_csv.frame, from_walk.frame)
    pd.testing.assert_frame_equal(from_csv.frame, frame_of(default_studies(), root))


@pytest.mark.parametrize("csv", [True, False])
def test_every_xr_folder_is_a_body_part(make_tree, csv: bool) -> None:
    # LERA's lower extremity beside a MURA part; digits and underscores are allowed too
    studies = [
        Study(split, part, patient, 1, label, views)
        for split, first in (("train", 1), ("valid", 11185))
        for i, part in enumerate(("KNEE", "WRIST", "FOOT", "LOWER_LEG2"))
        for patient, label, views in ((first + i, 0, 1), (first + 10 + i, 1, 2))
    ]
    root = make_tree(studies, csv=csv)
    frame = read_mura(root)
    pd.testing.assert_frame_equal(frame, frame_of(studies, root))
    assert ordered_parts(frame["body_part"]) == ["WRIST", "FOOT", "KNEE", "LOWER_LEG2"]


def test_ordered_parts_puts_muras_first_in_the_papers_order() -> None:
    assert ordered_parts(["KNEE", "WRIST", "ANKLE", "ELBOW", "WRIST"]) == [
        "ELBOW", "WRIST", "ANKLE", "KNEE"
    ]  # fmt: skip
    assert ordered_parts(reversed(BODY_PARTS)) == list(BODY_PARTS)
    assert ordered_parts([]) == []


def test_tree_without_csv_is_walked(make_tree) -> None:
    root = make_tree(csv=False)
    index = scan_mura(root)
    assert index.source == {"train": "walk", "valid": "walk"}
    pd.testing.assert_frame_equal(index.frame, frame_of(default_studies(), root))


def test_csv_with_bom_blank_lines_and_spaces(mura_tree: Path) -> None:
    expected = read_mura(mura_tree)
    path = mura_tree / "train_image_paths.csv"
    lines = path.read_text().splitlines()
    path.write_text("\ufeff" + "\n".join([lines[0] + "  ", "", *lines[1:], "", ""]))
    pd.testing.assert_frame_equal(read_mura(mura_tree), expected)


def test_root_may_be_the_parent_or_a_renamed_folder(tmp_path: Path) -> None:
    root = write_tree(tmp_path, default_studies(), dirname="mura")
    assert scan_mura(root).root == root
    assert read_mura(root)["rel_path"].str.startswith("MURA-v1.1/train/").any()
    parent = write_tree(tmp_path / "parent", default_studies()).parent
    index = scan_mura(parent)
    assert index.root == parent / "MURA-v1.1"
    pd.testing.assert_frame_equal(index.frame, frame_of(default_studies(), index.root))


@pytest.mark.parametrize("csv", [True, False])
@pytest.mark.parametrize("kept", ["train", "valid"])
def test_one_split_is_enough(make_tree, csv: bool, kept: str) -> None:
    root = make_tree([s for s in default_studies() if s.split == kept], csv=csv)
    index = scan_mura(root)
    assert list(index.source) == [kept]
    assert set(index.frame["split"]) == {kept}


# ---------------------------------------------------------------- skipped files


def add_quirks(root: Path) -> dict[Path, str]:
    """Put every kind of non-image into the tree; returns {path: reason} for all of them."""
    study = root / STUDY
    quirks = {
        study / "._image1.png": SKIP_APPLEDOUBLE,
        study / ".hidden.png": SKIP_HIDDEN,
        study / "notes.txt": SKIP_NOT_PNG,
        study / "thumbs": SKIP_FOLDER_IN_STUDY,
        root / "train" / ".DS_Store": SKIP_HIDDEN,
        root / "train" / "._XR_ELBOW": SKIP_APPLEDOUBLE,
        root / "train" / "__MACOSX": SKIP_MACOSX,
        root / "train" / "XR_ELBOW" / "Thumbs.db": SKIP_NOT_PNG,
        root / "train" / "XR_ELBOW" / "patient00001" / "image9.png": SKIP_STRAY_FILE,
    }
    for path, reason in quirks.items():
        if reason in (SKIP_FOLDER_IN_STUDY, SKIP_MACOSX):
            path.mkdir()
        else:
            path.write_bytes(TINY_PNG if path.suffix == ".png" else b"\x00\x05\x16\x07")
    return quirks


def test_non_images_are_skipped_and_reported(mura_tree: Path, studies: list[Study]) -> None:
    quirks = add_quirks(mura_tree)
    expected = frame_of(studies, mura_tree)
    walk = scan_mura(mura_tree, source="walk")
    pd.testing.assert_frame_equal(walk.frame, expected)
    assert dict(zip(walk.skipped["path"], walk.skipped["reason"], strict=True)) == {
        str(p): r for p, r in quirks.items()
    }
    # The CSV reader opens only the listed study folders, so it reports what is in them.
    csv = scan_mura(mura_tree)
    pd.testing.assert_frame_equal(csv.frame, expected)
    in_study = {str(p): r for p, r in quirks.items() if p.parent == mura_tree / STUDY}
    assert dict(zip(csv.skipped["path"], csv.skipped["reason"], strict=True)) == in_study
    assert list(csv.skipped.columns) == ["path", "reason"]
    assert csv.skipped["path"].is_monotonic_increasing


def test_unlisted_png_is_reported_not_indexed(mura_tree: Path) -> None:
    extra = mura_tree / STUDY / "image7.png"
    extra.write_bytes(TINY_PNG)
    index = scan_mura(mura_tree)
    assert str(extra) not in set(index.frame["path"])
    assert index.skipped.to_dict("records") == [{"path": str(extra), "reason": SKIP_UNLISTED}]
    assert str(extra) in set(scan_mura(mura_tree, source="walk").frame["path"])


def test_empty_study_folder_is_reported_by_the_walk(make_tree) -> None:
    root = make_tree(csv=False)
    empty = root / "train/XR_HAND/patient00042/study1_negative"
    empty.mkdir(parents=True)
    index = scan_mura(root)
    assert index.skipped.to_dict("records") == [{"path": str(empty), "reason": SKIP_EMPTY_STUDY}]


def test_clean_tree_skips_nothing(mura_tree: Path) -> None:
    assert scan_mura(mura_tree).skipped.empty


# ---------------------------------------------------------------- bad input


def test_missing_root(tmp_path: Path) -> None:
    with raises(r"nope: no such folder\. Pass the MURA-v1\.1 folder"):
        read_mura(tmp_path / "nope")


def test_root_is_a_split_folder(mura_tree: Path) -> None:
    with raises(r"train: is the train split of a MURA tree; pass the MURA-v1\.1 folder above"):
        read_mura(mura_tree / "train")


def test_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x")
    with raises(r"a\.csv: is a file, not a folder"):
        read_mura(tmp_path / "a.csv")


def test_folder_that_is_not_mura(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with raises(r"photos: not a MURA tree\. Expected a MURA-v1\.1 folder holding train/"):
        read_mura(tmp_path / "photos")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("hello.png", r"'hello\.png' does not start with MURA-v1\.1/"),
        ("MURA-v1.1/valid/XR_HAND/patient11185/study1_positive/image1.png",
         r"is not a train path"),
        ("MURA-v1.1/train/XR_foot/patient00001/study1_positive/image1.png",
         r"'XR_foot' in .* is not a body-part folder; expected XR_<PART>, PART in capitals"),
        ("MURA-v1.1/train/XR_HAND/patient00001/study1/image1.png", r"is not a MURA image path"),
        ("MURA-v1.1/train/XR_HAND/patient00001/study1_positive/img1.png",
         r"is not a MURA image path"),
        ("MURA-v1.1/train/../../etc/passwd", r"escapes the MURA root"),
        ("/data/MURA-v1.1/train/XR_HAND/patient00001/study1_positive/image1.png",
         r"escapes the MURA root"),
        ("C:\\MURA-v1.1\\train", r"escapes the MURA root"),
        ("MURA-v1.1/train/XR_HAND/patient00001/study1_positive/image1.png,1",
         r"expected one image path a line, found 2 fields"),
    ],
)  # fmt: skip
def test_bad_image_csv_line(mura_tree: Path, line: str, message: str) -> None:
    edit_csv(mura_tree, "train_image_paths.csv", lambda lines: [*lines[:2], line, *lines[2:]])
    with raises(rf"train_image_paths\.csv, line 3: .*{message}.*Fix or delete that line"):
        read_mura(mura_tree)


def test_bad_line_number_counts_the_header(make_tree) -> None:
    root = make_tree(header=True, crlf=True)
    path = root / "valid_image_paths.csv"
    path.write_bytes(path.read_bytes().replace(b"image1.png", b"image1.jpg", 1))
    with raises(r"valid_image_paths\.csv, line 2: .*image1\.jpg' is not a MURA image path"):
        read_mura(root)


def test_duplicate_image_line(mura_tree: Path) -> None:
    edit_csv(mura_tree, "train_image_paths.csv", lambda lines: [*lines, lines[1]])
    n = len((mura_tree / "train_image_paths.csv").read_text().splitlines())
    with raises(rf"train_image_paths\.csv, line {n}: .* is listed twice \(first at line 2\)"):
        read_mura(mura_tree)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda line: line.replace(",0", ",1"),
         r"line 1: label 1 contradicts the folder name 'study1_negative' \(_negative means 0\)"),
        (lambda line: line.replace(",0", ",yes"), r"line 1: label 'yes' is not 0 \(normal\)"),
        (lambda line: line.replace(",0", ""), r"line 1: expected '<study folder>,<label>'"),
        (lambda line: line.replace("XR_ELBOW", "hand"), r"line 1: 'hand' in .* is not a body-part"),
    ],
)  # fmt: skip
def test_bad_study_csv_line(mura_tree: Path, edit, message: str) -> None:
    edit_csv(mura_tree, "train_labeled_studies.csv", lambda lines: [edit(lines[0]), *lines[1:]])
    with raises(rf"train_labeled_studies\.csv, {message}"):
        read_mura(mura_tree)


def test_duplicate_study_line(mura_tree: Path) -> None:
    edit_csv(
        mura_tree, "valid_labeled_studies.csv", lambda lines: [*lines[:3], lines[0], *lines[3:]]
    )
    with raises(r"valid_labeled_studies\.csv, line 4: study .* listed twice \(first at line 1\)"):
        read_mura(mura_tree)


def test_study_without_images(mura_tree: Path) -> None:
    extra = "MURA-v1.1/train/XR_HAND/patient00077/study1_positive/,1"
    edit_csv(mura_tree, "train_labeled_studies.csv", lambda lines: [*lines, extra])
    with raises(
        r"train_labeled_studies\.csv: 1 labeled studies have no images in train_image_paths\.csv:"
        r" MURA-v1\.1/train/XR_HAND/patient00077/study1_positive/ \(line 36\)\. The two CSV"
    ):
        read_mura(mura_tree)


def test_image_without_study_label(mura_tree: Path) -> None:
    edit_csv(mura_tree, "train_labeled_studies.csv", lambda lines: lines[1:])
    with raises(
        r"train_image_paths\.csv: 1 listed images belong to studies missing from "
        r"train_labeled_studies\.csv: MURA-v1\.1/train/XR_ELBOW/patient00001/study1_negative/ "
        r"\(line 1\)"
    ):
        read_mura(mura_tree)


def test_listed_images_missing_on_disk(mura_tree: Path) -> None:
    (mura_tree / STUDY / "image1.png").unlink()
    shutil.rmtree(mura_tree / "train/XR_WRIST")
    n_listed = len((mura_tree / "train_image_paths.csv").read_text().splitlines())
    n_wrist = sum(s.views for s in default_studies() if s.split == "train" and s.part == "WRIST")
    with raises(
        rf"train_image_paths\.csv: {1 + n_wrist} of {n_listed} listed images are missing on disk: "
        rf"MURA-v1\.1/{STUDY}/image1\.png \(line 1\), .* and {1 + n_wrist - 5} more\. Re-extract"
    ):
        read_mura(mura_tree)


def test_csv_without_split_folder(mura_tree: Path) -> None:
    shutil.rmtree(mura_tree / "valid")
    with raises(r"valid_image_paths\.csv: lists 69 images but the folder .*valid does not exist"):
        read_mura(mura_tree)


@pytest.mark.parametrize("kept", ["train_image_paths.csv", "train_labeled_studies.csv"])
def test_one_csv_of_a_pair(mura_tree: Path, kept: str) -> None:
    other = {"train_image_paths.csv", "train_labeled_studies.csv"} - {kept}
    (mura_tree / other.pop()).unlink()
    with raises(rf"{re.escape(kept)}: found without .*come as a pair"):
        read_mura(mura_tree)


def test_empty_csv_is_an_empty_split(mura_tree: Path) -> None:
    write_lines(mura_tree / "valid_image_paths.csv", ["Img_Path"])
    with raises(r"valid_image_paths\.csv: lists no images, so the valid split is empty"):
        read_mura(mura_tree)


def test_empty_split_folder(make_tree) -> None:
    root = make_tree([s for s in default_studies() if s.split == "train"], csv=False)
    (root / "valid" / "XR_HAND").mkdir(parents=True)
    with raises(r"valid: holds no image .* so the valid split is empty"):
        read_mura(root)


def test_non_utf8_csv(mura_tree: Path) -> None:
    (mura_tree / "train_image_paths.csv").write_bytes(b"\xff\xfe\x00garbage")
    with raises(r"train_image_paths\.csv: not a UTF-8 text CSV"):
        read_mura(mura_tree)


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("train/XR_Foot", r"XR_Foot: 'XR_Foot' is not a body-part folder; expected XR_<PART>"),
        ("train/XR_", r"XR_: 'XR_' is not a body-part folder"),
        ("train/XR_HAND/john", r"john: expected a patient folder named patient<NNNNN>"),
        ("train/XR_HAND/patient00001/study3", r"study3: expected a study folder named"),
    ],
)
def test_bad_folder_name_in_walk(make_tree, folder: str, message: str) -> None:
    root = make_tree(csv=False)
    (root / folder).mkdir(parents=True)
    with raises(message):
        read_mura(root)


def test_png_with_another_name_in_walk(make_tree) -> None:
    root = make_tree(csv=False)
    (root / STUDY / "scan.png").write_bytes(TINY_PNG)
    with raises(r"study1_negative/scan\.png: a PNG not named image<N>\.png"):
        read_mura(root)


def test_two_folders_for_one_study(make_tree) -> None:
    root = make_tree(csv=False)
    twin = root / STUDY.replace("negative", "positive")
    twin.mkdir()
    (twin / "image1.png").write_bytes(TINY_PNG)
    with raises(r"study1_negative/ and .*study1_positive/ are the same study"):
        read_mura(root)


def test_csv_source_requires_the_csvs(make_tree) -> None:
    root = make_tree(csv=False)
    with raises(r"no train_image_paths\.csv or train_labeled_studies\.csv for train/"):
        scan_mura(root, source="csv")


def test_every_message_is_one_line(mura_tree: Path) -> None:
    shutil.rmtree(mura_tree / "train")
    with pytest.raises(MuraFormatError) as info:
        read_mura(mura_tree)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- the bundled sample


@pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="data_sample/MURA-v1.1 not generated yet")
def test_bundled_sample() -> None:
    index = scan_mura(SAMPLE_ROOT)
    frame = index.frame
    assert index.source == {"train": "csv", "valid": "csv"}
    assert set(frame["body_part"]) == set(BODY_PARTS)
    assert set(frame["label"]) == {0, 1}
    assert list(frame["split"].unique()) == ["train", "valid"]
    pd.testing.assert_frame_equal(scan_mura(SAMPLE_ROOT, source="walk").frame, frame)
