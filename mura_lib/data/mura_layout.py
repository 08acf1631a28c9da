"""The MURA-v1.1 folder layout: where the tree is, what its names mean, what is not an image.

The layout (paper and official CSVs)::

    MURA-v1.1/{train,valid}/XR_<PART>/patient<NNNNN>/study<N>_<positive|negative>/image<N>.png

:func:`parse_mura_path` is the one parser of that layout: every path of the official CSVs
(:mod:`mura_lib.data.mura_csv`) and every folder and file of the walk (:mod:`mura_lib.data.mura`)
goes through it, so the two ways of reading a split accept exactly the same names.

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

# The levels of a relative path, as indices of its "/"-separated names.
ROOT, SPLIT, PART, PATIENT, STUDY, IMAGE = range(6)
_LEVEL_RES = (
    re.compile(re.escape(MURA_DIRNAME)),
    re.compile(r"train|valid"),
    re.compile(r"XR_([A-Z0-9_]+)"),
    re.compile(r"patient(\d+)"),
    re.compile(r"study(\d+)_(positive|negative)"),
    re.compile(r"image(\d+)\.png"),
)
PART_DIR_RULE = "XR_<PART>, PART in capitals, digits and underscores (XR_WRIST, XR_KNEE)"
EXPECTED_IMAGE_PATH = (
    f"{MURA_DIRNAME}/<train|valid>/XR_<PART>/patient<NNNNN>/study<N>_<positive|negative>/"
    "image<N>.png"
)
LABEL_OF_SUFFIX = {"positive": 1, "negative": 0}


class BadName(ValueError):
    """A relative path breaks the layout at `level`; `name` is the name found there ("" when
    the path stops above that level). Each reader words it for its user: a CSV line, a folder."""

    def __init__(self, level: int, name: str) -> None:
        super().__init__(level, name)
        self.level, self.name = level, name


class MuraPath(NamedTuple):
    """What a relative path of the layout names, down to its last level (None below it)."""

    rel_path: str  # as in the official CSVs: MURA-v1.1/<split>/...
    split: str
    part: str | None = None  # without XR_
    patient_id: int | None = None
    study: int | None = None
    label: int | None = None  # from the study folder's _positive / _negative suffix
    view: int | None = None

    @property
    def folder(self) -> str:
        """The folder holding what the path names (for an image: its study folder)."""
        return self.rel_path.rpartition("/")[0]

    @property
    def study_id(self) -> str:
        """The study's `study_id` (`train/ELBOW/patient00001/study1`): split, part, patient and
        study number, without the label suffix, so that it names the study whatever its label."""
        return f"{self.split}/{self.part}/patient{self.patient_id:05d}/study{self.study}"


def image_csv_name(split: str) -> str:
    return f"{split}_image_paths.csv"


def study_csv_name(split: str) -> str:
    return f"{split}_labeled_studies.csv"


def parse_mura_path(rel: str, level: int = IMAGE) -> MuraPath:
    """Parse `rel`, a relative path from MURA-v1.1 down to `level` exactly.

    Raises:
        BadName: the first name that breaks the layout, or the path is shorter or longer.
    """
    names = rel.split("/")
    found: list[re.Match[str] | None] = []
    for i, name in enumerate(names[: level + 1]):
        m = _LEVEL_RES[i].fullmatch(name)
        if m is None:
            raise BadName(i, name)
        found.append(m)
    if len(names) <= level:
        raise BadName(len(names), "")
    if len(names) > level + 1:
        raise BadName(level + 1, names[level + 1])
    split, part, patient, study, image = found[SPLIT:] + [None] * (IMAGE - level)
    return MuraPath(
        rel_path=rel,
        split=split[0],
        part=part and part[1],
        patient_id=patient and int(patient[1]),
        study=study and int(study[1]),
        label=study and LABEL_OF_SUFFIX[study[2]],
        view=image and int(image[1]),
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


def _looks_like_mura(folder: Path) -> bool:
    return any((folder / s).is_dir() for s in SPLITS) or any(
        (folder / image_csv_name(s)).is_file() for s in SPLITS
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
