"""Numbers that describe a MURA tree as it is: sizes, modes, views, patients, intensities.

The EDA notebook (`notebooks/01_eda.ipynb`) calls these functions on the image index frame of
:func:`mura_lib.data.read_mura`; the figures that show their results are in
:mod:`mura_lib.reports.eda_figures`. Counts per split, part and label are
:func:`mura_lib.data.describe.count_table`, not repeated here.

Cost matters on the real data (40,005 images): :func:`image_sizes` reads PNG headers only (no
pixel is decoded), and :func:`intensity_histograms` decodes a capped random sample.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import joblib
import numpy as np
import pandas as pd
from PIL import Image

from mura_lib.data.describe import PAPER_TABLE1, study_table, table1_counts
from mura_lib.data.images import read_gray
from mura_lib.data.mura_layout import ordered_parts
from mura_lib.errors import ImageReadError

_HEADER_COLUMNS = ("width", "height", "mode", "file_bytes", "error")
_RANGE = ("min", "max")
_SIZE_STATS = {"width": _RANGE, "height": _RANGE, "aspect": ("min", "median", "max")}
T = TypeVar("T")


def table1_side_by_side(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's counts and the paper's Table 1 next to each other, count by count.

    Columns are (count, source) pairs in Table 1's order, source "this tree" or "paper".
    """
    table = pd.concat({"this tree": table1_counts(frame), "paper": PAPER_TABLE1}, axis=1)
    table = table.swaplevel(axis=1)[PAPER_TABLE1.columns]
    table.columns.names = ["count", "source"]
    return table


def _map(function: Callable[[str], T], paths: list[str], n_jobs: int) -> list[T]:
    """``function`` of every path, in order: in this process when ``n_jobs`` is 1, else in
    joblib workers, which batch the paths themselves so that pickling stays small."""
    if n_jobs == 1:
        return [function(path) for path in paths]
    return joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(function)(path) for path in paths)


# -- image headers ---------------------------------------------------------------------------


def _read_header(path: str) -> tuple[int, int, str, int, str]:
    """The values of :data:`_HEADER_COLUMNS` of one file, from its header only.

    `Image.open` parses the PNG chunks up to the image data and stops: the size and mode are
    known without decoding a pixel, which is what makes this fast on 40k files.
    """
    try:
        n_bytes = os.stat(path).st_size
        with Image.open(path) as image:
            width, height = image.size
            return width, height, image.mode, n_bytes, ""
    except (OSError, SyntaxError, ValueError) as err:
        # Unreadable headers are a finding of the EDA, not a reason to stop it.
        return 0, 0, "", 0, f"{type(err).__name__}: {err}"


def image_sizes(frame: pd.DataFrame, n_jobs: int = 1) -> pd.DataFrame:
    """Width, height, mode and file size of every image, read from the PNG headers.

    Args:
        frame: an image index frame (needs path, split, body_part, label).
        n_jobs: worker processes (joblib; -1 = all cores). 1 reads in this process: about
            6 s for 40k files on a local disk, faster than starting workers; workers only
            pay off on a slow (network) disk.

    Returns:
        A DataFrame with the index of `frame` and columns path, split, body_part, label, width,
        height, mode (Pillow's: "L" 8-bit gray, "RGB", "I;16" 16-bit gray ...), aspect
        (width / height: below 1 is portrait), file_bytes and error ("" when the header was
        read; else the reason, and width = height = 0, aspect NaN).
    """
    rows = _map(_read_header, frame["path"].astype(str).tolist(), n_jobs)
    sizes = pd.DataFrame(rows, columns=[*_HEADER_COLUMNS], index=frame.index)
    sizes = sizes.astype({"width": "int64", "height": "int64", "file_bytes": "int64"})
    ok = sizes["height"] > 0
    sizes["aspect"] = np.where(ok, sizes["width"] / sizes["height"].where(ok, 1), np.nan)
    meta = frame[["path", "split", "body_part", "label"]]
    order = [*meta.columns, "width", "height", "mode", "aspect", "file_bytes", "error"]
    return pd.concat([meta, sizes], axis=1)[order]


def size_summary(sizes: pd.DataFrame) -> pd.DataFrame:
    """Per body part (and "all"): image count, width and height ranges, aspect ratio (min,
    median, max), share of portrait images and of images whose long side is 512 pixels.

    Images whose header could not be read are left out and counted in `n_unreadable`.
    """
    groups = [(p, sizes[sizes["body_part"] == p]) for p in ordered_parts(sizes["body_part"])]
    rows = {}
    for name, rows_ in [*groups, ("all", sizes)]:
        ok = rows_[rows_["error"] == ""]
        long_side = np.maximum(ok["width"], ok["height"])
        stats = {"n_images": len(rows_), "n_unreadable": int((rows_["error"] != "").sum())}
        for column, hows in _SIZE_STATS.items():
            stats.update({f"{column}_{how}": ok[column].agg(how) for how in hows})
        stats["portrait_share"] = (ok["aspect"] < 1).mean()
        stats["long_512_share"] = (long_side == 512).mean()
        rows[name] = stats
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "body_part"
    return out


def mode_counts(sizes: pd.DataFrame) -> pd.DataFrame:
    """Images per body part (rows, then "all") and Pillow mode (columns, "?" = unreadable)."""
    modes = sizes["mode"].replace("", "?")
    table = pd.crosstab(sizes["body_part"], modes)
    table = table.reindex(ordered_parts(sizes["body_part"]))
    table.loc["all"] = table.sum()
    table.columns.name = "mode"
    return table


# -- studies and patients --------------------------------------------------------------------


def views_per_study(frame: pd.DataFrame) -> pd.DataFrame:
    """Studies per body part (rows, then "all") and number of views (columns 1..max)."""
    studies = study_table(frame)
    table = pd.crosstab(studies["body_part"], studies["n_views"])
    table = table.reindex(
        index=ordered_parts(frame["body_part"]), columns=range(1, table.columns.max() + 1)
    )
    table = table.fillna(0).astype("int64")
    table.loc["all"] = table.sum()
    table.columns.name = "views"
    return table


def patient_parts(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, patient): parts seen ("ELBOW+WRIST"), n_parts, n_studies, n_images."""
    order = {p: i for i, p in enumerate(ordered_parts(frame["body_part"]))}
    grouped = frame.groupby(["split", "patient_id"], sort=True)
    out = grouped.agg(
        n_studies=("study_id", "nunique"),
        n_images=("path", "size"),
        n_parts=("body_part", "nunique"),
    )
    parts = grouped["body_part"].agg(lambda s: "+".join(sorted(set(s), key=order.__getitem__)))
    out.insert(0, "parts", parts)
    return out.reset_index()


def patients_across_parts(frame: pd.DataFrame) -> pd.DataFrame:
    """How many patients are seen under one, two, three ... body parts, per split.

    Returns:
        A DataFrame indexed by split with one integer column per number of parts (1, 2, ...),
        then n_patients, multi_part (patients under 2+ parts), multi_part_share and
        multi_part_images (the images of those patients: what a split by part would leak).
    """
    patients = patient_parts(frame)
    table = pd.crosstab(patients["split"], patients["n_parts"])
    table = table.reindex(columns=range(1, int(table.columns.max()) + 1), fill_value=0)
    multi = patients[patients["n_parts"] > 1]
    table["n_patients"] = patients.groupby("split").size()
    table["multi_part"] = multi.groupby("split").size().reindex(table.index, fill_value=0)
    table["multi_part_share"] = table["multi_part"] / table["n_patients"]
    images = multi.groupby("split")["n_images"].sum()
    table["multi_part_images"] = images.reindex(table.index, fill_value=0)
    table.columns.name = None
    return table


def part_cooccurrence(frame: pd.DataFrame) -> pd.DataFrame:
    """Patients seen under both parts A and B (symmetric, parts in the paper's order).

    The diagonal holds the patients of each part, so a row read across says where that part's
    patients also appear.
    """
    parts = ordered_parts(frame["body_part"])
    membership = pd.crosstab(frame["patient_id"].astype(str) + frame["split"], frame["body_part"])
    membership = (membership.reindex(columns=parts, fill_value=0) > 0).astype("int64")
    matrix = membership.T @ membership
    matrix.index.name = matrix.columns.name = "body_part"
    return matrix


def split_leakage(frame: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Patients that end up on both sides of a train/val split of official train, per strategy.

    Three ways to carve `val_fraction` of the studies out of official train: at random by
    study, by patient within each body part (a patient's wrist may go to val and his hand to
    train), and :func:`~mura_lib.data.split_by_patient` (by patient across parts).

    Returns:
        A DataFrame indexed by strategy with val_studies_share, patients_both_sides and
        val_images_leaked (val images of a patient who also has train images).
    """
    from mura_lib.data.splits import split_by_patient

    train = frame[frame["split"] == "train"]
    rng = np.random.default_rng(seed)

    def pick(keys: pd.Series) -> np.ndarray:
        unique = keys.unique()
        chosen = rng.choice(unique, size=max(1, round(val_fraction * len(unique))), replace=False)
        return keys.isin(chosen).to_numpy()

    part_patient = train["body_part"] + ":" + train["patient_id"].astype(str)
    in_val = {
        "random studies": pick(train["study_id"]),
        "patients within each part": pick(part_patient),
        "patients across parts (split_by_patient)": (
            split_by_patient(train, val_fraction, seed)["subset"] == "val"
        ).to_numpy(),
    }
    rows = {}
    for name, val in in_val.items():
        pid = train["patient_id"].to_numpy()
        both = np.intersect1d(pid[val], pid[~val])
        rows[name] = {
            "val_studies_share": train.loc[val, "study_id"].nunique() / train["study_id"].nunique(),
            "patients_both_sides": len(both),
            "val_images_leaked": int(np.isin(pid[val], both).sum()),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("split by")


# -- pixels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensitySample:
    """Gray-level histograms of a random sample of decoded images.

    Attributes:
        histograms: index 0..255 (gray level), one column per group (body part, or "all"):
            the share of the group's pixels at that level. Every pixel counts, the black
            background and letterbox bars of the films included.
        images: one row per sampled image: path, split, body_part, label, height, width, mean,
            std, black_share (pixels == 0), white_share (pixels == 255), warning (truncated
            file) and error (unreadable file, whose statistics are NaN).
        note: a sentence saying what was sampled and what was left out, for the notebook.
    """

    histograms: pd.DataFrame
    images: pd.DataFrame
    note: str


_STAT_COLUMNS = ["height", "width", "mean", "std", "black_share", "white_share", "warning", "error"]


def _gray_stats(path: str) -> tuple[np.ndarray, dict]:
    """Histogram (256 counts) and summary of one decoded image; unreadable ones count zero."""
    try:
        gray, warning = read_gray(path)
    except ImageReadError as err:
        empty = dict.fromkeys(_STAT_COLUMNS[:-2], np.nan)
        error = str(err).removeprefix(f"{path}: ")  # the path has its own column
        return np.zeros(256, dtype=np.int64), {**empty, "warning": "", "error": error}
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.int64)
    n = max(gray.size, 1)
    return hist, {
        "height": gray.shape[0],
        "width": gray.shape[1],
        "mean": float(gray.mean()),
        "std": float(gray.std()),
        "black_share": hist[0] / n,
        "white_share": hist[255] / n,
        "warning": (warning or "").removeprefix(f"{path}: "),
        "error": "",
    }


def sample_images(
    frame: pd.DataFrame, max_images: int, per_part: bool = True, seed: int = 0
) -> pd.DataFrame:
    """A random sample of rows: `max_images` in all, shared equally among the parts present
    when `per_part` (a part with fewer images gives all of them), else drawn from all rows."""
    rng = np.random.default_rng(seed)
    if not per_part:
        n = min(max_images, len(frame))
        return frame.iloc[np.sort(rng.choice(len(frame), size=n, replace=False))]
    parts = ordered_parts(frame["body_part"])
    quota = max(1, max_images // max(len(parts), 1))
    picked = []
    for part in parts:
        idx = np.flatnonzero((frame["body_part"] == part).to_numpy())
        picked.append(np.sort(rng.choice(idx, size=min(quota, len(idx)), replace=False)))
    return frame.iloc[np.sort(np.concatenate(picked))] if picked else frame.iloc[:0]


def intensity_histograms(
    frame: pd.DataFrame,
    per_part: bool = True,
    max_images: int = 400,
    seed: int = 0,
    n_jobs: int = 1,
) -> IntensitySample:
    """Decode a capped random sample as 8-bit gray and histogram its pixels.

    Images are read as the model's pipeline reads them (:func:`mura_lib.data.images.read_gray`:
    RGB through Pillow's luminance, 16-bit scaled to its maximum), not resized, and nothing is
    masked: background and borders count. Unreadable files add no pixel and are listed with
    their error in `images`. Each group's histogram weighs images by their pixel count.

    Args:
        frame: an image index frame.
        per_part: one histogram per body part (`max_images` shared among the parts); False
            gives a single "all" histogram.
        max_images: how many images to decode in all.
        seed: the seed of the sample.
        n_jobs: worker processes for decoding (joblib; 1 = this process).
    """
    sample = sample_images(frame, max_images, per_part=per_part, seed=seed)
    results = _map(_gray_stats, sample["path"].astype(str).tolist(), n_jobs)
    stats = pd.DataFrame([r[1] for r in results], index=sample.index, columns=_STAT_COLUMNS)
    images = pd.concat([sample[["path", "split", "body_part", "label"]], stats], axis=1)
    groups = sample["body_part"].to_numpy() if per_part else np.full(len(sample), "all")
    names = ordered_parts(sample["body_part"]) if per_part else ["all"]
    levels = pd.RangeIndex(256, name="gray_level")
    counts = pd.DataFrame([hist for hist, _ in results], index=groups, columns=levels)
    counts = counts.groupby(level=0).sum().T.reindex(columns=names, fill_value=0)
    hist_frame = counts / counts.sum().replace(0, 1)  # a group without pixels stays 0
    n_bad = int((images["error"] != "").sum())
    n_trunc = int((images["warning"] != "").sum())
    how = f"up to {max(1, max_images // max(len(names), 1))} per part" if per_part else "in all"
    note = (
        f"{len(sample)} of {len(frame)} images decoded ({how}, seed {seed}); every pixel "
        "counts, black background and borders included; "
        f"{n_bad} unreadable (left out), {n_trunc} truncated (read as far as they go)."
    )
    return IntensitySample(histograms=hist_frame, images=images, note=note)


def example_studies(frame: pd.DataFrame, per_part_label: int = 1, seed: int = 0) -> pd.DataFrame:
    """Random studies to look at: `per_part_label` per body part and label, train first.

    Studies come from the official train split when it has enough of a (part, label) cell, so
    the examples are from the data a model learns from; otherwise valid fills in.

    Returns:
        Rows of :func:`study_table` (study_id, split, body_part, patient_id, label, n_views),
        sorted by part (paper's order), then label (normal first).
    """
    studies = study_table(frame)
    rng = np.random.default_rng(seed)
    picked = []
    for part in ordered_parts(frame["body_part"]):
        for label in (0, 1):
            cell = studies[(studies["body_part"] == part) & (studies["label"] == label)]
            if cell.empty:
                continue
            # Train before valid, random within each split.
            keys = (cell["split"] != "train").to_numpy() * 2.0 + rng.random(len(cell))
            picked.append(cell.iloc[np.argsort(keys)[:per_part_label]])
    if not picked:
        return studies.iloc[:0]
    return pd.concat(picked, ignore_index=True)


def file_problems(skipped: pd.DataFrame, sizes: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Everything found wrong with the files, one row each: path, found_by, reason.

    Args:
        skipped: ``MuraIndex.skipped`` (found_by "reader": AppleDouble, hidden, unlisted ...).
        sizes: :func:`image_sizes` (found_by "header": the header cannot be read).
        images: ``IntensitySample.images`` (found_by "decode": truncated or undecodable).
    """
    found = [skipped.assign(found_by="reader")[["path", "found_by", "reason"]]]
    bad = sizes[sizes["error"] != ""]
    found.append(bad.assign(found_by="header", reason=bad["error"])[["path", "found_by", "reason"]])
    reason = images["error"].where(images["error"] != "", images["warning"])
    bad = images.assign(found_by="decode", reason=reason)[reason != ""]
    found.append(bad[["path", "found_by", "reason"]])
    return pd.concat(found, ignore_index=True)
