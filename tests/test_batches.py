"""Batches over a cached array: coverage, seeded order, resumable epochs, aligned columns."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from mura_lib.data.batches import BatchLoader, epoch_permutation

N, S = 10, 4


@pytest.fixture
def cached(tmp_path: Path) -> np.ndarray:
    """A memory-mapped (N, S, S) array whose row i is filled with the value i."""
    path = tmp_path / "images.npy"
    np.save(path, np.repeat(np.arange(N, dtype=np.uint8), S * S).reshape(N, S, S))
    return np.load(path, mmap_mode="r")


def rows_of(loader: BatchLoader, epoch: int) -> list[int]:
    return [i for batch in loader.epoch(epoch) for i in batch.index.tolist()]


def test_every_row_once_per_epoch(cached: np.ndarray) -> None:
    loader = BatchLoader(cached, np.zeros(N), batch_size=4, seed=0)
    batches = list(loader.epoch(0))
    assert [len(b) for b in batches] == [4, 4, 2] and len(loader) == 3
    assert sorted(rows_of(loader, 0)) == list(range(N))
    assert rows_of(loader, 0) != list(range(N))  # shuffled


def test_batch_types_and_alignment(cached: np.ndarray) -> None:
    labels = np.arange(N) % 2
    weights = np.linspace(0.0, 1.0, N)  # float64 in, float32 out
    loader = BatchLoader(cached, labels, batch_size=3, seed=1, weights=weights)
    for batch in loader.epoch(2):
        index = batch.index.numpy()
        assert batch.images.dtype == torch.uint8 and batch.images.shape[1:] == (1, S, S)
        assert batch.labels.dtype == torch.float32 and batch.index.dtype == torch.int64
        assert batch.weights.dtype == torch.float32
        assert (batch.images[:, 0, 0, 0].numpy() == index).all()  # image of that row
        assert (batch.labels.numpy() == labels[index]).all()
        np.testing.assert_allclose(batch.weights.numpy(), weights[index], rtol=1e-6)
        assert (batch.group_index.numpy() == np.arange(len(index))).all()  # one image a group


def test_order_is_seeded_and_depends_on_the_epoch(cached: np.ndarray) -> None:
    def loader(seed: int) -> BatchLoader:
        return BatchLoader(cached, None, batch_size=4, seed=seed)

    assert rows_of(loader(0), 0) == rows_of(loader(0), 0)
    assert rows_of(loader(0), 0) != rows_of(loader(1), 0)
    assert rows_of(loader(0), 0) != rows_of(loader(0), 1)
    # (seed, epoch) is a pair, not a sum: these two must not coincide.
    assert not np.array_equal(epoch_permutation(N, 0, 1), epoch_permutation(N, 1, 0))


def test_resumed_run_sees_the_same_order(cached: np.ndarray) -> None:
    uninterrupted = BatchLoader(cached, None, batch_size=4, seed=3)
    orders = [rows_of(uninterrupted, epoch) for epoch in range(3)]
    resumed = BatchLoader(cached, None, batch_size=4, seed=3)  # a new process, say
    resumed.set_epoch(2)
    assert [i for b in resumed for i in b.index.tolist()] == orders[2]


def test_ordered_mode_keeps_row_order(cached: np.ndarray) -> None:
    loader = BatchLoader(cached, np.zeros(N), batch_size=4, shuffle=False)
    assert rows_of(loader, 0) == list(range(N)) == rows_of(loader, 7)


def test_copied_path_gives_the_same_batches(cached: np.ndarray) -> None:
    """The per-batch copy path (CUDA without room on the GPU), forced on CPU for its logic."""
    direct = BatchLoader(cached, np.arange(N), batch_size=3, seed=4, weights=np.arange(N))
    copied = BatchLoader(cached, np.arange(N), batch_size=3, seed=4, weights=np.arange(N))
    copied.residency = "pinned"
    kept = list(copied.epoch(1))  # all batches held at once: none may be overwritten
    for a, b in zip(direct.epoch(1), kept, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.index, b.index)
        assert torch.equal(a.labels, b.labels) and torch.equal(a.weights, b.weights)


def test_single_images_batch_as_before_the_grouping(cached: np.ndarray) -> None:
    """A loader of single images is a plain chunked permutation of the rows, and under
    torchrun the ranks' k-th batches together are the one-process k-th batch."""
    one = BatchLoader(cached, None, batch_size=4, seed=5)
    order = epoch_permutation(N, 5, 2)
    assert [b.index.tolist() for b in one.epoch(2)] == [list(order[i : i + 4]) for i in (0, 4, 8)]
    two = [BatchLoader(cached, None, 2, seed=5, rank=r, world_size=2) for r in (0, 1)]
    union = [
        sorted(a.index.tolist() + b.index.tolist())
        for a, b in zip(*[t.epoch(2) for t in two], strict=True)
    ]
    assert union == [sorted(order[i : i + 4]) for i in (0, 4, 8)]


def test_from_cache_takes_labels_from_the_frame(cached: np.ndarray) -> None:
    frame = pd.DataFrame({"label": np.arange(N) % 2, "path": [f"{i}.png" for i in range(N)]})
    cache = SimpleNamespace(images=cached, frame=frame)
    loader = BatchLoader.from_cache(cache, batch_size=5, shuffle=False)
    first = next(iter(loader))
    assert first.labels.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert BatchLoader.from_cache(cache, labels=None).epoch(0).__next__().labels is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": np.zeros(N - 1)}, "labels has 9 rows"),
        ({"weights": np.zeros(N + 1)}, "weights has 11 rows"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_misaligned_inputs_are_refused(cached: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchLoader(cached, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fraction", [0.5, 0.0])  # 0: never resident, the pinned path
def test_cuda_batches_match_cpu(cached: np.ndarray, fraction: float) -> None:
    cpu = BatchLoader(cached, np.arange(N), batch_size=3, seed=2)
    gpu = BatchLoader(
        cached, np.arange(N), batch_size=3, seed=2, device="cuda", gpu_memory_fraction=fraction
    )
    assert gpu.residency == ("device" if fraction else "pinned")
    for a, b in zip(cpu.epoch(0), list(gpu.epoch(0)), strict=True):
        assert b.images.is_cuda and b.labels.is_cuda and b.index.is_cuda
        assert torch.equal(a.images, b.images.cpu()) and torch.equal(a.index, b.index.cpu())
        assert torch.equal(a.labels, b.labels.cpu())
