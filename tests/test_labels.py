"""Relabelled study files (`--labels DIR`): describe, train and evaluate read the same labels."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import mura_lib.config
from mura_lib.cli import main
from mura_lib.config import NOTEBOOKS_DIR, SAMPLE_ROOT
from mura_lib.data import read_mura, scan_mura
from mura_lib.data.mura_layout import STUDY, parse_mura_path
from mura_lib.reproduce import NOTEBOOKS

pytest_plugins = ["fixtures_training"]  # tiny_tree, shared_cache_dir
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_one_line_error(rc: int, captured: pytest.CaptureResult, *expected: str) -> None:
    assert rc == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert all(text in captured.err for text in expected), captured.err


def flipped_rows(rows: list[str], n: int) -> tuple[list[str], list[str]]:
    """The rows with the first ``n`` normal studies made abnormal, their folders renamed as
    Better-MURA does (study1_negative/ -> study1_positive/); and those studies' ids."""
    out, flipped = [], []
    for row in rows:
        folder, label = row.rsplit(",", 1)
        if label == "0" and len(flipped) < n:
            flipped.append(parse_mura_path(folder.rstrip("/"), STUDY).study_id)
            row = folder.replace("_negative/", "_positive/") + ",1"
        out.append(row)
    return out, flipped


def relabelled_copy(dest: Path, flips: dict[str, int], root: Path = SAMPLE_ROOT) -> list[str]:
    """Write ``dest/{split}_labeled_studies.csv`` for each split of ``flips``: the official
    file of ``root`` with that many normal studies flipped. Returns the flipped study ids."""
    dest.mkdir(parents=True, exist_ok=True)
    flipped = []
    for split, n in flips.items():
        rows = (root / f"{split}_labeled_studies.csv").read_text().splitlines()
        rows, ids = flipped_rows(rows, n)
        (dest / f"{split}_labeled_studies.csv").write_text("\n".join(rows) + "\n")
        flipped += ids
    return flipped


def test_describe_reports_the_studies_with_another_label_per_split(tmp_path, capsys):
    flipped = relabelled_copy(tmp_path / "better", {"train": 7, "valid": 3})
    rc = main(["describe", str(SAMPLE_ROOT), "--labels", str(tmp_path / "better")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "train: 7 of 560 studies have another label in train_labeled_studies.csv" in out
    assert "valid: 3 of 140 studies have another label in valid_labeled_studies.csv" in out

    index, tree = scan_mura(SAMPLE_ROOT, labels=tmp_path / "better"), read_mura(SAMPLE_ROOT)
    studies = index.frame.groupby("study_id")["label"].agg(["min", "max"])
    assert (studies.loc[flipped, "min"] == 1).all()  # every view of a flipped study
    changed = index.frame.loc[index.frame["label"] != tree["label"], "study_id"].unique()
    assert sorted(changed) == sorted(flipped)
    pd.testing.assert_frame_equal(index.tree_frame, tree)
    assert index.labels["changed"] == {"train": 7, "valid": 3} and index.labels["kept"] == []
    assert set(index.labels["sha256"]) == {"train_labeled_studies.csv", "valid_labeled_studies.csv"}


def test_a_split_without_its_file_keeps_the_tree_labels(tmp_path, capsys):
    relabelled_copy(tmp_path / "better", {"valid": 2})
    assert main(["describe", str(SAMPLE_ROOT), "--labels", str(tmp_path / "better")]) == 0
    out = capsys.readouterr().out
    assert "train: the tree's labels (no train_labeled_studies.csv in the label folder)" in out
    index = scan_mura(SAMPLE_ROOT, labels=tmp_path / "better")
    assert index.labels["changed"] == {"valid": 2} and index.labels["kept"] == ["train"]


def test_rows_outside_the_tree_are_left_out_and_repeated_rows_combine(tmp_path, capsys):
    """A subset tree meets a full label file; Better-MURA lists some studies twice."""
    relabelled_copy(tmp_path / "better", {"valid": 0})
    path = tmp_path / "better" / "valid_labeled_studies.csv"
    first = path.read_text().splitlines()[1]  # study2_negative/,0 of patient00466
    assert first.endswith("_negative/,0")
    extra = [
        "MURA-v1.1/valid/XR_WRIST/patient99999/study1_positive/,1",  # not in the sample
        first.replace("_negative/,0", "_positive/,1"),  # the same study, abnormal
    ]
    path.write_text(path.read_text() + "\n".join(extra) + "\n")
    assert main(["describe", str(SAMPLE_ROOT), "--labels", str(tmp_path / "better")]) == 0
    out = capsys.readouterr().out
    assert "valid: 1 rows of valid_labeled_studies.csv name studies this tree does not have" in out
    assert "valid: 1 studies are listed more than once" in out
    index = scan_mura(SAMPLE_ROOT, labels=tmp_path / "better")
    assert index.labels["changed"] == {"valid": 1}
    assert index.labels["not_in_tree"] == {"valid": 1} and index.labels["repeated"] == {"valid": 1}


def _drop_line(rows: list[str]) -> list[str]:
    return rows[:5] + rows[6:]


def _set_line(text: str):
    return lambda rows: rows[:2] + [text] + rows[3:]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_drop_line, ["has no label for 1 studies of the tree: valid/", "remove the file"]),
        (
            _set_line("MURA-v1.1/valid/XR_SHOULDER/patient00467/study1_positive/,2"),
            ["valid_labeled_studies.csv, line 3: label '2' is not 0 (normal) or 1"],
        ),
        (
            _set_line("MURA-v1.1/train/XR_SHOULDER/patient00467/study1_positive/,1"),
            ["valid_labeled_studies.csv, line 3:", "is not a valid path"],
        ),
        (
            _set_line("MURA-v1.1/valid/XR_SHOULDER/patient00467/study1_positive/,1,x"),
            ["valid_labeled_studies.csv, line 3: expected '<study folder>,<label>'"],
        ),
    ],
    ids=["tree-study-missing", "label-not-0-or-1", "other-split", "three-fields"],
)
def test_a_bad_label_file_is_one_line_naming_file_and_line(tmp_path, capsys, edit, expected):
    relabelled_copy(tmp_path / "better", {"valid": 0})
    path = tmp_path / "better" / "valid_labeled_studies.csv"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    rc = main(["describe", str(SAMPLE_ROOT), "--labels", str(tmp_path / "better")])
    assert_one_line_error(rc, capsys.readouterr(), str(path), *expected)


def _a_file(path: Path) -> Path:
    path.write_text("MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/,1\n")
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d, "no such label folder"),
        (lambda d: d.mkdir() or d, "holds no label file; expected train_labeled_studies.csv"),
        (_a_file, "is a file; pass the folder holding it"),
    ],
    ids=["missing", "empty", "a-file"],
)
def test_a_bad_label_folder_is_one_line(tmp_path, capsys, make, expected):
    folder = make(tmp_path / "labels")
    rc = main(["describe", str(SAMPLE_ROOT), "--labels", str(folder)])
    assert_one_line_error(rc, capsys.readouterr(), str(folder), expected)


def test_train_and_evaluate_use_and_record_the_labels(
    tmp_path, tiny_tree, shared_cache_dir, monkeypatch, capsys
):
    """Training's split, validation and summary, and evaluate's predictions and metrics.json,
    all read the relabelled studies."""
    monkeypatch.setattr(mura_lib.config, "CACHE_DIR", shared_cache_dir)
    studies = read_mura(tiny_tree).drop_duplicates("study_id")
    labels = tmp_path / "labels"
    labels.mkdir()
    for split, rows in studies.groupby("split"):
        lines = [
            f"{rel.rsplit('/', 1)[0]}/,{label}"
            for rel, label in zip(rows["rel_path"], rows["label"], strict=True)
        ]
        rows_out, _ = flipped_rows(lines, 6 if split == "train" else 4)
        (labels / f"{split}_labeled_studies.csv").write_text("\n".join(rows_out) + "\n")
    relabelled = read_mura(tiny_tree, labels).set_index("rel_path")["label"]

    run = tmp_path / "run"
    rc = main([
        "train", "--data", str(tiny_tree), "--out", str(run), "--labels", str(labels),
        "--arch", "small_cnn", "--image-size", "32", "--epochs", "1", "--batch-size", "32",
        "--device", "cpu", "--cache-dir", str(shared_cache_dir), "--augment", "none",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["labels"]["changed"] == {"train": 6, "valid": 4}
    assert summary["labels"]["source"] == str(labels)  # outside the project: absolute
    val = pd.read_csv(run / "val_predictions.csv")
    flipped_in_val = (
        val["label"].to_numpy()
        != read_mura(tiny_tree).set_index("rel_path").loc[val["rel_path"], "label"].to_numpy()
    )
    assert flipped_in_val.any()  # the held-out studies include relabelled ones
    assert (val["label"].to_numpy() == relabelled.loc[val["rel_path"]].to_numpy()).all()

    rc = main([
        "evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(tiny_tree),
        "--out", str(tmp_path / "eval"), "--n-boot", "10", "--device", "cpu",
        "--labels", str(labels),
    ])  # fmt: skip
    capsys.readouterr()
    assert rc == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["labels"] == summary["labels"]
    assert "labels_note" not in metrics  # the labels the model was trained with
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert (
        predictions["label"].to_numpy() == relabelled.loc[predictions["rel_path"]].to_numpy()
    ).all()

    # against the tree's own labels, the evaluation says that they are not the training's
    rc = main([
        "evaluate", "--checkpoint", str(run / "best.pt"), "--data", str(tiny_tree),
        "--out", str(tmp_path / "eval-tree"), "--n-boot", "10", "--device", "cpu",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    note = json.loads((tmp_path / "eval-tree" / "metrics.json").read_text())["labels_note"]
    assert note == (
        f"the model was trained, and its threshold chosen, with labels from {labels}; this "
        "evaluation uses labels from tree"
    )
    assert out.splitlines()[-1] == f"note: {note}"


def test_train_with_a_bad_label_folder_is_one_line(tmp_path, tiny_tree, capsys):
    missing = tmp_path / "nowhere"
    rc = main(["train", "--data", str(tiny_tree), "--out", str(tmp_path / "run"),
               "--labels", str(missing), "--device", "cpu"])  # fmt: skip
    assert_one_line_error(rc, capsys.readouterr(), str(missing), "no such label folder")


def test_every_notebook_takes_labels_so_profiles_may_set_it():
    """Profiles may set only the notebooks' parameters (mura_lib.reproduce checks them)."""
    for name in NOTEBOOKS:
        cells = json.loads((NOTEBOOKS_DIR / name).read_text())["cells"]
        (params,) = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        assert any(line.startswith('labels = ""') for line in params["source"]), name
