"""Counts of a MURA tree, per split and body part, and their comparison with the paper's Table 1.

:func:`describe_mura` is the text of `python -m mura_lib describe ROOT`; :func:`count_table`
and :func:`table1_counts` give the same numbers as DataFrames for the EDA notebook (which sets
the latter beside :data:`PAPER_TABLE1`, the paper's counts, with
:func:`mura_lib.reports.eda.table1_side_by_side`).

A tree may hold other body parts than MURA's seven (LERA's FOOT, KNEE ...): they are counted
like MURA's, after them, and :func:`parts_note` says in one line that such a tree is not
MURA-v1.1. Table 1 has rows for MURA's parts only, so the comparison shows those (the totals
stay the whole tree's).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

from mura_lib.config import BODY_PARTS, SPLITS
from mura_lib.data.mura import MuraIndex, scan_mura
from mura_lib.data.mura_layout import ordered_parts, study_csv_name

# Rajpurkar et al. 2017, Table 1 (= the official MURA-v1.1 CSVs): studies normal / abnormal
# and images, per body part, for train and valid. The project's one copy: the synthetic
# profiles (mura_lib.synthetic.profiles.TABLE1) are derived from it.
PAPER_TABLE1 = pd.DataFrame(
    [
        (1094, 660, 4931, 92, 66, 465),
        (1280, 655, 5106, 92, 83, 461),
        (590, 287, 1825, 69, 64, 301),
        (1497, 521, 5543, 101, 66, 460),
        (321, 271, 1272, 68, 67, 288),
        (1364, 1457, 8379, 99, 95, 563),
        (2134, 1326, 9752, 140, 97, 659),
        (8280, 5177, 36808, 661, 538, 3197),
    ],
    index=pd.Index([*BODY_PARTS, "total"], name="body_part"),
    columns=[
        "train_normal", "train_abnormal", "train_images",
        "valid_normal", "valid_abnormal", "valid_images",
    ],
)  # fmt: skip

MAX_SKIPPED_SHOWN = 10


def study_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per study: study_id, split, body_part, patient_id, label and n_views."""
    first = {column: (column, "first") for column in ("split", "body_part", "patient_id", "label")}
    studies = frame.groupby("study_id", sort=False).agg(**first, n_views=("view", "size"))
    return studies.reset_index()


def count_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per split and body part, plus a `total` row per split.

    Returns:
        A DataFrame indexed by (split, body_part) with integer columns n_normal, n_abnormal,
        n_studies (studies), n_images, n_patients, and float columns abnormal_rate (of
        studies), views_mean and views_max (images per study).
    """
    # One row per study (its view count and label), then grouped twice: by part and overall.
    studies = study_table(frame)
    by_part = _study_stats(studies, ["split", "body_part"])
    total = _study_stats(studies, ["split"])
    total.index = pd.MultiIndex.from_arrays(
        [total.index, ["total"] * len(total)], names=["split", "body_part"]
    )
    order = [
        (split, part)
        for split in SPLITS
        for part in [*ordered_parts(studies["body_part"]), "total"]
        if (split, part) in by_part.index or (split, part) in total.index
    ]
    return pd.concat([by_part, total]).loc[order]


def _study_stats(studies: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = studies.groupby(keys)
    return pd.DataFrame({
        "n_normal": grouped.size() - grouped["label"].sum(),
        "n_abnormal": grouped["label"].sum(),
        "n_studies": grouped.size(),
        "n_images": grouped["n_views"].sum(),
        "n_patients": grouped["patient_id"].nunique(),
        "abnormal_rate": grouped["label"].mean(),
        "views_mean": grouped["n_views"].mean(),
        "views_max": grouped["n_views"].max(),
    })  # fmt: skip


def table1_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's counts in the layout of :data:`PAPER_TABLE1` (absent parts or splits: 0).

    Parts outside MURA's seven have no row there; they count in the `total` row only.
    """
    counts = count_table(frame)[["n_normal", "n_abnormal", "n_images"]].unstack("split")
    counts.columns = [f"{split}_{count[2:]}" for count, split in counts.columns]
    table = counts.reindex(index=PAPER_TABLE1.index, columns=PAPER_TABLE1.columns)
    return table.fillna(0).astype("int64")


def matches_table1(frame: pd.DataFrame) -> bool:
    """Whether every count of the paper's Table 1 is reproduced exactly."""
    return table1_counts(frame).equals(PAPER_TABLE1)


def parts_note(parts: Iterable[str]) -> str | None:
    """One line saying that a tree is not MURA-v1.1 because its body parts are not MURA's
    seven (naming the extra and the missing ones); None when they are MURA's seven.

    Args:
        parts: the body part of every row (or the distinct parts) of the tree.
    """
    present = set(parts)
    extra = ordered_parts(present.difference(BODY_PARTS))
    missing = [p for p in BODY_PARTS if p not in present]
    if not extra and not missing:
        return None
    differ = "; ".join(
        f"{what}: {', '.join(names)}"
        for what, names in (("extra", extra), ("missing", missing))
        if names
    )
    return (
        f"This tree is not MURA-v1.1: its body parts differ from MURA's seven ({differ}); "
        "the paper's Table 1 covers MURA's parts only."
    )


def describe_mura(
    root: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> str:
    """The text report of `python -m mura_lib describe ROOT [--labels DIR]` (see
    :func:`describe_index`).

    Raises:
        MuraFormatError: `root` is not a valid MURA tree, or `labels` not a valid label folder.
    """
    return describe_index(scan_mura(root, labels=labels))


def describe_index(index: MuraIndex) -> str:
    """Counts per split and part, patients shared by splits, Table-1 check, skipped files."""
    frame = index.frame
    how = {"csv": "from its CSV files", "walk": "by walking its folders (no CSV files)"}
    lines = [f"MURA tree: {index.root}"]
    lines += [f"{split}: read {how[src]}" for split, src in index.source.items()]
    lines += _label_lines(index)
    counts = count_table(frame)
    for split in counts.index.get_level_values("split").unique():
        table = counts.loc[split].copy()
        total = {k: int(v) for k, v in table.loc["total"].items() if k.startswith("n_")}
        lines += [
            "",
            f"{split}: {total['n_studies']} studies ({total['n_normal']} normal, "
            f"{total['n_abnormal']} abnormal), {total['n_images']} images, "
            f"{total['n_patients']} patients",
        ]
        lines += _text_table(table)
    lines.append("")
    lines += _checks(index.tree_frame)
    if index.relabelling is not None:
        lines.append("The Table-1 check reads the tree's labels; the counts above, the new ones.")
    lines += _skipped_lines(index.skipped)
    return "\n".join(lines)


def _label_lines(index: MuraIndex) -> list[str]:
    """Per split, where its labels come from and how many studies the label folder changed."""
    relabelling = index.relabelling
    if relabelling is None:
        return []
    record = index.labels
    studies = index.frame.groupby("split")["study_id"].nunique()
    lines = [f"labels: from {relabelling.folder}"]
    for split in index.source:
        name = study_csv_name(split)
        if split in relabelling.changed:
            lines.append(
                f"{split}: {record['changed'][split]} of {studies[split]} studies have another "
                f"label in {name} than in the tree"
            )
        else:
            lines.append(f"{split}: the tree's labels (no {name} in the label folder)")
    for name, n in record["not_in_tree"].items():
        if n:
            lines.append(
                f"{name}: {n} rows of {study_csv_name(name)} name studies this tree does not "
                "have (left out: a subset of the data set?)"
            )
    for name, n in record["repeated"].items():
        if n:
            lines.append(
                f"{name}: {n} studies are listed more than once in {study_csv_name(name)} "
                "(abnormal when any of their rows says 1)"
            )
    return lines


# (header, count_table column, format) of the text tables of describe_mura.
_TEXT_COLUMNS = (
    ("normal", "n_normal", "{:.0f}"),
    ("abnormal", "n_abnormal", "{:.0f}"),
    ("studies", "n_studies", "{:.0f}"),
    ("images", "n_images", "{:.0f}"),
    ("patients", "n_patients", "{:.0f}"),
    ("abnormal rate", "abnormal_rate", "{:.1%}"),
    ("views/study mean", "views_mean", "{:.2f}"),
    ("max", "views_max", "{:.0f}"),
)


def _text_table(table: pd.DataFrame) -> list[str]:
    """Right-aligned columns, at least two spaces apart, the part names left-aligned."""
    shown = table[[col for _, col, _ in _TEXT_COLUMNS]]
    shown.columns = [header for header, _, _ in _TEXT_COLUMNS]
    text = shown.to_string(
        formatters={header: fmt.format for header, _, fmt in _TEXT_COLUMNS},
        col_space={header: len(header) + 1 for header, _, _ in _TEXT_COLUMNS},
        index_names=False,
    )
    return text.splitlines()


def _checks(frame: pd.DataFrame) -> list[str]:
    """Things worth knowing that are not errors: shared patients, Table-1 agreement."""
    out = []
    patients = [set(frame.loc[frame["split"] == s, "patient_id"]) for s in SPLITS]
    if all(patients):
        shared = sorted(patients[0] & patients[1])
        if shared:
            shown = ", ".join(str(p) for p in shared[:MAX_SKIPPED_SHOWN])
            out.append(
                f"WARNING: {len(shared)} patient ids appear in both train and valid "
                f"(e.g. {shown}); official MURA has none."
            )
        else:
            out.append("Patients in both train and valid: none (as in official MURA).")
    note = parts_note(frame["body_part"])
    if note:
        out.append(note)
    elif matches_table1(frame):
        out.append("Counts match the paper's Table 1 (the official MURA-v1.1).")
    else:
        n_paper = int(PAPER_TABLE1.loc["total", ["train_images", "valid_images"]].sum())
        out.append(
            f"Counts differ from the paper's Table 1 ({len(frame)} images here, {n_paper} "
            "there): expected for a sample or a subset, not for the official MURA-v1.1."
        )
    return out


def _skipped_lines(skipped: pd.DataFrame) -> list[str]:
    if skipped.empty:
        return ["Skipped: nothing (no AppleDouble, hidden or non-PNG files)."]
    out = [f"Skipped {len(skipped)} entries that are not images of the data set:"]
    for reason, n in skipped["reason"].value_counts().items():
        out.append(f"  {n:6d}  {reason}")
    shown = skipped.head(MAX_SKIPPED_SHOWN)
    out.append(f"  first {len(shown)}:" if len(skipped) > len(shown) else "  all:")
    out += [f"    {row.path}  ({row.reason})" for row in shown.itertuples()]
    return out
