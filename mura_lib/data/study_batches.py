"""Batches of whole studies for a study-level model: every view of a study, no padding.

A MURA study holds 1 to 11 views. A batch here is a set of whole studies packed as one flat
uint8 tensor of their views (V, 1, S, S) with a study number per view (``study_index``), which
the model pools with segment operations (:mod:`mura_lib.models.study`). The batch is capped by
its number of views, not of studies (``max_views``): memory stays bounded whatever the study
sizes, and no view is padded or dropped.

Everything else is as in :class:`~mura_lib.data.batches.BatchLoader`, which this loader uses
for the gathering and the device placement: the same cache array, the order of an epoch a
function of (seed, epoch) only (so a resumed run repeats it), and under torchrun each rank
takes its share of the epoch's studies (studies are sharded, never views).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from mura_lib.data.batches import BatchLoader, epoch_permutation
from mura_lib.errors import ConfigError

if TYPE_CHECKING:
    from mura_lib.data.cache import ImageCache


@dataclass
class StudyBatch:
    """Whole studies on the device: their views, flat, and each view's study."""

    images: torch.Tensor  # uint8 (V, 1, S, S), the views of the studies in order
    study_index: torch.Tensor  # int64 (V,): 0..n_studies-1, the batch's study of each view
    studies: np.ndarray  # (n_studies,): the loader's study numbers (for gathering results)
    index: torch.Tensor  # int64 (V,): each view's row in the frame / cache
    labels: torch.Tensor | None  # float32 (n_studies,)
    weights: torch.Tensor | None  # float32 (n_studies,): loss weight of each study

    @property
    def n_studies(self) -> int:
        return len(self.studies)


def study_numbers_of_rows(frame: pd.DataFrame) -> np.ndarray:
    """Each row's study, numbered 0, 1, ... in order of first appearance in ``frame``."""
    codes, _ = pd.factorize(frame["study_id"], sort=False)
    return codes.astype(np.int64)


def study_rows(codes: np.ndarray) -> list[np.ndarray]:
    """The rows of each study, given each row's study number (:func:`study_numbers_of_rows`),
    views in frame order (the index frame is sorted by view)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, bounds) if len(order) else []


def pack(sizes: np.ndarray, max_views: int) -> list[np.ndarray]:
    """Positions in ``sizes`` grouped greedily, in order, into batches of at most
    ``max_views`` views (a study never straddles two batches)."""
    batches, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if total + size > max_views and i > start:
            batches.append(np.arange(start, i))
            start, total = i, 0
        total += int(size)
    if len(sizes) > start:
        batches.append(np.arange(start, len(sizes)))
    return batches


class StudyBatchLoader:
    """Iterate over the studies of a cached array in batches of at most ``max_views`` views.

    Args:
        images: the cache's (N, S, S) uint8 array.
        frame: its index frame (row i describes image i); ``study_id`` groups the rows.
        max_views: the cap of a batch (per process under torchrun); at least the largest
            study, which is then a batch of its own.
        labels, weights: per-row arrays (a study's value is that of its first view: all
            views of a study share the label and, per body part, the loss weight).
        shuffle: a new order of the studies each epoch; False keeps frame order.
        rank, world_size: under torchrun. Shuffled: rank r takes the r-th of every
            ``world_size`` studies of the epoch's order and packs them; all ranks then take
            as many batches as the rank with the fewest (DDP needs equal steps), so a few
            studies of an epoch's tail may wait for the next epoch's order. Unshuffled: rank r
            takes studies ``r::world_size``, all of them.
        device, seed, gpu_memory_fraction: as for :class:`BatchLoader`.
    """

    def __init__(
        self,
        images: np.ndarray,
        frame: pd.DataFrame,
        max_views: int,
        *,
        labels: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        seed: int = 0,
        gpu_memory_fraction: float = 0.5,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(frame) != len(images):
            raise ValueError(f"the frame has {len(frame)} rows but the images {len(images)}")
        self.row_study = study_numbers_of_rows(frame)  # (N,): each row's study number
        self.studies = study_rows(self.row_study)
        self.sizes = np.array([len(rows) for rows in self.studies])
        largest = int(self.sizes.max(initial=0))
        if max_views < largest:
            worst = frame["study_id"].iloc[self.studies[int(self.sizes.argmax())][0]]
            raise ConfigError(
                f"study_max_views={max_views} is smaller than the largest study ({worst}: "
                f"{largest} views); a study is never split, so use at least {largest}"
            )
        self.max_views = int(max_views)
        self.shuffle, self.seed = shuffle, int(seed)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.rank, self.world_size = int(rank), int(world_size)
        first = np.array([rows[0] for rows in self.studies], dtype=np.int64)
        # The per-view gathering and device placement are BatchLoader's (no labels there).
        self._views = BatchLoader(
            images, None, 1, device=device, shuffle=False, gpu_memory_fraction=gpu_memory_fraction
        )
        self.device = self._views.device
        self._labels = _per_study(labels, first, self.device)
        self._weights = _per_study(weights, first, self.device)
        self._epoch = 0

    @classmethod
    def from_cache(cls, cache: ImageCache, max_views: int, **kwargs) -> StudyBatchLoader:
        """A loader over a built cache, labels from ``cache.frame["label"]``."""
        labels = kwargs.pop("labels", cache.frame["label"].to_numpy())
        return cls(cache.images, cache.frame, max_views, labels=labels, **kwargs)

    @property
    def images(self) -> np.ndarray:
        return self._views.images

    @property
    def n_studies(self) -> int:
        return len(self.studies)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.batch_studies(self._epoch))

    def __iter__(self) -> Iterator[StudyBatch]:
        return self.epoch(self._epoch)

    def shard(self, epoch: int, rank: int) -> np.ndarray:
        """The studies (loader numbers) that ``rank`` takes in ``epoch``, in order."""
        n = self.n_studies
        order = epoch_permutation(n, self.seed, epoch) if self.shuffle else np.arange(n)
        return order[rank :: self.world_size]

    def study_numbers(self) -> np.ndarray:
        """The studies this rank yields over an epoch of an unshuffled loader."""
        return self.shard(0, self.rank)

    def batch_studies(self, epoch: int) -> list[np.ndarray]:
        """The studies of each of this rank's batches of ``epoch``."""
        mine = self.shard(epoch, self.rank)
        batches = [mine[b] for b in pack(self.sizes[mine], self.max_views)]
        if self.shuffle and self.world_size > 1:
            fewest = min(
                len(pack(self.sizes[self.shard(epoch, r)], self.max_views))
                for r in range(self.world_size)
            )
            batches = batches[:fewest]
        return batches

    def epoch(self, epoch: int) -> Iterator[StudyBatch]:
        """Yield the batches of ``epoch`` on the device."""
        for studies in self.batch_studies(epoch):
            rows = np.concatenate([self.studies[s] for s in studies])
            local = np.repeat(np.arange(len(studies)), self.sizes[studies])
            views = self._views.gather(rows)
            where = torch.from_numpy(studies).to(self.device)
            yield StudyBatch(
                images=views.images,
                study_index=torch.from_numpy(local).to(self.device),
                studies=studies,
                index=views.index,
                labels=None if self._labels is None else self._labels[where],
                weights=None if self._weights is None else self._weights[where],
            )


def _per_study(
    values: np.ndarray | None, first: np.ndarray, device: torch.device
) -> torch.Tensor | None:
    if values is None:
        return None
    return torch.from_numpy(np.asarray(values, dtype=np.float32)[first]).to(device)
