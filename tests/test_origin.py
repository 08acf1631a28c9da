"""What a tree holds (mura_lib.data.origin): synthetic, the official MURA-v1.1, or other."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import frame_of, table1_studies

from mura_lib.config import SAMPLE_ROOT
from mura_lib.data import scan_mura
from mura_lib.data.origin import (
    KINDS,
    SYNTHETIC_MARKER,
    TRUTH_NAME,
    data_kind,
    is_synthetic,
    training_data,
)


@pytest.fixture(scope="module")
def table1_frame() -> pd.DataFrame:
    return frame_of(table1_studies())


@pytest.mark.parametrize(
    ("counts", "sign", "kind"),
    [
        ("table1", None, "mura-v1.1"),
        ("table1", "marker", "synthetic"),  # the generator's table1 profile has MURA's counts
        ("table1", "truth", "synthetic"),
        ("subset", None, "other"),
        ("subset", "marker", "synthetic"),
    ],
)
def test_kind(tmp_path: Path, table1_frame: pd.DataFrame, counts: str, sign, kind: str) -> None:
    root = tmp_path / "MURA-v1.1"
    root.mkdir()
    if sign == "marker":
        (root / SYNTHETIC_MARKER).write_text("drawn by mura_lib.synthetic\n")
    elif sign == "truth":
        (tmp_path / TRUTH_NAME).write_text("rel_path,label\n")
    frame = table1_frame if counts == "table1" else table1_frame.iloc[:-1]
    assert data_kind(root, frame) == kind
    assert kind in KINDS


def test_training_data_of_a_tree(mura_tree: Path) -> None:
    assert training_data(scan_mura(mura_tree.parent)) == {
        "kind": "other",
        "root": str(mura_tree),
        "body_parts": ["ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST"],
        "images": {"train": 69, "valid": 69},
    }
    (mura_tree / SYNTHETIC_MARKER).write_text("drawn by mura_lib.synthetic\n")
    assert training_data(scan_mura(mura_tree))["kind"] == "synthetic"


@pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="data_sample/MURA-v1.1 not generated yet")
def test_the_bundled_sample_carries_the_marker() -> None:
    # inside the folder, so that a copy of data_sample/MURA-v1.1 alone is still recognised
    assert (SAMPLE_ROOT / SYNTHETIC_MARKER).is_file() and is_synthetic(SAMPLE_ROOT)
