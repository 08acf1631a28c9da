"""Write a synthetic MURA-v1.1 tree: PNG files, the four official CSVs and a truth sidecar.

The tree is written into a temporary folder beside its destination and moved into place at
the end, so a reader never sees a half-written tree and an interrupted run leaves the old one
intact. The ground truth (kind, subtlety and box of each image's finding) goes to
``synthetic_truth.csv`` beside ``MURA-v1.1/``, where no MURA reader looks for it, and
``SYNTHETIC.txt`` inside ``MURA-v1.1/`` says what the tree is to anyone who copies the folder
alone (and to :func:`mura_lib.data.origin.is_synthetic`, which a checkpoint's record of its
training data relies on).
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from PIL import Image

from mura_lib.data.origin import SYNTHETIC_MARKER, TRUTH_NAME
from mura_lib.errors import MuraError
from mura_lib.synthetic.profiles import (
    FILE_ORDER,
    PartCounts,
    Profile,
    get_profile,
    plan_studies,
    subset_of_studies,
)
from mura_lib.synthetic.study import Look, StudySpec, View, render_study

ROOT_NAME = "MURA-v1.1"
TRUTH_COLUMNS = (
    "rel_path",
    "label",
    "kind",
    "visible",
    "subtlety",
    "x0",
    "y0",
    "x1",
    "y1",
    "projection",
    "child",
    "cast",
)


def study_dir(spec: StudySpec) -> str:
    """Relative folder of a study, as the official CSVs write it (with a trailing slash)."""
    status = "positive" if spec.label else "negative"
    return (
        f"{ROOT_NAME}/{spec.split}/XR_{spec.part}/patient{spec.patient:05d}/"
        f"study{spec.study}_{status}/"
    )


def _save_png(pixels: np.ndarray, mode: str, path: Path, optimize: bool) -> None:
    # RGB files hold the grey image three times, as some MURA files do.
    data = np.repeat(pixels[:, :, None], 3, axis=2) if mode == "RGB" else pixels
    Image.fromarray(data, mode).save(path, optimize=optimize)


def _truth_row(rel_path: str, label: int, v: View) -> list[str]:
    box = [str(c) for c in v.box] if v.box else ["", "", "", ""]
    subtlety = "" if v.subtlety is None else f"{v.subtlety:.3f}"
    return [
        rel_path,
        str(label),
        v.kind,
        str(int(v.visible)),
        subtlety,
        *box,
        v.projection,
        str(int(v.child)),
        str(int(v.cast)),
    ]


def _write_studies(specs: list[StudySpec], tmp: Path, seed: int, look: Look) -> list[list[str]]:
    """Render and save a batch of studies (one joblib task); returns their truth rows."""
    rows = []
    for spec in specs:
        rel_dir = study_dir(spec)
        folder = tmp / rel_dir.removeprefix(ROOT_NAME + "/")
        folder.mkdir(parents=True, exist_ok=True)
        for i, view in enumerate(render_study(spec, seed, look), start=1):
            _save_png(view.pixels, view.mode, folder / f"image{i}.png", look.png_optimize)
            rows.append(_truth_row(f"{rel_dir}image{i}.png", spec.label, view))
    return rows


def _check_destination(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise MuraError(f"{root} exists and is not a folder: remove it or choose another --out")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise MuraError(
            f"{root} already exists and is not empty: pass overwrite=True (command line: "
            f"--overwrite) to replace it, or choose another output folder"
        )


def _write_csvs(tmp: Path, specs: list[StudySpec], truth: list[list[str]]) -> None:
    """The four official index files: headerless, LF line ends, train first."""
    for split in ("train", "valid"):
        studies = [s for s in specs if s.split == split]
        images = [row[0] for row in truth if row[0].startswith(f"{ROOT_NAME}/{split}/")]
        with open(tmp / f"{split}_image_paths.csv", "w", newline="\n") as f:
            f.writelines(f"{p}\n" for p in images)
        with open(tmp / f"{split}_labeled_studies.csv", "w", newline="\n") as f:
            f.writelines(f"{study_dir(s)},{s.label}\n" for s in studies)


def _write_marker(tmp: Path, profile: Profile, seed: int) -> None:
    """SYNTHETIC.txt: the same bytes for the same profile and seed, like every other file."""
    text = (
        f"Synthetic films drawn by mura_lib.synthetic (profile {profile.name}, seed {seed}) in\n"
        "the MURA-v1.1 layout. They are not radiographs: a model trained on them says nothing\n"
        f"about real patients. The ground truth of each film is in {TRUTH_NAME} beside\n"
        "this folder.\n"
    )
    with open(tmp / SYNTHETIC_MARKER, "w", newline="\n") as f:
        f.write(text)


def _swap_into_place(tmp: Path, root: Path) -> None:
    """Replace `root` by `tmp` with two renames (the old tree is removed afterwards)."""
    old = None
    if root.exists():
        old = root.with_name(f".{ROOT_NAME}.old-{os.getpid()}")
        root.rename(old)
    tmp.rename(root)
    if old is not None:
        shutil.rmtree(old)


def _write_tree(
    out_dir: Path,
    profile: Profile,
    seed: int,
    n_jobs: int,
    overwrite: bool,
    n_images: int | None = None,
) -> Path:
    root = out_dir / ROOT_NAME
    _check_destination(root, overwrite)
    specs = plan_studies(profile, seed)
    if n_images is not None:
        specs = subset_of_studies(specs, n_images, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ROOT_NAME}.tmp-", dir=out_dir))
    try:
        # Small batches keep both workers busy; the order of the results follows `specs`.
        n_batches = max(1, min(len(specs), 64 * max(1, abs(n_jobs))))
        batches = [b.tolist() for b in np.array_split(np.array(specs, dtype=object), n_batches)]
        results = Parallel(n_jobs=n_jobs)(
            delayed(_write_studies)(batch, tmp, seed, profile.look) for batch in batches if batch
        )
        truth = [row for rows in results for row in rows]
        _write_csvs(tmp, specs, truth)
        _write_marker(tmp, profile, seed)
        truth_tmp = out_dir / f".{TRUTH_NAME}.tmp"
        with open(truth_tmp, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(TRUTH_COLUMNS)
            writer.writerows(truth)
        _swap_into_place(tmp, root)
        os.replace(truth_tmp, out_dir / TRUTH_NAME)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def write_mura_tree(
    out_dir: str | Path,
    profile: str | Profile = "sample",
    seed: int = 0,
    n_jobs: int = 2,
    overwrite: bool = False,
    anatomy: bool | None = None,
    full_size: bool = False,
    n_images: int | None = None,
) -> Path:
    """Write a synthetic tree in the MURA-v1.1 layout and return its ``MURA-v1.1`` folder.

    Args:
        out_dir: parent folder; receives ``MURA-v1.1/`` and ``synthetic_truth.csv``.
        profile: "sample" (the committed sample), "table1" (MURA's exact counts, for reader
            timings) or a :class:`~mura_lib.synthetic.profiles.Profile` (tests use small ones).
        seed: same seed, same pixels, whatever `n_jobs`.
        n_jobs: joblib workers (-1: all cores).
        overwrite: replace an existing non-empty ``MURA-v1.1`` (atomically) instead of failing.
        anatomy: for "table1", draw real anatomy instead of 32-pixel placeholder films.
        full_size: for "table1", MURA-sized films with anatomy (long side 512 px).
        n_images: only a subset of about this many films, whole patients, each split its
            share (:func:`~mura_lib.synthetic.profiles.subset_of_studies`); its films are
            those of the same studies in the whole tree.

    Raises:
        MuraError: the destination exists and `overwrite` is False.
        ConfigError: unknown profile name or impossible counts.
    """
    resolved = get_profile(profile, anatomy, full_size)
    return _write_tree(Path(out_dir), resolved, seed, n_jobs, overwrite, n_images)


def benchmark_profile(n_images: int) -> Profile:
    """A train-only profile of `n_images` MURA-sized films (long side 512, aspect 0.2-1)."""
    if n_images < 1:
        raise MuraError(f"n_images must be at least 1, got {n_images}")
    per_part = np.diff(np.linspace(0, n_images, len(FILE_ORDER) + 1).round().astype(int))
    counts = {}
    for part, images in zip(FILE_ORDER, per_part, strict=True):
        studies = int(min(images, max(1 if images else 0, round(images / 2.5))))
        abnormal = int(round(studies * 0.4))
        counts[("train", part)] = PartCounts(studies - abnormal, abnormal, int(images))
    look = Look((512, 512), aspect=(0.2, 1.0), rgb_fraction=0.2)
    return Profile("benchmark", counts, look)


def write_benchmark_images(
    out_dir: str | Path, n_images: int, seed: int = 0, n_jobs: int = 2, overwrite: bool = True
) -> Path:
    """Write a train-only tree of `n_images` MURA-sized films for the loader benchmark.

    Films have a long side of 512 px, short/long ratios from 0.2 to 1 (MURA has 512x108),
    about 20 % RGB, and real anatomy, so decoding and resizing cost what they cost on MURA.
    The valid CSVs exist but are empty. Returns the ``MURA-v1.1`` folder.
    """
    profile = benchmark_profile(n_images)
    return _write_tree(Path(out_dir), replace(profile, max_views=4), seed, n_jobs, overwrite)
