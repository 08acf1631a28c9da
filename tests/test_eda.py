"""EDA computations (reports.eda) and figures (reports.eda_figures) on tiny trees."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from conftest import Study, default_studies, frame_of, write_tree
from matplotlib.figure import Figure
from PIL import Image

from mura_lib.data import read_mura
from mura_lib.data.describe import PAPER_TABLE1, count_table
from mura_lib.reports import eda, eda_figures

matplotlib.use("Agg")


def _save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def varied_tree(tmp_path: Path) -> Path:
    """Two train studies and one valid study whose images differ in size and mode.

    ELBOW p1 s1 (label 0): 30x20 L, 20x40 RGB; WRIST p1 s1 (label 1): 16x16 I;16;
    valid ELBOW p11185 s1 (label 1): 10x50 L, all pixels 0.
    """
    studies = [
        Study("train", "ELBOW", 1, 1, 0, views=2),
        Study("train", "WRIST", 1, 1, 1, views=1),
        Study("valid", "ELBOW", 11185, 1, 1, views=1),
    ]
    root = write_tree(tmp_path, studies)
    study = root / "train/XR_ELBOW/patient00001/study1_negative"
    _save(study / "image1.png", Image.new("L", (30, 20), 128))
    _save(study / "image2.png", Image.new("RGB", (20, 40), (255, 255, 255)))
    gray16 = Image.fromarray(np.full((16, 16), 4095, dtype=np.uint16))
    _save(root / "train/XR_WRIST/patient00001/study1_positive/image1.png", gray16)
    _save(root / "valid/XR_ELBOW/patient11185/study1_positive/image1.png", Image.new("L", (10, 50)))
    return root


def test_image_sizes_reads_headers(varied_tree: Path) -> None:
    frame = read_mura(varied_tree)
    sizes = eda.image_sizes(frame)
    assert sizes.index.equals(frame.index)
    assert sizes["path"].tolist() == frame["path"].tolist()
    assert sizes[["width", "height"]].values.tolist() == [[30, 20], [20, 40], [16, 16], [10, 50]]
    assert sizes["mode"].tolist()[:2] == ["L", "RGB"]
    assert sizes["mode"].iloc[2].startswith("I")  # 16-bit gray: "I;16" or "I"
    assert sizes["aspect"].tolist() == pytest.approx([1.5, 0.5, 1.0, 0.2])
    assert (sizes["error"] == "").all() and (sizes["file_bytes"] > 0).all()


def test_image_sizes_does_not_decode_pixels(
    varied_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Image.Image) -> None:
        raise AssertionError("image_sizes decoded pixels")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", refuse)
    sizes = eda.image_sizes(read_mura(varied_tree))
    assert (sizes["error"] == "").all()


def test_image_sizes_reports_unreadable_files(varied_tree: Path) -> None:
    frame = read_mura(varied_tree)
    Path(frame["path"].iloc[0]).write_bytes(b"not a png")
    Path(frame["path"].iloc[1]).write_bytes(b"")
    sizes = eda.image_sizes(frame)
    assert sizes["error"].iloc[0].startswith("UnidentifiedImageError")
    assert sizes["error"].iloc[1] != ""
    assert sizes.loc[:1, ["width", "height"]].eq(0).all().all()
    assert sizes["aspect"].iloc[:2].isna().all()
    assert eda.size_summary(sizes).loc["ELBOW", "n_unreadable"] == 2
    assert eda.mode_counts(sizes).loc["ELBOW", "?"] == 2


def test_image_sizes_in_worker_processes_gives_the_same(varied_tree: Path) -> None:
    frame = read_mura(varied_tree)
    pd.testing.assert_frame_equal(eda.image_sizes(frame, n_jobs=2), eda.image_sizes(frame))


def test_size_summary_and_mode_counts(varied_tree: Path) -> None:
    sizes = eda.image_sizes(read_mura(varied_tree))
    summary = eda.size_summary(sizes)
    assert summary.index.tolist() == ["ELBOW", "WRIST", "all"]
    assert summary.loc["ELBOW", "n_images"] == 3
    assert summary.loc["all", "width_max"] == 30 and summary.loc["all", "height_max"] == 50
    assert summary.loc["ELBOW", "portrait_share"] == pytest.approx(2 / 3)
    modes = eda.mode_counts(sizes)
    assert modes.loc["ELBOW", "L"] == 2 and modes.loc["ELBOW", "RGB"] == 1
    assert modes.loc["all"].sum() == 4


def test_views_per_study() -> None:
    studies = [
        Study("train", "HAND", 1, 1, 0, views=3),
        Study("train", "HAND", 2, 1, 1, views=1),
        Study("valid", "ELBOW", 11185, 1, 0, views=1),
    ]
    table = eda.views_per_study(frame_of(studies))
    assert table.index.tolist() == ["ELBOW", "HAND", "all"]
    assert table.columns.tolist() == [1, 2, 3]
    assert table.loc["HAND"].tolist() == [1, 0, 1]
    assert table.loc["all"].tolist() == [2, 0, 1]


def test_patients_across_parts_counts_per_split() -> None:
    studies = [
        # patient 1: three parts (wrist twice), patient 2: one part, patient 3: two parts
        Study("train", "WRIST", 1, 1, 0, views=2),
        Study("train", "WRIST", 1, 2, 1),
        Study("train", "HAND", 1, 1, 0),
        Study("train", "FINGER", 1, 1, 1),
        Study("train", "HAND", 2, 1, 0),
        Study("train", "ELBOW", 3, 1, 0),
        Study("train", "SHOULDER", 3, 1, 1, views=3),
        Study("valid", "HAND", 11185, 1, 0),
    ]
    frame = frame_of(studies)
    table = eda.patients_across_parts(frame)
    assert table.loc["train", [1, 2, 3]].tolist() == [1, 1, 1]
    assert table.loc["valid", [1, 2, 3]].tolist() == [1, 0, 0]
    assert table.loc["train", "n_patients"] == 3
    assert table.loc["train", "multi_part"] == 2
    assert table.loc["train", "multi_part_share"] == pytest.approx(2 / 3)
    assert table.loc["train", "multi_part_images"] == 5 + 4  # patient 1: 5, patient 3: 4
    assert table.loc["valid", "multi_part"] == 0

    patients = eda.patient_parts(frame).set_index(["split", "patient_id"])
    assert patients.loc[("train", 1), "parts"] == "FINGER+HAND+WRIST"  # paper's order
    assert patients.loc[("train", 1), "n_studies"] == 4

    matrix = eda.part_cooccurrence(frame)
    assert matrix.index.tolist() == ["ELBOW", "FINGER", "HAND", "SHOULDER", "WRIST"]
    assert matrix.loc["HAND", "HAND"] == 3  # patients 1, 2 and 11185
    assert matrix.loc["HAND", "WRIST"] == matrix.loc["WRIST", "HAND"] == 1
    assert matrix.loc["ELBOW", "SHOULDER"] == 1 and matrix.loc["ELBOW", "HAND"] == 0


def test_table1_side_by_side() -> None:
    frame = frame_of(default_studies())
    table = eda.table1_side_by_side(frame)
    assert table.columns.get_level_values("count").unique().tolist() == list(PAPER_TABLE1.columns)
    assert table[("train_images", "paper")].equals(PAPER_TABLE1["train_images"])
    assert table.loc["ELBOW", ("train_images", "this tree")] == 9  # 1+2+3+1 views + 2


def test_split_leakage_only_the_patient_split_is_clean() -> None:
    studies = []
    for patient in range(1, 61):  # every patient has a wrist and a hand study
        studies += [
            Study("train", "WRIST", patient, 1, patient % 2),
            Study("train", "HAND", patient, 1, (patient // 2) % 2, views=2),
        ]
    table = eda.split_leakage(frame_of(studies), val_fraction=0.25, seed=0)
    assert table.index.tolist() == [
        "random studies",
        "patients within each part",
        "patients across parts (split_by_patient)",
    ]
    assert table["val_studies_share"].tolist() == pytest.approx([0.25, 0.25, 0.25], abs=0.05)
    clean = table.loc["patients across parts (split_by_patient)"]
    assert clean["patients_both_sides"] == 0 and clean["val_images_leaked"] == 0
    assert (table["patients_both_sides"].iloc[:2] > 0).all()


def test_intensity_histograms(varied_tree: Path) -> None:
    frame = read_mura(varied_tree)
    sample = eda.intensity_histograms(frame, per_part=True, max_images=100, seed=0)
    assert sample.histograms.columns.tolist() == ["ELBOW", "WRIST"]
    assert sample.histograms.shape == (256, 2)
    assert sample.histograms.sum().tolist() == pytest.approx([1.0, 1.0])
    # ELBOW pixels: 600 at 128, 800 white (RGB), 500 black; weighted by pixel count
    elbow = sample.histograms["ELBOW"]
    assert elbow[128] == pytest.approx(600 / 1900)
    assert elbow[255] == pytest.approx(800 / 1900)
    assert elbow[0] == pytest.approx(500 / 1900)
    assert sample.histograms["WRIST"][255] == pytest.approx(1.0)  # 16-bit scaled to its max
    assert len(sample.images) == 4
    assert sample.images["black_share"].tolist() == pytest.approx([0, 0, 0, 1])
    assert "4 of 4 images decoded" in sample.note and "0 unreadable" in sample.note


def test_intensity_histograms_caps_and_reports_unreadable(varied_tree: Path) -> None:
    frame = read_mura(varied_tree)
    Path(frame["path"].iloc[3]).write_bytes(b"broken")
    sample = eda.intensity_histograms(frame, per_part=False, max_images=4, seed=1)
    assert sample.histograms.columns.tolist() == ["all"]
    assert (
        sample.images["error"]
        .iloc[3]
        .endswith("re-download or re-extract it, or pass skip_bad=True to leave it out.")
    )
    assert not sample.images["error"].iloc[3].startswith(frame["path"].iloc[3])  # own column
    assert "1 unreadable (left out)" in sample.note
    capped = eda.intensity_histograms(frame, per_part=True, max_images=2, seed=0)
    assert capped.images["body_part"].value_counts().to_dict() == {"ELBOW": 1, "WRIST": 1}
    again = eda.intensity_histograms(frame, per_part=True, max_images=2, seed=0)
    assert capped.images["path"].tolist() == again.images["path"].tolist()


def test_file_problems_collects_reader_header_and_decode_findings(varied_tree: Path) -> None:
    frame = read_mura(varied_tree)
    Path(frame["path"].iloc[1]).write_bytes(b"broken")
    skipped = pd.DataFrame({"path": ["/x/._image1.png"], "reason": ["AppleDouble"]})
    sizes = eda.image_sizes(frame)
    sample = eda.intensity_histograms(frame, max_images=10)
    problems = eda.file_problems(skipped, sizes, sample.images)
    assert problems.columns.tolist() == ["path", "found_by", "reason"]
    assert problems["found_by"].tolist() == ["reader", "header", "decode"]
    assert problems["path"].iloc[1] == problems["path"].iloc[2] == frame["path"].iloc[1]
    assert problems["reason"].iloc[1].startswith("UnidentifiedImageError")
    clean = eda.file_problems(skipped.iloc[:0], eda.image_sizes(frame.iloc[[0]]), sample.images[:0])
    assert clean.empty


def test_example_studies_prefers_train_and_covers_cells(mura_tree: Path) -> None:
    frame = read_mura(mura_tree)
    picked = eda.example_studies(frame, per_part_label=1, seed=3)
    assert len(picked) == 14  # 7 parts x 2 labels
    assert (picked["split"] == "train").all()
    assert picked.groupby(["body_part", "label"]).size().eq(1).all()
    assert picked["study_id"].tolist() == eda.example_studies(frame, seed=3)["study_id"].tolist()
    two = eda.example_studies(frame, per_part_label=2, seed=0)
    assert two.groupby(["body_part", "label"]).size().eq(2).all()


def test_figures_are_returned(varied_tree: Path, mura_tree: Path) -> None:
    frame = read_mura(mura_tree)
    sizes = eda.image_sizes(read_mura(varied_tree))
    sample = eda.intensity_histograms(frame, max_images=14)
    figures = [
        eda_figures.plot_counts(count_table(frame)),
        eda_figures.plot_abnormal_rate(count_table(frame)),
        eda_figures.plot_views_per_study(eda.views_per_study(frame)),
        eda_figures.plot_sizes(sizes),
        eda_figures.plot_sizes(sizes, hexbin_above=2),
        eda_figures.plot_intensity_histograms(sample.histograms, sample.note),
        eda_figures.plot_part_cooccurrence(eda.part_cooccurrence(frame)),
        eda_figures.plot_study_grid(frame, eda.example_studies(frame), max_views=3),
    ]
    for fig in figures:
        assert isinstance(fig, Figure)
        matplotlib.pyplot.close(fig)


def test_study_grid_marks_unreadable_images(mura_tree: Path) -> None:
    frame = read_mura(mura_tree)
    studies = eda.example_studies(frame).head(1)
    first = frame.loc[frame["study_id"] == studies["study_id"].iloc[0], "path"].iloc[0]
    Path(first).write_bytes(b"broken")
    fig = eda_figures.plot_study_grid(frame, studies, max_views=2)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "unreadable" in texts
    matplotlib.pyplot.close(fig)
