"""Loss weights for the class imbalance, from STUDY counts of the rows passed in.

Pass the training subset only (e.g. `frame[frame.subset == "train"]`): weights computed on
rows that include validation or test would leak their labels into training.

Two schemes:

- :func:`paper_part_weights`, the MURA paper's: per body part T, the abnormal term of the
  binary cross-entropy is weighted by |N_T| / (|A_T| + |N_T|) and the normal term by
  |A_T| / (|A_T| + |N_T|), with A_T and N_T the abnormal and normal study counts of T. The
  rarer class of each part gets the larger weight and the two weights sum to 1.
- :func:`inverse_frequency_weights`, the original project's: weight of class c =
  total / count(c). It used image counts (about 1.68 normal and 2.47 abnormal on official
  train); here study counts are the default, since the label belongs to the study.

Both count studies, not images, without decoding anything: the original project loaded every
image through its transforms, twice, to count classes.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from mura_lib.data.mura_layout import ordered_parts
from mura_lib.errors import ConfigError


def study_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Normal and abnormal study counts per body part of the rows passed in.

    Returns:
        A DataFrame indexed by `body_part` (the parts present, MURA's seven first; see
        :func:`~mura_lib.data.mura_layout.ordered_parts`) with integer columns `n_normal` and
        `n_abnormal`.
    """
    studies = frame.drop_duplicates("study_id")
    counts = pd.crosstab(studies["body_part"], studies["label"])
    counts = counts.reindex(columns=[0, 1], fill_value=0)
    counts = counts.reindex(ordered_parts(counts.index)).astype("int64")
    counts.columns = ["n_normal", "n_abnormal"]
    counts.index.name = "body_part"
    counts.columns.name = None
    return counts


def paper_part_weights(
    frame: pd.DataFrame, missing_class: Literal["raise", "equal"] = "raise"
) -> pd.DataFrame:
    """The paper's per-part weights of the abnormal and normal loss terms.

    Args:
        frame: the training rows (image index frame columns study_id, body_part, label).
        missing_class: what to do for a part with no normal or no abnormal study. "raise"
            (the default) raises, because the paper's formula would give the present class
            a weight of 0 and the part would not be learned at all; "equal" gives that part
            0.5 and 0.5 (useful for tiny smoke-test subsets).

    Returns:
        A DataFrame indexed by `body_part` with `n_normal`, `n_abnormal` (study counts),
        `w_abnormal` = n_normal / n and `w_normal` = n_abnormal / n. Per row, a study's loss
        is `-(w_abnormal * y * log p + w_normal * (1 - y) * log(1 - p))`.

    Raises:
        ConfigError: the frame has no rows, or a part lacks a class and missing_class="raise".
    """
    if missing_class not in ("raise", "equal"):
        raise ValueError(f"missing_class must be 'raise' or 'equal', not {missing_class!r}")
    counts = study_counts(frame)
    if counts.empty:
        raise ConfigError("paper_part_weights: no training rows were passed in.")
    lacking = counts[(counts["n_normal"] == 0) | (counts["n_abnormal"] == 0)]
    if len(lacking) and missing_class == "raise":
        detail = ", ".join(
            f"{part} ({r.n_normal} normal, {r.n_abnormal} abnormal)"
            for part, r in lacking.iterrows()
        )
        raise ConfigError(
            f"paper_part_weights: {detail} in the training rows: the paper's weights would "
            "give that part's only class a weight of 0. Use more training data, or "
            "missing_class='equal'."
        )
    total = counts["n_normal"] + counts["n_abnormal"]
    out = counts.copy()
    out["w_abnormal"] = counts["n_normal"] / total
    out["w_normal"] = counts["n_abnormal"] / total
    out.loc[lacking.index, ["w_abnormal", "w_normal"]] = 0.5
    return out


def inverse_frequency_weights(
    frame: pd.DataFrame, unit: Literal["study", "image"] = "study"
) -> dict[int, float]:
    """The original project's class weights: {0: total / n_normal, 1: total / n_abnormal}.

    Args:
        frame: the training rows.
        unit: count studies (default) or images (what the original project did).

    Raises:
        ConfigError: a class has no row, so its weight would be infinite.
    """
    if unit not in ("study", "image"):
        raise ValueError(f"unit must be 'study' or 'image', not {unit!r}")
    rows = frame.drop_duplicates("study_id") if unit == "study" else frame
    n = rows["label"].value_counts().reindex([0, 1], fill_value=0)
    if (n == 0).any():
        raise ConfigError(
            f"inverse_frequency_weights: the training rows hold {n[0]} normal and {n[1]} "
            f"abnormal {'studies' if unit == 'study' else 'images'}; both classes are needed. "
            "Use more training data."
        )
    total = float(n.sum())
    return {0: total / float(n[0]), 1: total / float(n[1])}
