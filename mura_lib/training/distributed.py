"""Training on several processes with torch.distributed, launched by ``torchrun``.

The same ``fit()`` runs alone or under ``torchrun --nproc_per_node=N -m mura_lib train ...``
(as torchvision's reference scripts and nanoGPT do): :func:`init_distributed` reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment torchrun sets, and otherwise says
nothing and returns a one-process context. NCCL on CUDA (one GPU per process, ``LOCAL_RANK``),
gloo on the CPU. A handful of helpers keep every file write on rank 0 and give every rank the
same validation predictions, so that every rank takes the same decisions.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from mura_lib.device import resolve_device
from mura_lib.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the run: its rank among ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this context started the process group (and ends it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, predictions, history and logs."""
        return self.rank == 0


def init_distributed(device: str) -> tuple[Distributed, torch.device]:
    """The process's context and device: one process unless torchrun started several."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), resolve_device(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {rank} wants GPU {local_rank}, but this machine has "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}: start "
                "torchrun with --nproc_per_node at most the number of GPUs, or --device cpu"
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    owns = not dist.is_initialized()
    if owns:
        # A generous timeout: rank 0 alone builds the image cache while the others wait.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    return Distributed(rank, world_size, local_rank, owns), dev


def barrier(ctx: Distributed) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: Distributed) -> None:
    """End the process group this context started (a no-op for one process)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def gather_rows(ctx: Distributed, rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Every rank's ``values`` at its ``rows``, assembled into one array of ``n`` on all ranks.

    Validation is sharded; the selection metric, the plateau schedule and early stopping
    need every validation image, and every rank must take the same decision from them.
    """
    if not ctx.enabled:
        out = np.empty(n, dtype=values.dtype)
        out[rows] = values
        return out
    shards: list = [None] * ctx.world_size
    dist.all_gather_object(shards, (np.asarray(rows), np.asarray(values)))
    out = np.empty(n, dtype=values.dtype)
    seen = np.zeros(n, dtype=bool)
    for shard_rows, shard_values in shards:
        out[shard_rows] = shard_values
        seen[shard_rows] = True
    if not seen.all():  # a bug, not a user error: never select on a partial validation set
        raise RuntimeError(f"validation gathered {int(seen.sum())} of {n} rows")
    return out


def mean_over_ranks(ctx: Distributed, value: float) -> float:
    """The mean of a per-rank number (each rank's mean training loss) over the ranks."""
    if not ctx.enabled:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return float(total.item()) / ctx.world_size


def wrap_for_ddp(
    model: torch.nn.Module,
    ctx: Distributed,
    device: torch.device,
    sync_batchnorm: bool,
    log: Callable[[str], None],
) -> torch.nn.Module:
    """The module to train: ``model`` itself, or under torchrun a DistributedDataParallel of it.

    BatchNorm: with N processes each rank sees batch_size / N images, and at the paper's
    batch of 8 on 4 GPUs that is 2 images, too few for batch statistics; on CUDA the layers
    become SyncBatchNorm (statistics over the global batch, as in one process). PyTorch has
    no SyncBatchNorm on the CPU, so there (gloo) each rank normalises over its own share.
    Parameters are shared with ``model``, which validation and checkpoints use directly.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda" and sync_batchnorm:
        model_sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if model_sync is not model:  # a top-level BatchNorm would be replaced, not converted
            raise ConfigError("the model's top module is a BatchNorm: cannot synchronise it")
    elif device.type != "cuda":
        log("BatchNorm statistics are per process on the CPU (no SyncBatchNorm there)")
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
