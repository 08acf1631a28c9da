"""Shared fixtures for the model, training, prediction and CLI tests.

A *learnable* tiny MURA tree (noise radiographs; abnormal ones carry a bright square), the
fast training configuration every test uses, and one run trained once per session that the
training, prediction and CLI tests all read. Test modules load this file with
``pytest_plugins = ["fixtures_training"]`` and mark themselves
``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mura_lib.training.config import TrainConfig
from mura_lib.training.train import fit

PARTS = ("ELBOW", "HAND", "WRIST")
IMAGE_SIZE = 32  # side S of the model inputs in every training test


def write_learnable_tree(
    parent: Path, n_train: int = 24, n_valid: int = 9, height: int = 48, seed: int = 0
) -> Path:
    """Write ``parent/MURA-v1.1`` (no CSVs: read_mura walks the tree) and return it.

    Each of 3 body parts gets ``n_train`` train and ``n_valid`` valid patients with one study
    of 1-2 views; every other study is abnormal. Views are dark noise of ``height`` x
    ``height + 8 * view`` pixels (two aspect ratios); abnormal views carry a bright 12 px
    square at a random place, which a small CNN learns in a few epochs.
    """
    rng = np.random.default_rng(seed)
    root = parent / "MURA-v1.1"
    for split, n, first_patient in (("train", n_train, 1), ("valid", n_valid, 11185)):
        for p, part in enumerate(PARTS):
            for i in range(n):
                patient = first_patient + p * n + i  # valid ids follow train's, as in MURA
                label = i % 2
                suffix = "positive" if label else "negative"
                study = root / split / f"XR_{part}" / f"patient{patient:05d}" / f"study1_{suffix}"
                study.mkdir(parents=True)
                for view in range(1, 1 + int(rng.integers(1, 3))):
                    image = rng.integers(0, 60, (height, height + 8 * view), dtype=np.uint8)
                    if label:
                        y, x = rng.integers(4, height - 16, 2)
                        image[y : y + 12, x : x + 12] = 255
                    Image.fromarray(image).save(study / f"image{view}.png")
    return root


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch ops on ``n`` intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the tiny models of these tests, restored after the module.

    On a small machine shared with other jobs, threads that wait for each other spin: a
    resnet18 step at S=32 measured 7x faster with one thread than with two (CPU time
    1.8 s -> 0.26 s). Results do not depend on it: every run of a comparison uses one thread.
    """
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The learnable tree (MURA-v1.1 folder), written once per session. Do not modify it."""
    return write_learnable_tree(tmp_path_factory.mktemp("tiny_mura"))


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One image cache folder for the session: later runs reuse the decoded arrays."""
    return tmp_path_factory.mktemp("image_cache")


@pytest.fixture(scope="session")
def tiny_config(shared_cache_dir: Path) -> TrainConfig:
    """The fast configuration: small_cnn, S=32, 3 epochs, plateau 0 / early stop 2, CPU, silent.

    With these patiences the rate drops after the first epoch without improvement, so three
    epochs exercise the schedule. CPU keeps the determinism checks exact.
    """
    return TrainConfig(
        arch="small_cnn",  # the sample's model: a tenth of resnet18's work, 1/40 of its weights
        image_size=IMAGE_SIZE,
        epochs=3,
        batch_size=16,
        lr=1e-3,
        plateau_patience=0,
        early_stop_patience=2,
        device="cpu",
        cache_dir=str(shared_cache_dir),
    )


@pytest.fixture(scope="session")
def trained_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_tree: Path, tiny_config: TrainConfig
) -> tuple[Path, dict]:
    """(run folder, fit summary) of one uninterrupted run of ``tiny_config``. Read only."""
    out = tmp_path_factory.mktemp("trained_run") / "run"
    with torch_threads(1):  # session-scoped: set up before any module's one_torch_thread
        summary = fit(tiny_tree, out, tiny_config, progress="none")
    return out, summary


def write_planted_tree(
    parent: Path, n_train: int = 30, n_valid: int = 10, height: int = 40, seed: int = 0
) -> tuple[Path, dict[str, int]]:
    """Write ``parent/MURA-v1.1`` of 3-4-view studies whose finding is on *one* view only.

    As :func:`write_learnable_tree`, but an abnormal study's bright square is planted on a
    single view chosen at random; its other views are as clean as a normal study's. This is
    MURA's hard case (an abnormal study whose finding most views do not show) made easy to
    check. Returns the tree and {study folder relative to it: planted view number}.
    """
    rng = np.random.default_rng(seed)
    root = parent / "MURA-v1.1"
    planted: dict[str, int] = {}
    for split, n, first_patient in (("train", n_train, 1), ("valid", n_valid, 11185)):
        for p, part in enumerate(PARTS):
            for i in range(n):
                patient = first_patient + p * n + i
                label = i % 2
                suffix = "positive" if label else "negative"
                rel = f"{split}/XR_{part}/patient{patient:05d}/study1_{suffix}"
                (root / rel).mkdir(parents=True)
                n_views = int(rng.integers(3, 5))
                hit = int(rng.integers(1, n_views + 1))
                if label:
                    planted[rel] = hit
                for view in range(1, n_views + 1):
                    image = rng.integers(0, 60, (height, height), dtype=np.uint8)
                    if label and view == hit:
                        y, x = rng.integers(4, height - 16, 2)
                        image[y : y + 12, x : x + 12] = 255
                    Image.fromarray(image).save(root / rel / f"image{view}.png")
    return root, planted


@pytest.fixture
def planted_tree(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """:func:`write_planted_tree` under the test's tmp_path: (tree, {study: planted view})."""
    return write_planted_tree(tmp_path)
