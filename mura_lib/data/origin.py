"""What a tree in MURA's layout holds: synthetic films, the official MURA-v1.1, or other data.

A checkpoint records it as ``training_data`` (:func:`training_data`), so that a model can say
what it learned from: `mura predict` warns that a model trained on synthetic films says
nothing about radiographs. The kinds:

- ``"synthetic"``: drawn by :mod:`mura_lib.synthetic` (the bundled sample among them). The
  generator writes :data:`SYNTHETIC_MARKER` inside the MURA-v1.1 folder, so a copy of that
  folder stays recognisable; its ground truth :data:`TRUTH_NAME` beside the folder counts too.
  Checked first: the ``table1`` profile has MURA's exact counts.
- ``"mura-v1.1"``: every count of the paper's Table 1 reproduced exactly
  (:func:`~mura_lib.data.describe.matches_table1`).
- ``"other"``: anything else (a subset of MURA, LERA, a tree made for tests).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mura_lib.data.describe import matches_table1
from mura_lib.data.mura import MuraIndex
from mura_lib.data.mura_layout import ordered_parts

# Inside the MURA-v1.1 folder, where no MURA reader looks (readers open train/, valid/ and the
# four CSVs only); a plain name, so that a copy of the folder carries it.
SYNTHETIC_MARKER = "SYNTHETIC.txt"
# The generator's ground truth, beside the MURA-v1.1 folder.
TRUTH_NAME = "synthetic_truth.csv"

SYNTHETIC, MURA_V11, OTHER = "synthetic", "mura-v1.1", "other"
KINDS = (SYNTHETIC, MURA_V11, OTHER)


def is_synthetic(root: Path) -> bool:
    """Whether the MURA-v1.1 folder ``root`` was drawn by :mod:`mura_lib.synthetic`."""
    return (root / SYNTHETIC_MARKER).is_file() or (root.parent / TRUTH_NAME).is_file()


def data_kind(root: Path, frame: pd.DataFrame) -> str:
    """One of :data:`KINDS` for the tree at ``root`` (its MURA-v1.1 folder) indexed as ``frame``."""
    if is_synthetic(root):
        return SYNTHETIC
    return MURA_V11 if matches_table1(frame) else OTHER


def training_data(index: MuraIndex) -> dict:
    """What a checkpoint records of the tree it was trained on: kind, folder, parts, images."""
    frame = index.frame
    return {
        "kind": data_kind(index.root, index.tree_frame),  # the tree, whatever labels were used
        "root": str(index.root),
        "body_parts": ordered_parts(frame["body_part"]),
        "images": {
            split: int(n) for split, n in frame["split"].value_counts().sort_index().items()
        },
    }
