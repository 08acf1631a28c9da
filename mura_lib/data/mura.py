"""Index a MURA-v1.1 tree: one row per image, from the official CSVs or a walk of the folders.

:func:`read_mura` returns the image index frame; :func:`scan_mura` returns it together with a
report of every file it did not take and how it read each split::

    index = scan_mura("data_sample")      # the MURA-v1.1 folder or its parent
    index.frame                            # = read_mura("data_sample")
    index.skipped                          # DataFrame: path, reason (AppleDouble, hidden, ...)
    index.source                           # {"train": "csv", "valid": "csv"}
    scan_mura("data_sample", labels="better-mura")  # another folder's study labels

The labels are the tree's (its folders' suffixes) unless `labels` names a folder of
relabelled `{split}_labeled_studies.csv` files (:mod:`mura_lib.data.labels`): they replace
the `label` column here, once, so that every reader of the frame sees the same labels.

The frame has one row per image, the columns of :data:`COLUMNS`, a RangeIndex, and rows sorted
by split, body part, patient, study and view:

- `path`: the image's absolute path; `rel_path`: as in the official image CSV
  (`MURA-v1.1/train/XR_ELBOW/patient00001/study1_negative/image1.png`, whatever the folder's
  name on disk);
- `split` ("train" / "valid"), `body_part` (the folder name without `XR_`);
- `patient_id`, `study`, `view` (int64): the numbers of `patient<N>`, `study<N>`, `image<N>`;
- `study_id`: `train/ELBOW/patient00001/study1`, unique per study across parts and splits;
- `label` (int64): 1 abnormal (`_positive`), 0 normal (`_negative`); every view of a study
  carries its study's label.

How a split is read. When both `{split}_image_paths.csv` and `{split}_labeled_studies.csv`
exist they are authoritative: every listed image must exist (checked with one `os.scandir`
per listed study folder; nothing is decoded), and PNG files in those study folders that the
CSV does not list are reported as skipped, not indexed. Study folders the CSV does not name
are not opened. Without the CSVs the split's folder is walked with `os.scandir`. Both run
every path through the one parser of the layout
(:func:`~mura_lib.data.mura_layout.parse_mura_path`) and build the frame in one place, so they
give the same frame for a tree that matches its CSVs.

What is never a row: macOS AppleDouble files (`._*`) and `__MACOSX` folders, hidden files,
non-PNG files, stray files outside study folders and folders inside study folders. They are
listed in `skipped`, never an error, because re-packaged copies of MURA are full of them.
What is an error (:class:`~mura_lib.errors.MuraFormatError`, naming the file or CSV line
and what to do): a folder that is not a MURA tree, a name outside the layout (`xr_hand/`
among body parts, `notes/` among patients, `study1/` without a label suffix, a PNG not named
`image<N>.png`, a CSV path of another split or outside the root), a split with no images, a
malformed or inconsistent CSV (a label contradicting the folder's suffix, a duplicate, the two
files disagreeing), images listed but missing, and two folders for one study
(`study1_positive` and `study1_negative` of the same patient and part). Every `XR_<PART>`
folder is a body part, MURA's seven or not.

A tree may hold one split only (a train-only tree for benchmarks, a valid-only tree for
evaluation); a split folder that exists but holds no image is an error.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from mura_lib.config import SPLITS
from mura_lib.data.labels import Relabelling, labels_record, relabel
from mura_lib.data.mura_csv import listing, read_split_csvs
from mura_lib.data.mura_layout import (
    IMAGE,
    MURA_DIRNAME,
    PART,
    PART_DIR_RULE,
    PATIENT,
    SKIP_UNLISTED,
    STUDY,
    BadName,
    MuraPath,
    find_mura_root,
    image_csv_name,
    parse_mura_path,
    skip_reason,
    study_csv_name,
)
from mura_lib.errors import MuraFormatError

logger = logging.getLogger(__name__)

COLUMNS = (
    "path", "rel_path", "split", "body_part", "patient_id", "study", "study_id", "view", "label"
)  # fmt: skip
SORT_KEYS = ["split", "body_part", "patient_id", "study", "view"]  # "train" < "valid"
SKIP_EMPTY_STUDY = "study folder without images"

# What the walk says of a name outside the layout, by level (it opens train/ and valid/ by
# name, so a split is never misnamed).
_WALK_PROBLEMS = {
    PART: "{name!r} is not a body-part folder; expected " + PART_DIR_RULE + ". Remove or "
    "rename that folder.",
    PATIENT: "expected a patient folder named patient<NNNNN>. Remove or rename that folder.",
    STUDY: "expected a study folder named study<N>_positive or study<N>_negative (the suffix "
    "is the label). Remove or rename that folder.",
    IMAGE: "a PNG not named image<N>.png, so it has no view number. Rename or remove it.",
}

Source = Literal["auto", "csv", "walk"]


@dataclass(frozen=True)
class MuraIndex:
    """A MURA tree as indexed by :func:`scan_mura`.

    Attributes:
        root: absolute path of the MURA-v1.1 folder that was read.
        frame: the image index frame (one row per image; columns in :data:`COLUMNS`).
        skipped: one row per file or folder that is not a row of `frame`, columns `path`
            (absolute) and `reason` (one of the `SKIP_*` texts), sorted by path.
        source: how each split present was read: {"train": "csv" | "walk", ...}.
        relabelling: what a label folder changed in `frame`'s labels; None: the tree's own.
    """

    root: Path
    frame: pd.DataFrame
    skipped: pd.DataFrame
    source: dict[str, str]
    relabelling: Relabelling | None = None

    @property
    def labels(self) -> dict:
        """Which labels `frame` carries, as runs and metrics.json record it."""
        return labels_record(self.relabelling)

    @property
    def tree_frame(self) -> pd.DataFrame:
        """`frame` with the tree's own labels (itself unless relabelled): what the tree is,
        e.g. whether it is the official MURA-v1.1, does not depend on the labels used."""
        return self.frame if self.relabelling is None else self.relabelling.tree_labels(self.frame)


def read_mura(
    root: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """The image index frame of a MURA tree (see the module docstring).

    Args:
        root: the MURA-v1.1 folder or its parent.
        labels: a folder of relabelled `{split}_labeled_studies.csv` files; None: the tree's.

    Raises:
        MuraFormatError: `root` is not a valid MURA tree; the message says what to fix.
    """
    return scan_mura(root, labels=labels).frame


def scan_mura(
    root: str | os.PathLike[str],
    source: Source = "auto",
    labels: str | os.PathLike[str] | None = None,
) -> MuraIndex:
    """Index a MURA tree and report what was skipped.

    Args:
        root: the MURA-v1.1 folder or its parent.
        source: "auto" reads each split from its CSVs when both exist and walks it otherwise;
            "csv" requires the CSVs of every split present; "walk" ignores the CSVs.
        labels: a folder of relabelled `{split}_labeled_studies.csv` files
            (:mod:`mura_lib.data.labels`); None or "": the tree's labels.

    Raises:
        MuraFormatError: `root` is not a valid MURA tree; the message says what to fix.
    """
    if source not in ("auto", "csv", "walk"):
        raise ValueError(f"source must be 'auto', 'csv' or 'walk', not {source!r}")
    folder = find_mura_root(root)
    sources = _split_sources(folder, source)
    skipped: list[tuple[str, str]] = []
    records: list[MuraPath] = []
    for split, how in sources.items():
        if how == "csv":
            records += _read_csv_split(folder, split, skipped)
        else:
            records += _walk_split(folder, split, skipped)
    _check_one_folder_per_study(folder, records)
    frame = _build_frame(folder, records)
    relabelling = None
    if labels:
        frame, relabelling = relabel(frame, labels)
    skipped_frame = pd.DataFrame(sorted(skipped), columns=["path", "reason"])
    if skipped:
        counts = Counter(reason for _, reason in skipped)
        logger.info("%s: skipped %d entries: %s", folder, len(skipped), dict(counts))
    return MuraIndex(folder, frame, skipped_frame, sources, relabelling)


def _split_sources(folder: Path, source: Source) -> dict[str, str]:
    """Decide, per split, whether to read its CSVs or walk its folder (absent splits left out)."""
    sources: dict[str, str] = {}
    for split in SPLITS:
        csvs = [folder / image_csv_name(split), folder / study_csv_name(split)]
        found = [source != "walk" and path.is_file() for path in csvs]  # "walk" ignores them
        if all(found):
            sources[split] = "csv"
        elif any(found):
            present, absent = csvs if found[0] else csvs[::-1]
            raise MuraFormatError(
                f"{present}: found without {absent.name}; a split's image list and study "
                "labels come as a pair. Restore the missing file from the MURA-v1.1 archive, "
                "or delete this one to index the folders."
            )
        elif (folder / split).is_dir():
            if source == "csv":
                raise MuraFormatError(
                    f"{folder}: no {csvs[0].name} or {csvs[1].name} for {split}/, and the CSV "
                    "files were required. Restore them, or read the folders (source='auto')."
                )
            sources[split] = "walk"
    if not sources:
        raise MuraFormatError(
            f"{folder}: neither train/ nor valid/ exists. Expected a MURA-v1.1 folder holding "
            "train/ and/or valid/; point to the folder unzipped from MURA-v1.1.zip."
        )
    return sources


# ---------------------------------------------------------------- the folders


def _kept(path: str, skipped: list[tuple[str, str]], in_study: bool) -> list[os.DirEntry[str]]:
    """The entries of a folder that may be data (folders; PNGs in a study); the rest skipped."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except PermissionError as err:  # the user's to fix, not a traceback
        raise MuraFormatError(
            f"{path}: cannot be read ({err.strerror}). Check the folder's permissions."
        ) from None
    kept = []
    for entry in entries:
        reason = skip_reason(entry.name, entry.is_dir(), in_study)
        if reason:
            skipped.append((entry.path, reason))
        else:
            kept.append(entry)
    return kept


def _walked(entry: os.DirEntry[str], rel: str, level: int) -> MuraPath:
    """Parse the relative path of an entry the walk found; a name outside the layout is the
    user's to fix, named by its path on disk."""
    try:
        return parse_mura_path(rel, level)
    except BadName as bad:
        problem = _WALK_PROBLEMS[bad.level].format(name=bad.name)
        raise MuraFormatError(f"{entry.path}: {problem}") from None


def _walk_split(folder: Path, split: str, skipped: list[tuple[str, str]]) -> list[MuraPath]:
    """Index one split's folder without CSVs (one `os.scandir` per folder, no `stat`)."""
    records: list[MuraPath] = []
    for part in _kept(str(folder / split), skipped, in_study=False):
        part_rel = _walked(part, f"{MURA_DIRNAME}/{split}/{part.name}", PART).rel_path
        for patient in _kept(part.path, skipped, in_study=False):
            patient_rel = _walked(patient, f"{part_rel}/{patient.name}", PATIENT).rel_path
            for study in _kept(patient.path, skipped, in_study=False):
                study_rel = _walked(study, f"{patient_rel}/{study.name}", STUDY).rel_path
                images = _kept(study.path, skipped, in_study=True)
                if not images:
                    skipped.append((study.path, SKIP_EMPTY_STUDY))
                records += [_walked(im, f"{study_rel}/{im.name}", IMAGE) for im in images]
    if not records:
        raise MuraFormatError(
            f"{folder / split}: holds no image (expected "
            f"XR_<PART>/patient<NNNNN>/study<N>_<label>/image<N>.png inside), so the {split} "
            "split is empty. Copy the images in, or remove the empty folder."
        )
    return records


# ---------------------------------------------------------------- the CSVs


def _read_csv_split(folder: Path, split: str, skipped: list[tuple[str, str]]) -> list[MuraPath]:
    """Read one split from its CSVs and check that every listed image exists on disk."""
    records, listed = read_split_csvs(folder, split)
    image_csv = folder / image_csv_name(split)
    if not (folder / split).is_dir():
        raise MuraFormatError(
            f"{image_csv}: lists {len(records)} images but the folder {folder / split} does "
            "not exist. Extract the images from the MURA-v1.1 archive next to the CSV files."
        )
    missing: list[str] = []
    for rel, names in listed.items():
        study_path = os.path.join(folder, *rel.split("/")[1:])
        try:
            on_disk = {entry.name for entry in _kept(study_path, skipped, in_study=True)}
        except (FileNotFoundError, NotADirectoryError):
            on_disk = set()
        missing += [f"{rel}/{name} (line {n})" for name, n in names.items() if name not in on_disk]
        for name in sorted(on_disk.difference(names)):
            skipped.append((os.path.join(study_path, name), SKIP_UNLISTED))
    if missing:
        raise MuraFormatError(
            f"{image_csv}: {len(missing)} of {len(records)} listed images are missing on disk: "
            f"{listing(missing)}. Re-extract the MURA-v1.1 archive, or delete the split's two "
            "CSV files to index only what is on disk."
        )
    return records


# ---------------------------------------------------------------- the frame


def _check_one_folder_per_study(folder: Path, records: list[MuraPath]) -> None:
    """Raise when two folders (e.g. study1_positive and study1_negative) are one study_id."""
    seen: dict[tuple, str] = {}
    for rec in records:
        key = (rec.split, rec.part, rec.patient_id, rec.study)
        other = seen.setdefault(key, rec.folder)
        if other != rec.folder:
            first, second = sorted((other, rec.folder))
            raise MuraFormatError(
                f"{folder}: {first}/ and {second}/ are the same study (same split, part, "
                "patient and study number), so its label is ambiguous. Keep one of the two "
                "folders (and its CSV lines)."
            )


def _build_frame(folder: Path, records: list[MuraPath]) -> pd.DataFrame:
    """The frame (see the module docstring) from image records in any order."""
    prefix_len = len(MURA_DIRNAME) + 1
    base = str(folder) + os.sep
    rel = [r.rel_path for r in records]
    path = [base + p[prefix_len:].replace("/", os.sep) for p in rel]
    frame = pd.DataFrame(
        {
            "path": path,
            "rel_path": rel,
            "split": [r.split for r in records],
            "body_part": [r.part for r in records],
            "patient_id": pd.array([r.patient_id for r in records], dtype="int64"),
            "study": pd.array([r.study for r in records], dtype="int64"),
            "study_id": [r.study_id for r in records],
            "view": pd.array([r.view for r in records], dtype="int64"),
            "label": pd.array([r.label for r in records], dtype="int64"),
        },
        columns=list(COLUMNS),
    )
    return frame.sort_values(SORT_KEYS, kind="stable", ignore_index=True)
