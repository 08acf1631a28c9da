"""A tree with other body parts than MURA's seven goes through the whole pipeline: described,
weighted per part, trained, evaluated per part, and its model's predictions flagged.

The tree is the bundled sample with XR_HUMERUS renamed XR_KNEE, in its folders and its CSVs:
what a tree of LERA's lower-extremity parts in MURA's layout looks like to the library.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from mura_lib.cli import main
from mura_lib.config import SAMPLE_ROOT, SPLITS
from mura_lib.data import read_mura
from mura_lib.data.class_weights import paper_part_weights
from mura_lib.data.describe import describe_mura
from mura_lib.inference.evaluate import evaluate_checkpoint
from mura_lib.models.checkpoint import load_checkpoint
from mura_lib.training.config import TrainConfig
from mura_lib.training.train import fit

pytest_plugins = ["fixtures_training"]  # shared_cache_dir
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="data_sample/MURA-v1.1 is absent"),
]


def _link_or_copy(source: str, dest: str) -> None:
    """Images are hard-linked (they are only read); text files are copied, to be rewritten."""
    if source.endswith(".png"):
        try:
            os.link(source, dest)
            return
        except OSError:  # another file system, or links not allowed
            pass
    shutil.copy2(source, dest)


def copy_with_part_renamed(source: Path, parent: Path, old: str, new: str) -> Path:
    """A copy of the MURA-v1.1 folder ``source`` under ``parent`` with XR_<old> named
    XR_<new>, in the folders and in the four CSVs; returns the copy's MURA-v1.1 folder."""
    root = Path(shutil.copytree(source, parent / "MURA-v1.1", copy_function=_link_or_copy))
    for split in SPLITS:
        (root / split / f"XR_{old}").rename(root / split / f"XR_{new}")
    for csv in root.glob("*.csv"):
        csv.write_bytes(csv.read_bytes().replace(f"/XR_{old}/".encode(), f"/XR_{new}/".encode()))
    return root


@pytest.fixture(scope="module")
def knee_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_with_part_renamed(SAMPLE_ROOT, tmp_path_factory.mktemp("knee"), "HUMERUS", "KNEE")


@pytest.mark.slow
def test_a_tree_with_a_knee_is_described_trained_and_evaluated_per_part(
    knee_tree: Path, tmp_path: Path, shared_cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = describe_mura(knee_tree)
    for split in SPLITS:  # KNEE counted after MURA's parts, in both splits
        assert re.search(rf"\n{split}: .*\n(.*\n){{6}}WRIST .*\nKNEE .*\ntotal ", text), split
    assert (
        "This tree is not MURA-v1.1: its body parts differ from MURA's seven (extra: KNEE; "
        "missing: HUMERUS); the paper's Table 1 covers MURA's parts only."
    ) in text.splitlines()

    train = read_mura(knee_tree).query("split == 'train'")
    assert paper_part_weights(train).index[-1] == "KNEE"  # the paper's weights, per part

    config = TrainConfig(
        arch="small_cnn", image_size=32, epochs=1, device="cpu", cache_dir=str(shared_cache_dir)
    )
    summary = fit(knee_tree, tmp_path / "run", config, progress="none")
    best = Path(summary["best_checkpoint"])
    recorded = load_checkpoint(best)["training_data"]
    assert recorded["kind"] == "synthetic"  # the sample's SYNTHETIC.txt came with the copy
    assert recorded["body_parts"] == [
        "ELBOW", "FINGER", "FOREARM", "HAND", "SHOULDER", "WRIST", "KNEE"
    ]  # fmt: skip

    evaluate_checkpoint(
        best,
        knee_tree,
        tmp_path / "eval",
        device="cpu",
        n_boot=0,
        cache_dir=str(shared_cache_dir),
        progress="none",
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for section in (metrics["study"], metrics["image"], metrics["at_0.5"]["study"]):
        parts = list(section["by_body_part"])
        assert parts[-1] == "KNEE" and "HUMERUS" not in parts
        assert section["by_body_part"]["KNEE"]["n"] > 0

    study = next((knee_tree / "valid" / "XR_KNEE").glob("*/*"))
    assert main(["predict", "--checkpoint", str(best), str(study), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on synthetic films" in err
