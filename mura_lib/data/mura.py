"""Index a MURA-v1.1 tree: one row per image, from the official CSVs or a walk of the folders.

:func:`read_mura` returns the image index frame of the project's contract (see
`.notes/CONTRACTS.md`); :func:`scan_mura` returns it together with a report of every file it
did not take and how it read each split::

    index = scan_mura("data_sample")      # the MURA-v1.1 folder or its parent
    index.frame                            # = read_mura("data_sample")
    index.skipped                          # DataFrame: path, reason (AppleDouble, hidden, ...)
    index.source                           # {"train": "csv", "valid": "csv"}

How a split is read. When both `{split}_image_paths.csv` and `{split}_labeled_studies.csv`
exist they are authoritative: every listed image must exist (checked with one `os.scandir`
per listed study folder; nothing is decoded), and PNG files in those study folders that the
CSV does not list are reported as skipped, not indexed. Study folders the CSV does not name
are not opened. Without the CSVs the split's folder is walked with `os.scandir`. Both give
the same frame for a tree that matches its CSVs.

What is never a row: macOS AppleDouble files (`._*`) and `__MACOSX` folders, hidden files,
non-PNG files, stray files outside study folders and folders inside study folders. They are
listed in `skipped`, never an error, because re-packaged copies of MURA are full of them.
What is an error (:class:`~mura_lib.errors.MuraFormatError`, naming the file or CSV line
and what to do): a folder that is not a MURA tree, a folder name outside the layout
(`xr_hand/` among body parts, `notes/` among patients, `study1/` without a label suffix), a
PNG in a study folder not named `image<N>.png`, a split with no images, a malformed or
inconsistent CSV, images listed but missing, and two folders for one study
(`study1_positive` and `study1_negative` of the same patient and part). Every `XR_<PART>`
folder is a body part, MURA's seven or not (see :mod:`mura_lib.data.mura_layout`).

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
from mura_lib.data.mura_csv import (
    image_csv_name,
    listing,
    read_split_csvs,
    study_csv_name,
)
from mura_lib.data.mura_layout import (
    IMAGE_NAME_RE,
    LABEL_OF_SUFFIX,
    MURA_DIRNAME,
    PATIENT_DIR_RE,
    SKIP_UNLISTED,
    STUDY_DIR_RE,
    ImageRecord,
    body_part_of,
    find_mura_root,
    skip_reason,
    study_rel,
)
from mura_lib.errors import MuraFormatError

logger = logging.getLogger(__name__)

COLUMNS = (
    "path", "rel_path", "split", "body_part", "patient_id", "study", "study_id", "view", "label"
)  # fmt: skip
SORT_KEYS = ["split", "body_part", "patient_id", "study", "view"]  # "train" < "valid"
SKIP_EMPTY_STUDY = "study folder without images"

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
    """

    root: Path
    frame: pd.DataFrame
    skipped: pd.DataFrame
    source: dict[str, str]


def read_mura(root: str | os.PathLike[str]) -> pd.DataFrame:
    """The image index frame of a MURA tree (see the module docstring and CONTRACTS.md).

    Args:
        root: the MURA-v1.1 folder or its parent.

    Raises:
        MuraFormatError: `root` is not a valid MURA tree; the message says what to fix.
    """
    return scan_mura(root).frame


def scan_mura(root: str | os.PathLike[str], source: Source = "auto") -> MuraIndex:
    """Index a MURA tree and report what was skipped.

    Args:
        root: the MURA-v1.1 folder or its parent.
        source: "auto" reads each split from its CSVs when both exist and walks it otherwise;
            "csv" requires the CSVs of every split present; "walk" ignores the CSVs.

    Raises:
        MuraFormatError: `root` is not a valid MURA tree; the message says what to fix.
    """
    if source not in ("auto", "csv", "walk"):
        raise ValueError(f"source must be 'auto', 'csv' or 'walk', not {source!r}")
    folder = find_mura_root(root)
    sources = _split_sources(folder, source)
    skipped: list[tuple[str, str]] = []
    records: list[ImageRecord] = []
    for split, how in sources.items():
        if how == "csv":
            records += _check_csv_split(folder, split, skipped)
        else:
            records += _walk_split(folder, split, skipped)
    _check_one_folder_per_study(folder, records)
    frame = _build_frame(folder, records)
    skipped_frame = pd.DataFrame(sorted(skipped), columns=["path", "reason"])
    if skipped:
        counts = Counter(reason for _, reason in skipped)
        logger.info("%s: skipped %d entries: %s", folder, len(skipped), dict(counts))
    return MuraIndex(root=folder, frame=frame, skipped=skipped_frame, source=sources)


def _split_sources(folder: Path, source: Source) -> dict[str, str]:
    """Decide, per split, whether to read its CSVs or walk its folder (absent splits left out)."""
    sources: dict[str, str] = {}
    for split in SPLITS:
        image_csv, study_csv = folder / image_csv_name(split), folder / study_csv_name(split)
        has_csv = (image_csv.is_file(), study_csv.is_file())
        has_dir = (folder / split).is_dir()
        if source == "walk":
            if has_dir:
                sources[split] = "walk"
        elif all(has_csv):
            sources[split] = "csv"
        elif any(has_csv):
            present, absent = (image_csv, study_csv) if has_csv[0] else (study_csv, image_csv)
            raise MuraFormatError(
                f"{present}: found without {absent.name}; a split's image list and study "
                "labels come as a pair. Restore the missing file from the MURA-v1.1 archive, "
                "or delete this one to index the folders."
            )
        elif has_dir and source == "csv":
            raise MuraFormatError(
                f"{folder}: no {image_csv.name} or {study_csv.name} for {split}/, and the CSV "
                "files were required. Restore them, or read the folders (source='auto')."
            )
        elif has_dir:
            sources[split] = "walk"
    if not sources:
        raise MuraFormatError(
            f"{folder}: neither train/ nor valid/ exists. Expected a MURA-v1.1 folder holding "
            "train/ and/or valid/; point to the folder unzipped from MURA-v1.1.zip."
        )
    return sources


def _study_pngs(study_path: str, skipped: list[tuple[str, str]]) -> list[str]:
    """Names of the PNG files of one study folder; every other entry goes to `skipped`."""
    names = []
    for entry in _entries(study_path):
        reason = skip_reason(entry.name, entry.is_dir(), in_study=True)
        if reason:
            skipped.append((entry.path, reason))
        else:
            names.append(entry.name)
    return names


def _subfolders(path: str, skipped: list[tuple[str, str]]) -> list[os.DirEntry[str]]:
    """The folders of a non-study folder of the tree; every other entry goes to `skipped`."""
    kept = []
    for entry in _entries(path):
        reason = skip_reason(entry.name, entry.is_dir(), in_study=False)
        if reason:
            skipped.append((entry.path, reason))
        else:
            kept.append(entry)
    return kept


def _entries(path: str) -> list[os.DirEntry[str]]:
    """`os.scandir` as a list; an unreadable folder is the user's to fix, not a traceback."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except PermissionError as err:
        raise MuraFormatError(
            f"{path}: cannot be read ({err.strerror}). Check the folder's permissions."
        ) from None


def _walk_split(folder: Path, split: str, skipped: list[tuple[str, str]]) -> list[ImageRecord]:
    """Index one split's folder without CSVs (one `os.scandir` per folder, no `stat`)."""
    records: list[ImageRecord] = []
    for part_entry in _subfolders(str(folder / split), skipped):
        part = body_part_of(part_entry.name, where=part_entry.path)
        for patient_entry in _subfolders(part_entry.path, skipped):
            pm = PATIENT_DIR_RE.fullmatch(patient_entry.name)
            if pm is None:
                raise MuraFormatError(
                    f"{patient_entry.path}: expected a patient folder named patient<NNNNN> "
                    f"in {part_entry.name}/. Remove or rename that folder."
                )
            for study_entry in _subfolders(patient_entry.path, skipped):
                sm = STUDY_DIR_RE.fullmatch(study_entry.name)
                if sm is None:
                    raise MuraFormatError(
                        f"{study_entry.path}: expected a study folder named "
                        "study<N>_positive or study<N>_negative (the suffix is the label). "
                        "Remove or rename that folder."
                    )
                names = _study_pngs(study_entry.path, skipped)
                rel = study_rel(split, part, patient_entry.name, study_entry.name)
                if not names:
                    skipped.append((study_entry.path, SKIP_EMPTY_STUDY))
                for name in names:
                    im = IMAGE_NAME_RE.fullmatch(name)
                    if im is None:
                        raise MuraFormatError(
                            f"{os.path.join(study_entry.path, name)}: a PNG not named "
                            "image<N>.png, so it has no view number. Rename or remove it."
                        )
                    records.append(ImageRecord(
                        split, part, int(pm[1]), int(sm[1]), LABEL_OF_SUFFIX[sm[2]], rel, name,
                        int(im[1]),
                    ))  # fmt: skip
    if not records:
        raise MuraFormatError(
            f"{folder / split}: holds no image (expected "
            f"XR_<PART>/patient<NNNNN>/study<N>_<label>/image<N>.png inside), so the {split} "
            "split is empty. Copy the images in, or remove the empty folder."
        )
    return records


def _check_csv_split(folder: Path, split: str, skipped: list[tuple[str, str]]) -> list[ImageRecord]:
    """Read one split from its CSVs and check that every listed image exists on disk."""
    records, lines = read_split_csvs(folder, split)
    image_csv = folder / image_csv_name(split)
    if not (folder / split).is_dir():
        raise MuraFormatError(
            f"{image_csv}: lists {len(records)} images but the folder {folder / split} does "
            "not exist. Extract the images from the MURA-v1.1 archive next to the CSV files."
        )
    by_study: dict[str, list[tuple[str, int]]] = {}
    for rec, line in zip(records, lines, strict=True):
        by_study.setdefault(rec.study_rel, []).append((rec.image_name, line))
    missing: list[str] = []
    base = str(folder)
    for rel, listed in by_study.items():
        study_path = os.path.join(base, *rel.split("/")[1:])
        try:
            on_disk = set(_study_pngs(study_path, skipped))
        except (FileNotFoundError, NotADirectoryError):
            on_disk = set()
        missing += [f"{rel}/{name} (line {n})" for name, n in listed if name not in on_disk]
        for name in sorted(on_disk.difference(name for name, _ in listed)):
            skipped.append((os.path.join(study_path, name), SKIP_UNLISTED))
    if missing:
        raise MuraFormatError(
            f"{image_csv}: {len(missing)} of {len(records)} listed images are missing on disk: "
            f"{listing(missing)}. Re-extract the MURA-v1.1 archive, or delete the split's two "
            "CSV files to index only what is on disk."
        )
    return records


def _check_one_folder_per_study(folder: Path, records: list[ImageRecord]) -> None:
    """Raise when two folders (e.g. study1_positive and study1_negative) are one study_id."""
    seen: dict[tuple[str, str, int, int], str] = {}
    for rec in records:
        key = (rec.split, rec.part, rec.patient_id, rec.study)
        other = seen.setdefault(key, rec.study_rel)
        if other != rec.study_rel:
            first, second = sorted((other, rec.study_rel))
            raise MuraFormatError(
                f"{folder}: {first}/ and {second}/ are the same study (same split, part, "
                "patient and study number), so its label is ambiguous. Keep one of the two "
                "folders (and its CSV lines)."
            )


def _build_frame(folder: Path, records: list[ImageRecord]) -> pd.DataFrame:
    """The contract's frame from records in any order (sorted here, RangeIndex)."""
    prefix_len = len(MURA_DIRNAME) + 1
    base = str(folder) + os.sep
    rel = [r.rel_path for r in records]
    if os.sep == "/":
        path = [base + p[prefix_len:] for p in rel]
    else:
        path = [base + p[prefix_len:].replace("/", os.sep) for p in rel]
    frame = pd.DataFrame(
        {
            "path": path,
            "rel_path": rel,
            "split": [r.split for r in records],
            "body_part": [r.part for r in records],
            "patient_id": pd.array([r.patient_id for r in records], dtype="int64"),
            "study": pd.array([r.study for r in records], dtype="int64"),
            "study_id": [
                f"{r.split}/{r.part}/patient{r.patient_id:05d}/study{r.study}" for r in records
            ],
            "view": pd.array([r.view for r in records], dtype="int64"),
            "label": pd.array([r.label for r in records], dtype="int64"),
        },
        columns=list(COLUMNS),
    )
    return frame.sort_values(SORT_KEYS, kind="stable", ignore_index=True)
