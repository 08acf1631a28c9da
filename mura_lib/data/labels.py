"""Alternative study labels: a folder of `{split}_labeled_studies.csv` files that replace the
labels of a MURA tree.

MURA's labels are noisy, and relabelled copies of its index files circulate: Better-MURA
(kopop8/Better-MURA-v1.11) changed 212 train and 28 valid studies from normal to abnormal,
mostly films with hardware, renaming `study1_negative/` to `study1_positive/` with the label.
:func:`relabel` applies such a folder to the image index, once, in
:func:`~mura_lib.data.mura.scan_mura`: describe, the training split, the class weights and
evaluation all read the same labels from the frame.

The files have the official format (`MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/,1`,
header, CRLF and BOM accepted as for the index). A row names a study by split, body part,
patient and study number (its `study_id`); the `_positive`/`_negative` suffix is not part of
the match, and the label column is the label, whatever the suffix says. The rules:

- A split whose file is absent from the folder keeps the tree's labels.
- Every study of a relabelled split must be in its file: a tree study that the file does not
  know is an error naming it, since keeping the tree's label for it would silently mix two
  label sets.
- A row naming a study the tree does not have is left out and counted (`not_in_tree`): a
  researcher may index a subset of MURA (a few parts, a train-only tree) with the full
  relabelled files. A mistyped row is still caught, because the study it meant is then
  missing from the file.
- Several rows for one study combine: the study is abnormal when any row says 1, as a study
  is abnormal when any of its views is. Better-MURA lists 5 studies twice, `_negative,0` and
  `_positive,1`, because its renamer moved only the views it flagged; they count as changed
  to abnormal, which gives its 212 train and 28 valid studies. They are counted (`repeated`).
- A malformed line (not a study folder of the split, a label other than 0 or 1) is an error
  naming the file and line.

What was used is recorded by :func:`labels_record`, in the training run and in metrics.json:
`{"source": "tree"}`, or the folder (relative to the project root when inside it), the
SHA-256 of each file read, and how many studies per split have another label than the tree's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mura_lib.config import SPLITS, project_relative
from mura_lib.data.mura_csv import MAX_LISTED, labeled_study_rows, listing
from mura_lib.data.mura_layout import study_csv_name
from mura_lib.disk import sha256_file
from mura_lib.errors import MuraFormatError

TREE_LABELS = {"source": "tree"}  # the record of a run that used the tree's own labels
_FIX_FILE = "Restore the label file, or remove it to keep the tree's labels for its split."
_FIX_LINE = "Fix that line of the label file."


@dataclass(frozen=True)
class Relabelling:
    """What a label folder changed in an index.

    Attributes:
        folder: the label folder, absolute.
        sha256: the digest of every label file read, by file name.
        changed: per relabelled split, the study ids whose label differs from the tree's.
        kept: the tree's splits that keep its labels (no file for them in the folder).
        not_in_tree: per file read, the studies it names that the tree does not have.
        repeated: per file read, the studies it lists more than once.
    """

    folder: Path
    sha256: dict[str, str]
    changed: dict[str, list[str]]
    kept: list[str]
    not_in_tree: dict[str, int] = field(default_factory=dict)
    repeated: dict[str, int] = field(default_factory=dict)

    def tree_labels(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (relabelled) with the tree's own labels back: labels are 0 or 1, so a
        changed study's tree label is the other one."""
        ids = [study for studies in self.changed.values() for study in studies]
        flip = frame["study_id"].isin(ids)
        return frame.assign(label=frame["label"].where(~flip, 1 - frame["label"]))


def labels_record(relabelling: Relabelling | None) -> dict:
    """Which labels an index carries, as a run or metrics.json records it (JSON-ready)."""
    if relabelling is None:
        return dict(TREE_LABELS)
    return {
        "source": project_relative(relabelling.folder),
        "sha256": dict(relabelling.sha256),
        "changed": {split: len(ids) for split, ids in relabelling.changed.items()},
        "kept": list(relabelling.kept),
        "not_in_tree": dict(relabelling.not_in_tree),
        "repeated": dict(relabelling.repeated),
    }


def label_folder(folder: str | os.PathLike[str]) -> Path:
    """The absolute label folder, checked to hold at least one `{split}_labeled_studies.csv`.

    Raises:
        MuraFormatError: no such folder, a file given, or neither label file inside.
    """
    path = Path(os.path.abspath(Path(folder).expanduser()))
    names = " and/or ".join(study_csv_name(s) for s in SPLITS)
    if not path.exists():
        raise MuraFormatError(f"{path}: no such label folder; pass a folder holding {names}.")
    if not path.is_dir():
        raise MuraFormatError(
            f"{path}: is a file; pass the folder holding it (with {names}), not the file."
        )
    if not any((path / study_csv_name(s)).is_file() for s in SPLITS):
        raise MuraFormatError(
            f"{path}: holds no label file; expected {names} in the official format "
            "(MURA-v1.1/<split>/XR_<PART>/patient<N>/study<N>_<label>/,<0|1>)."
        )
    return path


def read_label_file(path: Path, split: str) -> tuple[dict[str, int], int]:
    """{study_id: label} of one label file, and how many studies it lists more than once
    (their rows combined: abnormal when any says 1).

    Raises:
        MuraFormatError: a malformed line.
    """
    labels: dict[str, int] = {}
    repeated: set[str] = set()
    for _, study, label in labeled_study_rows(path, split, _FIX_FILE, _FIX_LINE):
        if study.study_id in labels:
            repeated.add(study.study_id)
        labels[study.study_id] = max(label, labels.get(study.study_id, 0))
    return labels, len(repeated)


def relabel(
    frame: pd.DataFrame, folder: str | os.PathLike[str]
) -> tuple[pd.DataFrame, Relabelling]:
    """The index ``frame`` with the labels of ``folder``'s files, and what changed.

    Raises:
        MuraFormatError: see the module docstring; the message names the file and the study.
    """
    folder = label_folder(folder)
    tree_splits = list(frame["split"].unique())
    sha256: dict[str, str] = {}
    changed: dict[str, list[str]] = {}
    not_in_tree: dict[str, int] = {}
    repeated: dict[str, int] = {}
    label = frame["label"].copy()
    for split in SPLITS:
        path = folder / study_csv_name(split)
        if not path.is_file():
            continue
        sha256[path.name] = sha256_file(path)
        new, repeated[split] = read_label_file(path, split)
        rows = frame["split"] == split
        studies = frame.loc[rows, ["study_id", "rel_path", "label"]].drop_duplicates("study_id")
        not_in_tree[split] = len(set(new).difference(studies["study_id"]))
        if split not in tree_splits:
            continue
        _check_every_study_listed(path, studies, new)
        label[rows] = frame.loc[rows, "study_id"].map(new).astype("int64")
        differs = studies["study_id"].map(new) != studies["label"]
        changed[split] = studies.loc[differs, "study_id"].tolist()
    kept = [split for split in tree_splits if split not in changed]
    relabelled = frame.assign(label=label.astype("int64"))
    return relabelled, Relabelling(folder, sha256, changed, kept, not_in_tree, repeated)


def _check_every_study_listed(path: Path, studies: pd.DataFrame, labels: dict[str, int]) -> None:
    """Raise when a study of the tree has no row in its split's label file."""
    missing = studies[~studies["study_id"].isin(labels)]
    if missing.empty:
        return
    shown = [
        f"{row.study_id} ({row.rel_path.rsplit('/', 1)[0]}/)"
        for row in missing.head(MAX_LISTED).itertuples()
    ]
    raise MuraFormatError(
        f"{path}: has no label for {len(missing)} studies of the tree: "
        f"{listing(shown, len(missing))}. A label file replaces every label of its split: add "
        "those studies, or remove the file to keep the tree's labels for the split."
    )
