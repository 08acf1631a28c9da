"""One training step through the project's own code, alone or under torchrun (a helper of
tests/test_distributed.py, not a test module): writes the weights after the step to argv[1].

The global batch is the whole (tiny) training set, shuffled and augmented with the run's seed.
BatchNorm layers are frozen (eval mode: per-image, not per-batch statistics), because PyTorch
has no SyncBatchNorm on the CPU; every other layer trains.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from mura_lib.data.augment import (
    Augmenter,
    Brightness,
    Contrast,
    HFlip,
    Rotate,
    Scale,
    Translate,
)
from mura_lib.data.batches import BatchLoader
from mura_lib.models.build import build_model, set_trainable
from mura_lib.training.distributed import init_distributed, shutdown, wrap_for_ddp
from mura_lib.training.loop import train_one_epoch
from mura_lib.training.losses import weighted_bce

GLOBAL_BATCH = 16


def main(out: str) -> None:
    torch.set_num_threads(1)
    ctx, device = init_distributed("cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (GLOBAL_BATCH, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 2, GLOBAL_BATCH).astype(np.float32)
    weights = rng.uniform(0.5, 1.5, GLOBAL_BATCH)
    shard = dict(rank=ctx.rank, world_size=ctx.world_size)
    per_process = GLOBAL_BATCH // ctx.world_size
    loader = BatchLoader(
        images, labels, per_process, shuffle=True, seed=3, weights=weights, **shard
    )
    transforms = [HFlip(), Translate(0.1), Rotate(20.0), Scale(), Brightness(0.2), Contrast(0.2)]
    augmenter = Augmenter(transforms, seed=3, **shard)
    torch.manual_seed(0)
    model = build_model("small_cnn")
    convolutions = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    set_trainable(model, convolutions)  # BatchNorm frozen: see the module docstring
    trained = wrap_for_ddp(model, ctx, device, sync_batchnorm=False, log=lambda text: None)
    # Plain SGD: the weights after the step are w - lr * gradient, so equal weights mean equal
    # gradients. (Adam's first step divides by |gradient|, which turns the float noise of a
    # near-zero gradient, summed in another order, into a step of lr.)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    train_one_epoch(trained, loader, augmenter, optimizer, epoch=0, criterion=weighted_bce)
    if ctx.is_main:
        torch.save(model.state_dict(), out)
    shutdown(ctx)


if __name__ == "__main__":
    main(sys.argv[1])
