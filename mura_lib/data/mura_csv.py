"""Parse the official MURA index files of one split, with line-exact error messages.

Each split has two CSV files in the MURA-v1.1 folder:

- `{split}_image_paths.csv`: one image path a line,
  e.g. `MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png`;
- `{split}_labeled_studies.csv`: a study folder and its label a line,
  e.g. `MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/,1`.

The official copies have no header and LF line ends; copies found on the web sometimes add a
header row (`Img_Path` / `Img_Path,Label`), CRLF line ends or a UTF-8 byte-order mark, and all
of those are accepted. Blank lines are ignored. Every path goes through the layout's parser
(:func:`~mura_lib.data.mura_layout.parse_mura_path`), the one the folder walk uses too.
Everything that is not a MURA path of the split (another split, a body-part folder not named
`XR_<PART>`, `..`, an absolute path), a label that contradicts the study folder's
`_positive`/`_negative` suffix, a duplicate, or two files that disagree raises
:class:`~mura_lib.errors.MuraFormatError` naming the file and line.

Whether the listed files exist is checked by :mod:`mura_lib.data.mura`, which owns the disk.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from mura_lib.data.mura_layout import (
    EXPECTED_IMAGE_PATH,
    IMAGE,
    MURA_DIRNAME,
    PART,
    PART_DIR_RULE,
    ROOT,
    SPLIT,
    STUDY,
    BadName,
    MuraPath,
    image_csv_name,
    parse_mura_path,
    study_csv_name,
)
from mura_lib.errors import MuraFormatError

# First fields that mark a header row. Only known names: a header that is really a mistyped
# path should fail as a bad path, not vanish silently.
_HEADER_NAMES = {"img_path", "image_path", "path", "study", "study_path"}
_FIX_LINE = "Fix or delete that line, or delete the split's two CSV files to index the folders."
_FIX_FILE = "Restore the file from the MURA-v1.1 archive, or delete the split's two CSV files."
# How many offending entries a message lists before saying "and N more".
MAX_LISTED = 5


def listing(items: list[str], total: int | None = None) -> str:
    """`a, b, c and 7 more`: the first few offending entries for a one-line message."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:MAX_LISTED])
    return shown if total <= MAX_LISTED else f"{shown} and {total - MAX_LISTED} more"


def _rows(
    path: Path, fix_file: str = _FIX_FILE, fix_line: str = _FIX_LINE
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, stripped fields) for each non-blank row, without a header row.

    ``fix_file`` and ``fix_line`` say what to do about a bad file or line: the index files and
    the label files of :mod:`mura_lib.data.labels` are mended differently.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            first = True
            for fields in reader:
                fields = [x.strip() for x in fields]
                if not any(fields):
                    continue
                if first and fields[0].lower() in _HEADER_NAMES:
                    first = False
                    continue
                first = False
                yield reader.line_num, fields
    except UnicodeDecodeError as err:
        raise MuraFormatError(
            f"{path}: not a UTF-8 text CSV ({err.reason} at byte {err.start}). {fix_file}"
        ) from None
    except PermissionError as err:
        raise MuraFormatError(
            f"{path}: cannot be read ({err.strerror}). Check the file's permissions."
        ) from None
    except csv.Error as err:
        raise MuraFormatError(f"{path}: unreadable CSV ({err}). {fix_line}") from None


def _fields(
    path: Path, line: int, fields: list[str], n: int, what: str, fix_line: str = _FIX_LINE
) -> list[str]:
    """The row's fields, after checking there are exactly `n` (trailing empty ones allowed)."""
    while len(fields) > n and not fields[-1]:
        fields = fields[:-1]
    if len(fields) != n:
        raise MuraFormatError(
            f"{path}, line {line}: expected {what}, found {len(fields)} fields "
            f"({','.join(fields)!r}). {fix_line}"
        )
    return fields


def _listed(
    path: Path, line: int, text: str, split: str, level: int, fix_line: str = _FIX_LINE
) -> MuraPath:
    """Parse a path a CSV line lists: a path of this split down to `level`, or an error."""
    try:
        parsed = parse_mura_path(text, level)
        if parsed.split != split:
            raise BadName(SPLIT, parsed.split)
        return parsed
    except BadName as bad:
        problem = _listed_problem(text, split, level, bad)
    raise MuraFormatError(f"{path}, line {line}: {problem}. {fix_line}")


def _listed_problem(text: str, split: str, level: int, bad: BadName) -> str:
    """Why a CSV path is not a MURA path, in words."""
    what, expected = "image path", EXPECTED_IMAGE_PATH
    if level == STUDY:
        what, expected = "study folder", EXPECTED_IMAGE_PATH.rsplit("/", 1)[0] + "/"
    if text.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", text) or ".." in text.split("/"):
        return (
            f"the path {text!r} escapes the MURA root (absolute or with '..'); paths must be "
            f"relative, like {expected}"
        )
    if bad.level == ROOT:
        return f"{text!r} does not start with {MURA_DIRNAME}/; expected {expected}"
    if bad.level == SPLIT:
        return f"{text!r} is not a {split} path; expected {split}/ after {MURA_DIRNAME}/"
    if bad.level == PART:
        return f"{bad.name!r} in {text!r} is not a body-part folder; expected {PART_DIR_RULE}"
    return f"{text!r} is not a MURA {what}; expected {expected}"


def read_image_csv(path: Path, split: str) -> tuple[list[MuraPath], dict[str, dict[str, int]]]:
    """Parse `{split}_image_paths.csv`.

    Returns:
        The images in file order, and the listed studies: {study folder: {image file name:
        line number}}.

    Raises:
        MuraFormatError: a line is not a MURA image path of this split, or is listed twice.
    """
    records: list[MuraPath] = []
    listed: dict[str, dict[str, int]] = {}
    for line, fields in _rows(path):
        (text,) = _fields(path, line, fields, 1, "one image path a line")
        records.append(_listed(path, line, text, split, IMAGE))
        study, _, name = text.rpartition("/")
        names = listed.setdefault(study, {})
        if name in names:
            raise MuraFormatError(
                f"{path}, line {line}: {text} is listed twice (first at line "
                f"{names[name]}). {_FIX_LINE}"
            )
        names[name] = line
    return records, listed


def labeled_study_rows(
    path: Path, split: str, fix_file: str = _FIX_FILE, fix_line: str = _FIX_LINE
) -> Iterator[tuple[int, MuraPath, int]]:
    """Yield (line number, study folder, label) for each row of a `{split}_labeled_studies.csv`.

    The row's label is returned as written: whether it may differ from the folder's suffix is
    the caller's rule (the tree's own file: never; a relabelled copy: that is its purpose).

    Raises:
        MuraFormatError: a line is not `<study folder>,<0|1>` of this split.
    """
    for line, fields in _rows(path, fix_file, fix_line):
        text, label_text = _fields(path, line, fields, 2, "'<study folder>,<label>'", fix_line)
        study = _listed(path, line, text.removesuffix("/"), split, STUDY, fix_line)
        if label_text not in ("0", "1"):
            raise MuraFormatError(
                f"{path}, line {line}: label {label_text!r} is not 0 (normal) or 1 (abnormal). "
                f"{fix_line}"
            )
        yield line, study, int(label_text)


def read_study_csv(path: Path, split: str) -> dict[str, int]:
    """Parse `{split}_labeled_studies.csv` into {study folder without '/': line number}.

    A label must be the one the folder's suffix gives, so the images take theirs from their
    path, and this file only says which studies there are.

    Raises:
        MuraFormatError: a line is not `<study folder>,<0|1>` of this split, its label
            contradicts the folder's `_positive`/`_negative` suffix, or it is listed twice.
    """
    studies: dict[str, int] = {}
    for line, study, label in labeled_study_rows(path, split):
        key = study.rel_path
        if label != study.label:
            folder = key.rpartition("/")[2]
            raise MuraFormatError(
                f"{path}, line {line}: label {label} contradicts the folder name "
                f"{folder!r} (_{folder.rpartition('_')[2]} means {study.label}). The folder "
                "suffix is MURA's label: correct the CSV line, or delete the split's two CSV "
                "files to index the folders."
            )
        if key in studies:
            raise MuraFormatError(
                f"{path}, line {line}: study {key}/ is listed twice (first at line "
                f"{studies[key]}). {_FIX_LINE}"
            )
        studies[key] = line
    return studies


def read_split_csvs(folder: Path, split: str) -> tuple[list[MuraPath], dict[str, dict[str, int]]]:
    """Parse and cross-check one split's two CSV files.

    Every listed image must belong to a labeled study and every labeled study must have at
    least one listed image: a study without images or an image without a label means the two
    files come from different copies, and guessing which one is right would hide that.

    Returns:
        What :func:`read_image_csv` returns.

    Raises:
        MuraFormatError: a malformed line, an empty file, or the two files disagree.
    """
    image_csv, study_csv = folder / image_csv_name(split), folder / study_csv_name(split)
    records, listed = read_image_csv(image_csv, split)
    studies = read_study_csv(study_csv, split)
    if not records:
        raise MuraFormatError(
            f"{image_csv}: lists no images, so the {split} split is empty. Restore the file "
            "from the MURA-v1.1 archive, or delete the split's two CSV files to index the folders."
        )
    unlabeled = [s for s in listed if s not in studies]
    if unlabeled:
        shown = [f"{s}/ (line {min(listed[s].values())})" for s in unlabeled[:MAX_LISTED]]
        raise MuraFormatError(
            f"{image_csv}: {len(unlabeled)} listed images belong to studies missing from "
            f"{study_csv.name}: {listing(shown, len(unlabeled))}. The two CSV files do not "
            "match: restore both from the same MURA-v1.1 archive, or delete both to index the "
            "folders."
        )
    imageless = [s for s in studies if s not in listed]
    if imageless:
        shown = [f"{s}/ (line {studies[s]})" for s in imageless[:MAX_LISTED]]
        raise MuraFormatError(
            f"{study_csv}: {len(imageless)} labeled studies have no images in "
            f"{image_csv.name}: {listing(shown, len(imageless))}. The two CSV files do not "
            "match: restore both from the same MURA-v1.1 archive, or delete both to index the "
            "folders."
        )
    return records, listed
