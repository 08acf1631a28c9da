"""Counts of a MURA tree, per split and body part, and their comparison with the paper's Table 1.

:func:`describe_mura` is the text of `python -m mura_lib describe ROOT`; :func:`count_table`,
:func:`table1_counts` and :func:`compare_with_table1` give the same numbers as DataFrames
for the EDA notebook, and :data:`PAPER_TABLE1` holds the paper's counts.

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


def count_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per split and body part, plus a `total` row per split.

    Returns:
        A DataFrame indexed by (split, body_part) with integer columns n_normal, n_abnormal,
        n_studies (studies), n_images, n_patients, and float columns abnormal_rate (of
        studies), views_mean and views_max (images per study).
    """
    # One row per study (its view count and label), then grouped twice: by part and overall.
    studies = frame.groupby("study_id", sort=False).agg(
        split=("split", "first"), body_part=("body_part", "first"),
        patient_id=("patient_id", "first"), label=("label", "first"), views=("view", "size"),
    )  # fmt: skip
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
        "n_normal": grouped["label"].apply(lambda x: int((x == 0).sum())),
        "n_abnormal": grouped["label"].sum(),
        "n_studies": grouped.size(),
        "n_images": grouped["views"].sum(),
        "n_patients": grouped["patient_id"].nunique(),
        "abnormal_rate": grouped["label"].mean(),
        "views_mean": grouped["views"].mean(),
        "views_max": grouped["views"].max(),
    }).astype({"n_normal": "int64", "n_abnormal": "int64", "n_studies": "int64",
               "n_images": "int64", "n_patients": "int64", "views_max": "int64"})  # fmt: skip


def table1_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's counts in the layout of :data:`PAPER_TABLE1` (absent parts or splits: 0).

    Parts outside MURA's seven have no row there; they count in the `total` row only.
    """
    table = pd.DataFrame(0, index=PAPER_TABLE1.index, columns=PAPER_TABLE1.columns)
    counts = count_table(frame)
    for (split, part), row in counts.iterrows():
        if part not in table.index:
            continue
        table.loc[part, [f"{split}_normal", f"{split}_abnormal", f"{split}_images"]] = [
            row["n_normal"],
            row["n_abnormal"],
            row["n_images"],
        ]
    return table


def compare_with_table1(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's Table-1 counts next to the paper's, one row per (body_part, count).

    Returns:
        A DataFrame indexed by (body_part, count) with columns `ours`, `paper`, `diff`
        (ours - paper) and `ratio` (ours / paper: about constant for a proportional sample).
        `.unstack()` gives the wide layout.
    """
    ours = table1_counts(frame).stack()
    paper = PAPER_TABLE1.stack()
    out = pd.DataFrame({"ours": ours, "paper": paper})
    out.index.names = ["body_part", "count"]
    out["diff"] = out["ours"] - out["paper"]
    out["ratio"] = out["ours"] / out["paper"]
    return out


def matches_table1(frame: pd.DataFrame) -> bool:
    """Whether every count of the paper's Table 1 is reproduced exactly."""
    return bool((compare_with_table1(frame)["diff"] == 0).all())


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
    """Right-aligned columns, two spaces apart, the part names left-aligned."""
    rows = [["part", *(header for header, _, _ in _TEXT_COLUMNS)]]
    for part, r in table.iterrows():
        rows.append([str(part), *(fmt.format(r[col]) for _, col, fmt in _TEXT_COLUMNS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for part, *cells in rows:
        right = [c.rjust(w) for c, w in zip(cells, widths[1:], strict=True)]
        lines.append("  ".join([part.ljust(widths[0]), *right]))
    return lines


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
