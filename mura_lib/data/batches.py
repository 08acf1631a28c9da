"""Batches of cached images delivered on the training device, without worker processes.

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

Order: shuffled with a permutation that depends only on (seed, epoch), so a run resumed at
epoch e sees the same order as an uninterrupted one; ``shuffle=False`` keeps frame order for
evaluation. ``index`` gives each sample's row in the frame (to regroup views into studies).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from mura_lib.data.transfer import host_to_device

if TYPE_CHECKING:
    from mura_lib.data.cache import ImageCache


@dataclass
class Batch:
    """One batch on the training device."""

    images: torch.Tensor  # uint8 (B, 1, S, S)
    labels: torch.Tensor | None  # float32 (B,), None when the loader has no labels
    index: torch.Tensor  # int64 (B,): row numbers in the frame / cache
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # per-row arrays, e.g. weights

    def __len__(self) -> int:
        return int(self.index.shape[0])


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled row order of one epoch, a function of (seed, epoch) only.

    Seeding with the pair (not seed + epoch) keeps (seed=0, epoch=1) and (seed=1, epoch=0)
    apart.
    """
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def _as_tensor(values: np.ndarray) -> torch.Tensor:
    values = np.asarray(values)
    if values.dtype == np.float64:
        values = values.astype(np.float32)  # model side works in float32 (or lower)
    return torch.from_numpy(np.ascontiguousarray(values))


class BatchLoader:
    """Iterate over a cached (N, S, S) uint8 array in batches on ``device``.

    Args:
        images: the cache's array (a memmap is fine; it is read, never written).
        labels: per-row labels (yielded as float32), or None.
        batch_size: samples per batch.
        device: the training device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...).
        shuffle: a new permutation each epoch; False keeps row order (evaluation).
        seed: seed of the permutations (see :func:`epoch_permutation`).
        extra: further per-row arrays (e.g. ``{"weight": w}``), yielded in ``Batch.extra``.
        gpu_memory_fraction: on CUDA, copy the whole array to the GPU when it needs at most
            this fraction of the currently free GPU memory; 0 never does.
        rank, world_size: this process's share under torchrun. Shuffled (training): the
            epoch's order is cut into global batches of ``batch_size`` and this rank takes
            every ``world_size``-th sample of each, from the ``rank``-th on, so the union of
            the ranks' k-th batches is the one-process k-th batch (``batch_size`` keeps its
            meaning: the global batch). A last global batch is cut to a multiple of
            ``world_size`` so that every rank takes as many steps. Unshuffled (evaluation):
            this rank takes rows ``rank::world_size``, in batches of ``batch_size``.

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
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        seed: int = 0,
        extra: Mapping[str, np.ndarray] | None = None,
        gpu_memory_fraction: float = 0.5,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected a (N, S, S) uint8 array, got {images.dtype} {images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        n = images.shape[0]
        columns = {"labels": labels, **dict(extra or {})}
        for name, values in columns.items():
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} rows but the images have {n}")
        self.images = images
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.seed = int(seed)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if shuffle and batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} is not a multiple of the {world_size} processes: "
                "each must take an equal share of every global batch"
            )
        self.rank, self.world_size = int(rank), int(world_size)
        self._epoch = 0
        self._labels = None if labels is None else _as_tensor(np.asarray(labels, np.float32))
        self._extra = {name: _as_tensor(values) for name, values in dict(extra or {}).items()}
        self._on_device: torch.Tensor | None = None
        self.residency = "host"  # "device": whole array on the GPU; "pinned": per-batch copies
        if self.device.type == "cuda":
            self._place_on_cuda(gpu_memory_fraction)

    @classmethod
    def from_cache(
        cls,
        cache: ImageCache,
        batch_size: int = 32,
        label_column: str | None = "label",
        **kwargs,
    ) -> BatchLoader:
        """A loader over a built cache, with labels taken from ``cache.frame[label_column]``."""
        labels = None if label_column is None else cache.frame[label_column].to_numpy()
        return cls(cache.images, labels, batch_size, **kwargs)

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
        if self._labels is not None:
            self._labels = self._labels.to(self.device)
        self._extra = {name: values.to(self.device) for name, values in self._extra.items()}

    def __len__(self) -> int:
        return len(self.batch_indices(self._epoch))

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order ``iter(loader)`` yields."""
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(self._epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The row order of ``epoch`` (all rows, before batching)."""
        n = self.images.shape[0]
        return epoch_permutation(n, self.seed, epoch) if self.shuffle else np.arange(n)

    def rows(self) -> np.ndarray:
        """The rows this rank yields over an epoch of an unshuffled loader."""
        return np.arange(self.images.shape[0])[self.rank :: self.world_size]

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """The row numbers of each batch of ``epoch`` (this rank's share under torchrun)."""
        order = self.order(epoch) if self.shuffle else self.rows()
        chunks = [order[lo : lo + self.batch_size] for lo in range(0, len(order), self.batch_size)]
        if self.shuffle and self.world_size > 1:
            if chunks and len(chunks[-1]) < self.world_size:
                chunks.pop()
            cut = [chunk[: len(chunk) - len(chunk) % self.world_size] for chunk in chunks]
            chunks = [chunk[self.rank :: self.world_size] for chunk in cut]
        return chunks

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Yield the batches of ``epoch`` on the device."""
        for rows in self.batch_indices(epoch):
            yield self.gather(rows)

    def gather(self, rows: np.ndarray) -> Batch:
        """The images of ``rows`` (any order) as one batch on the device."""
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        if self.residency == "device":
            assert self._on_device is not None
            index = host_to_device(index, self.device)
            return self._make_batch(self._on_device.index_select(0, index), index)
        images = torch.from_numpy(self.images[index.numpy()])
        if self.residency == "pinned":
            return self._make_batch(
                host_to_device(images, self.device), host_to_device(index, self.device)
            )
        return self._make_batch(images, index)

    def _make_batch(self, images: torch.Tensor, index: torch.Tensor) -> Batch:
        """Assemble a batch; ``index`` lives where the label tensors live."""
        labels = None if self._labels is None else self._labels.index_select(0, index)
        extra = {name: values.index_select(0, index) for name, values in self._extra.items()}
        batch = Batch(images=images.unsqueeze(1), labels=labels, index=index, extra=extra)
        if self.residency == "host" and self.device.type != "cpu":  # e.g. mps: move it all
            batch = Batch(
                images=batch.images.to(self.device),
                labels=None if labels is None else labels.to(self.device),
                index=index.to(self.device),
                extra={name: values.to(self.device) for name, values in extra.items()},
            )
        return batch
