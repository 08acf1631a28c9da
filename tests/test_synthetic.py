"""The synthetic MURA-format generator: layout, CSV format, determinism, the committed sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura_lib.config import BODY_PARTS, DATA_SAMPLE_DIR, SAMPLE_ROOT
from mura_lib.data import read_mura
from mura_lib.errors import MuraError
from mura_lib.synthetic import TRUTH_NAME, scaled_profile, write_mura_tree

TINY = scaled_profile("tiny", 3, 2, long_side=(64, 80))


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory) -> Path:
    return write_mura_tree(tmp_path_factory.mktemp("syn"), TINY, seed=0, n_jobs=1)


def _pixels(root: Path) -> dict[str, np.ndarray]:
    return {
        str(p.relative_to(root)): np.asarray(Image.open(p)) for p in sorted(root.rglob("*.png"))
    }


def test_layout_and_headerless_csvs(tiny_tree):
    assert tiny_tree.name == "MURA-v1.1"
    for split in ("train", "valid"):
        paths = (tiny_tree / f"{split}_image_paths.csv").read_bytes()
        assert b"\r" not in paths
        lines = paths.decode().splitlines()
        assert lines[0].startswith(f"MURA-v1.1/{split}/XR_") and lines[0].endswith(".png")
        studies = (tiny_tree / f"{split}_labeled_studies.csv").read_text().splitlines()
        folder, label = studies[0].rsplit(",", 1)
        assert folder.endswith("/") and label in ("0", "1")
        assert folder.rstrip("/").endswith("_positive" if label == "1" else "_negative")
    frame = read_mura(tiny_tree)
    assert set(frame["body_part"]) == set(BODY_PARTS)
    train_ids = set(frame.loc[frame.split == "train", "patient_id"])
    valid_ids = set(frame.loc[frame.split == "valid", "patient_id"])
    assert max(train_ids) < min(valid_ids)


def test_same_seed_same_pixels_other_seed_differs(tiny_tree, tmp_path):
    again = write_mura_tree(tmp_path / "a", TINY, seed=0, n_jobs=2)
    other = write_mura_tree(tmp_path / "b", TINY, seed=1, n_jobs=1)
    first = _pixels(tiny_tree)
    second = _pixels(again)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    third = _pixels(other)
    differs = [k for k in first.keys() & third.keys() if not np.array_equal(first[k], third.get(k))]
    assert differs or first.keys() != third.keys()


def test_truth_sidecar_matches_the_images(tiny_tree):
    truth = pd.read_csv(tiny_tree.parent / TRUTH_NAME)
    frame = read_mura(tiny_tree)
    assert set(truth["rel_path"]) == set(frame["rel_path"])
    merged = frame.merge(truth, on="rel_path")
    normal = merged[merged["label"] == 0]
    assert (normal["kind"] == "none").all()


def test_refuses_to_overwrite_without_flag(tiny_tree):
    with pytest.raises(MuraError, match="MURA-v1.1"):
        write_mura_tree(tiny_tree.parent, TINY, seed=0, n_jobs=1)


@pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="data_sample/ is missing")
def test_committed_sample_is_valid_small_and_regenerates_bit_for_bit(tmp_path):
    size = sum(p.stat().st_size for p in DATA_SAMPLE_DIR.rglob("*") if p.is_file())
    assert size <= 10 * 1024 * 1024
    frame = read_mura(SAMPLE_ROOT)
    assert set(frame["body_part"]) == set(BODY_PARTS)
    assert set(frame["split"]) == {"train", "valid"} and set(frame["label"]) == {0, 1}
    modes = {Image.open(p).mode for p in frame["path"]}
    assert {"L", "RGB"} <= modes
    abnormal_rate = frame.drop_duplicates("study_id")["label"].mean()
    assert 0.3 <= abnormal_rate <= 0.5
    regenerated = write_mura_tree(tmp_path, "sample", seed=0, n_jobs=2)
    committed, fresh = _pixels(SAMPLE_ROOT), _pixels(regenerated)
    assert committed.keys() == fresh.keys()
    different = [k for k in committed if not np.array_equal(committed[k], fresh[k])]
    assert not different, (
        f"{len(different)} images differ from a regeneration, e.g. {different[:3]}"
    )
