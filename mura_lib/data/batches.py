"""Batches of cached images delivered on the training device, without worker processes.

A batch is a set of whole groups: single images for an image-level model, whole studies (every
view, no padding, none dropped) for a study-level one, which pools a study's views with segment
operations (:mod:`mura_lib.models.study`). One loader serves both, so the two kinds of model
share the order of an epoch, the sharding under torchrun and the device placement.

The cache (:mod:`mura_lib.data.cache`) already holds every image decoded and resized, so a
batch is an index into one uint8 array: no ``Dataset``/``DataLoader``, no worker processes,
no per-item Python. Where the array lives depends on the device:

* CUDA, when it fits in ``gpu_memory_fraction`` of the free GPU memory: the whole uint8 array
  is copied to the GPU once (2.4 GB for MURA's training set at S=256); a batch is then an
  ``index_select`` on the GPU.
* CUDA, when it does not fit: each batch is gathered from the memory map and copied through
  pinned memory with ``non_blocking=True``, so the copy does not wait for the GPU to drain.
* CPU: the memory map is indexed directly (``torch.from_numpy`` of the gathered rows).

Images stay single-channel uint8 (B, 1, S, S) all the way to the augmentation. Models take ONE
input channel: :func:`~mura_lib.models.build.build_model` sums the pretrained RGB first-conv
weights into one channel (as timm's ``adapt_input_conv`` does), which gives exactly the
response of the gray image repeated three times. So the grayscale radiograph is never
tripled: a third of the memory, of the transfer and of the first convolution's work.

Order: the groups are shuffled with a permutation that depends only on (seed, epoch), so a run
resumed at epoch e sees the same order as an uninterrupted one; ``shuffle=False`` keeps frame
order for evaluation. ``index`` gives each view's row in the frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from mura_lib.data.transfer import host_to_device
from mura_lib.errors import ConfigError

if TYPE_CHECKING:
    from mura_lib.data.cache import ImageCache


@dataclass
class Batch:
    """Whole groups on the device: their views, flat, and each view's group."""

    images: torch.Tensor  # uint8 (V, 1, S, S)
    index: torch.Tensor  # int64 (V,): each view's row in the frame / cache
    group_index: torch.Tensor  # int64 (V,): 0..n_groups-1, the batch's group of each view
    groups: np.ndarray  # (n_groups,): the loader's group numbers
    labels: torch.Tensor | None  # float32 (n_groups,), None when the loader has no labels
    weights: torch.Tensor | None  # float32 (n_groups,): loss weight of each group, or None

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def n_groups(self) -> int:
        return len(self.groups)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of one epoch, a function of (seed, epoch) only.

    Seeding with the pair (not seed + epoch) keeps (seed=0, epoch=1) and (seed=1, epoch=0)
    apart.
    """
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def pack(sizes: np.ndarray, cap: int) -> list[np.ndarray]:
    """Positions in ``sizes`` grouped greedily, in order, into batches of at most ``cap``
    views (a group never straddles two batches)."""
    if len(sizes) and int(sizes.max()) == 1:  # single images: plain chunks
        return [np.arange(lo, min(lo + cap, len(sizes))) for lo in range(0, len(sizes), cap)]
    batches, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if total + size > cap and i > start:
            batches.append(np.arange(start, i))
            start, total = i, 0
        total += int(size)
    if len(sizes) > start:
        batches.append(np.arange(start, len(sizes)))
    return batches


def _per_group(
    values: np.ndarray | None, first: np.ndarray, name: str, n: int
) -> torch.Tensor | None:
    if values is None:
        return None
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} rows but the images have {n}")
    return torch.from_numpy(np.asarray(values, dtype=np.float32)[first])


class BatchLoader:
    """Iterate over a cached (N, S, S) uint8 array in batches of whole groups on ``device``.

    Args:
        images: the cache's array (a memmap is fine; it is read, never written).
        labels: per-row labels (a group's is that of its first row: the views of a study
            share the label), yielded as float32 per group; or None.
        batch_size: the most views in a batch of this process; at least the largest group,
            which is then a batch of its own.
        groups: each row's group (e.g. its study_id); None: every row is a group of its own.
        weights: per-row loss weights (per group, as ``labels``), or None.
        device: the training device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...).
        shuffle: a new order of the groups each epoch; False keeps row order (evaluation).
        seed: seed of the permutations (see :func:`epoch_permutation`).
        gpu_memory_fraction: on CUDA, copy the whole array to the GPU when it needs at most
            this fraction of the currently free GPU memory; 0 never does.
        rank, world_size: this process's share under torchrun. Shuffled (training): the
            epoch's order is cut to a multiple of ``world_size`` groups (the few left wait for
            the next epoch's order) and rank r takes the r-th of every ``world_size``; all ranks
            then take as many batches as the rank with the fewest (DDP needs equal steps). For
            single images with ``batch_size`` B per process this makes the union of the ranks'
            k-th batches the one-process k-th batch of ``world_size`` x B. Unshuffled
            (evaluation): rank r takes groups ``r::world_size``, all of them.

    Example::

        loader = BatchLoader.from_cache(cache, batch_size=32, device="cuda", seed=0)
        for epoch in range(start_epoch, epochs):
            for batch in loader.epoch(epoch):
                logits = model(augmenter(batch.images))
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        batch_size: int = 32,
        *,
        groups: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        seed: int = 0,
        gpu_memory_fraction: float = 0.5,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected a (N, S, S) uint8 array, got {images.dtype} {images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        n = images.shape[0]
        if groups is not None and len(groups) != n:
            raise ValueError(f"groups has {len(groups)} rows but the images have {n}")
        # Each row's group number, 0, 1, ... in order of first appearance.
        self.row_group = np.arange(n) if groups is None else pd.factorize(np.asarray(groups))[0]
        self.grouped = groups is not None
        order = np.argsort(self.row_group, kind="stable")
        bounds = np.flatnonzero(np.diff(self.row_group[order])) + 1
        self.members = np.split(order, bounds) if n else []  # the rows of each group
        self.sizes = np.array([len(rows) for rows in self.members], dtype=np.int64)
        largest = int(self.sizes.max(initial=0))
        if batch_size < largest:
            name = np.asarray(groups)[self.members[int(self.sizes.argmax())][0]]
            raise ConfigError(
                f"study_max_views={batch_size} is smaller than the largest study ({name}: "
                f"{largest} views); a study is never split, so use at least {largest}"
            )
        first = np.array([rows[0] for rows in self.members], dtype=np.int64)
        self._labels = _per_group(labels, first, "labels", n)
        self._weights = _per_group(weights, first, "weights", n)
        self.images = images
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.shuffle, self.seed = shuffle, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self._epoch = 0
        self._on_device: torch.Tensor | None = None
        self.residency = "host"  # "device": whole array on the GPU; "pinned": per-batch copies
        if self.device.type == "cuda":
            self._place_on_cuda(gpu_memory_fraction)

    @classmethod
    def from_cache(
        cls, cache: ImageCache, batch_size: int = 32, *, by_study: bool = False, **kwargs
    ) -> BatchLoader:
        """A loader over a built cache, labels from ``cache.frame["label"]``; ``by_study``
        batches whole studies (for a study-level model), otherwise single images."""
        kwargs.setdefault("labels", cache.frame["label"].to_numpy())
        groups = cache.frame["study_id"].to_numpy() if by_study else None
        return cls(cache.images, batch_size=batch_size, groups=groups, **kwargs)

    def _place_on_cuda(self, fraction: float) -> None:
        free, _total = torch.cuda.mem_get_info(self.device)
        if fraction > 0 and self.images.nbytes <= fraction * free:
            resident = torch.empty(self.images.shape, dtype=torch.uint8, device=self.device)
            # In slabs: never a second full host copy of a multi-gigabyte memmap.
            for lo in range(0, len(self.images), 2048):
                slab = torch.from_numpy(np.array(self.images[lo : lo + 2048]))
                resident[lo : lo + len(slab)].copy_(slab)
            self._on_device = resident
            self.residency = "device"
        else:
            self.residency = "pinned"

    @property
    def n_groups(self) -> int:
        return len(self.members)

    def __len__(self) -> int:
        return len(self.batch_groups(self._epoch))

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order ``iter(loader)`` yields."""
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(self._epoch)

    def shard(self, epoch: int, rank: int) -> np.ndarray:
        """The groups that ``rank`` takes in ``epoch``, in order."""
        n, world = self.n_groups, self.world_size
        if not self.shuffle:
            return np.arange(n)[rank::world]
        order = epoch_permutation(n, self.seed, epoch)
        return order[: n - n % world][rank::world]

    def rows(self) -> np.ndarray:
        """The rows this rank yields over an epoch of an unshuffled loader."""
        mine = self.shard(0, self.rank)
        return np.concatenate([self.members[g] for g in mine]) if len(mine) else mine

    def batch_groups(self, epoch: int) -> list[np.ndarray]:
        """The groups of each of this rank's batches of ``epoch``."""
        mine = self.shard(epoch, self.rank)
        batches = [mine[b] for b in pack(self.sizes[mine], self.batch_size)]
        if self.shuffle and self.world_size > 1:
            fewest = min(
                len(pack(self.sizes[self.shard(epoch, r)], self.batch_size))
                for r in range(self.world_size)
            )
            batches = batches[:fewest]
        return batches

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Yield the batches of ``epoch`` on the device."""
        for groups in self.batch_groups(epoch):
            if self.grouped:
                rows = np.concatenate([self.members[g] for g in groups])
                local = np.repeat(np.arange(len(groups)), self.sizes[groups])
            else:  # a single image is its own group: its row is its group number
                rows, local = groups, np.arange(len(groups))
            yield self._gather(rows, groups, local)

    def _gather(self, rows: np.ndarray, groups: np.ndarray, local: np.ndarray) -> Batch:
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        if self.residency == "device":
            assert self._on_device is not None
            images = self._on_device.index_select(0, host_to_device(index, self.device))
        else:
            images = host_to_device(torch.from_numpy(self.images[rows]), self.device)
        chosen = torch.from_numpy(np.asarray(groups, dtype=np.int64))
        return Batch(
            images=images.unsqueeze(1),
            index=host_to_device(index, self.device),
            group_index=host_to_device(torch.from_numpy(local), self.device),
            groups=np.asarray(groups),
            labels=None if self._labels is None else self._to_device(self._labels[chosen]),
            weights=None if self._weights is None else self._to_device(self._weights[chosen]),
        )

    def _to_device(self, values: torch.Tensor) -> torch.Tensor:
        return host_to_device(values, self.device)
