"""The MURA-v1.1 folder layout: where the tree is, what its names mean, what is not an image.

Both ways of indexing MURA (the official CSVs and a walk of the folders) go through the
functions here, so the two agree on every name they accept and every message they give.

The layout (paper and official CSVs)::

    MURA-v1.1/{train,valid}/XR_<PART>/patient<NNNNN>/study<N>_<positive|negative>/image<N>.png

Every `XR_<PART>` folder is a body part, PART in capitals, digits and underscores: MURA's seven
(:data:`~mura_lib.config.BODY_PARTS`) and any other a tree in this layout holds (LERA's
XR_FOOT, XR_KNEE, XR_ANKLE, XR_HIP). :func:`ordered_parts` gives every table and figure the
same order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from mura_lib.config import BODY_PARTS, SPLITS
from mura_lib.errors import MuraFormatError

# The first component of every path in the official CSVs. Rows keep it in `rel_path` even when
# the user's folder has another name, so rel_path always reads as in the official files.
MURA_DIRNAME = "MURA-v1.1"

# Reasons a file or folder is not a row; the `reason` column of the skipped-files report.
SKIP_APPLEDOUBLE = "AppleDouble file (macOS metadata, not an image)"
SKIP_HIDDEN = "hidden file"
SKIP_MACOSX = "__MACOSX folder (macOS metadata)"
SKIP_NOT_PNG = "not a PNG"
SKIP_STRAY_FILE = "file outside a study folder"
SKIP_FOLDER_IN_STUDY = "folder inside a study folder"
SKIP_UNLISTED = "PNG not listed in the split's image CSV"

# A body-part name, as the folder walk and the CSV paths both accept it.
_PART = r"[A-Z0-9_]+"
PART_DIR_RE = re.compile(rf"XR_({_PART})")
PART_DIR_RULE = "XR_<PART>, PART in capitals, digits and underscores (XR_WRIST, XR_KNEE)"
# Fast path: one regex per CSV line. Anything it rejects is diagnosed by `describe_bad_path`.
IMAGE_PATH_RE = re.compile(
    rf"{re.escape(MURA_DIRNAME)}/(train|valid)/XR_({_PART})/"
    r"(patient(\d+))/(study(\d+)_(positive|negative))/(image(\d+)\.png)"
)
STUDY_PATH_RE = re.compile(
    rf"{re.escape(MURA_DIRNAME)}/(train|valid)/XR_({_PART})/"
    r"(patient(\d+))/(study(\d+)_(positive|negative))/?"
)
PATIENT_DIR_RE = re.compile(r"patient(\d+)")
STUDY_DIR_RE = re.compile(r"study(\d+)_(positive|negative)")
IMAGE_NAME_RE = re.compile(r"image(\d+)\.png")

LABEL_OF_SUFFIX = {"positive": 1, "negative": 0}
EXPECTED_IMAGE_PATH = (
    f"{MURA_DIRNAME}/<train|valid>/XR_<PART>/patient<NNNNN>/study<N>_<positive|negative>/"
    "image<N>.png"
)


class ImageRecord(NamedTuple):
    """One image, as parsed from a CSV line or found by the walk (folder names kept verbatim)."""

    split: str
    part: str  # without XR_
    patient_id: int
    study: int
    label: int
    study_rel: str  # the study folder as the labeled-studies CSV names it, without the "/"
    image_name: str
    view: int

    @property
    def rel_path(self) -> str:
        return f"{self.study_rel}/{self.image_name}"


def study_rel(split: str, part: str, patient_dir: str, study_dir: str) -> str:
    """`MURA-v1.1/<split>/XR_<PART>/<patient_dir>/<study_dir>`, as in the official CSVs."""
    return f"{MURA_DIRNAME}/{split}/XR_{part}/{patient_dir}/{study_dir}"


def record_from_match(m: re.Match[str]) -> ImageRecord:
    """Build a record from a match of :data:`IMAGE_PATH_RE`."""
    return ImageRecord(
        split=m[1],
        part=m[2],
        patient_id=int(m[4]),
        study=int(m[6]),
        label=LABEL_OF_SUFFIX[m[7]],
        study_rel=m[0][: -len(m[8]) - 1],
        image_name=m[8],
        view=int(m[9]),
    )


def skip_reason(name: str, is_dir: bool, in_study: bool) -> str | None:
    """Why an entry of a MURA folder is not part of the data set, or None when it may be.

    Args:
        name: the entry's file name.
        is_dir: whether the entry is a folder.
        in_study: whether the entry sits inside a study folder (where images live).
    """
    if name.startswith("._"):
        return SKIP_APPLEDOUBLE
    if name == "__MACOSX":
        return SKIP_MACOSX
    if name.startswith("."):
        return SKIP_HIDDEN
    if in_study:
        if is_dir:
            return SKIP_FOLDER_IN_STUDY
        return None if name.lower().endswith(".png") else SKIP_NOT_PNG
    if not is_dir:
        return SKIP_NOT_PNG if not name.lower().endswith(".png") else SKIP_STRAY_FILE
    return None


def ordered_parts(names: Iterable[str]) -> list[str]:
    """The distinct body parts among `names`: MURA's in the paper's order, then others sorted.

    The one order of every per-part table, figure and metrics block, so that MURA's seven
    always read as in the paper and a tree with other parts (LERA's FOOT, KNEE ...) adds them
    after, in a stable order.
    """
    present = set(names)
    return [p for p in BODY_PARTS if p in present] + sorted(present.difference(BODY_PARTS))


def body_part_of(dirname: str, where: str) -> str:
    """The body part named by an `XR_<PART>` folder; raises for anything else."""
    m = PART_DIR_RE.fullmatch(dirname)
    if m:
        return m[1]
    raise MuraFormatError(
        f"{where}: {dirname!r} is not a body-part folder; expected {PART_DIR_RULE}. "
        "Remove or rename that folder."
    )


def describe_bad_path(text: str, expected_split: str, study_only: bool = False) -> str:
    """Explain, in words, why a CSV path is not a MURA path (used only on the slow error path)."""
    what = "study folder" if study_only else "image path"
    expected = EXPECTED_IMAGE_PATH.rsplit("/", 1)[0] + "/" if study_only else EXPECTED_IMAGE_PATH
    parts = text.split("/")
    if text.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", text) or ".." in parts:
        return (
            f"the path {text!r} escapes the MURA root (absolute or with '..'); paths must be "
            f"relative, like {expected}"
        )
    if not text:
        return f"empty {what}; expected {expected}"
    if parts[0] != MURA_DIRNAME:
        return f"{text!r} does not start with {MURA_DIRNAME}/; expected {expected}"
    if len(parts) > 1 and parts[1] != expected_split:
        return (
            f"{text!r} is not a {expected_split} path; expected {expected_split}/ after "
            f"{MURA_DIRNAME}/"
        )
    if len(parts) > 2 and not PART_DIR_RE.fullmatch(parts[2]):
        return f"{parts[2]!r} in {text!r} is not a body-part folder; expected {PART_DIR_RULE}"
    return f"{text!r} is not a MURA {what}; expected {expected}"


def _looks_like_mura(folder: Path) -> bool:
    return any((folder / s).is_dir() for s in SPLITS) or any(
        (folder / f"{s}_image_paths.csv").is_file() for s in SPLITS
    )


def find_mura_root(root: str | os.PathLike[str]) -> Path:
    """Return the absolute MURA-v1.1 folder, given that folder or its parent.

    A folder is taken as the MURA-v1.1 folder when it holds `train/` or `valid/` (or an
    official image CSV); its name does not matter. Symbolic links are kept as given.

    Raises:
        MuraFormatError: the folder does not exist or is not a MURA tree.
    """
    given = Path(root).expanduser()
    folder = Path(os.path.abspath(given))
    if not folder.exists():
        raise MuraFormatError(
            f"{folder}: no such folder. Pass the MURA-v1.1 folder unzipped from MURA-v1.1.zip, "
            "or its parent."
        )
    if not folder.is_dir():
        raise MuraFormatError(
            f"{folder}: is a file, not a folder. Pass the MURA-v1.1 folder or its parent."
        )
    if _looks_like_mura(folder):
        return folder
    if _looks_like_mura(folder / MURA_DIRNAME):
        return folder / MURA_DIRNAME
    if folder.name in SPLITS and _looks_like_mura(folder.parent):
        raise MuraFormatError(
            f"{folder}: is the {folder.name} split of a MURA tree; pass the MURA-v1.1 folder "
            f"above it ({folder.parent}), which holds both splits and the CSV files."
        )
    raise MuraFormatError(
        f"{folder}: not a MURA tree. Expected a MURA-v1.1 folder holding train/ and/or valid/ "
        "(with XR_<PART>/patient<NNNNN>/study<N>_<positive|negative>/image<N>.png inside) and "
        "optionally the official CSVs, or its parent. Point to the folder unzipped from "
        "MURA-v1.1.zip."
    )
