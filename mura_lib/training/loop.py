"""One epoch of training, the same code on CPU and CUDA.

On CUDA the model runs in channels_last memory format under bf16 autocast (no loss scaling
needed, unlike fp16), as in inference (:mod:`mura_lib.inference.engine`, which validation
uses); on CPU both are off and the code path is otherwise identical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mura_lib.data.augment import Augmenter
from mura_lib.data.batches import BatchLoader
from mura_lib.inference.engine import autocast, to_model_input
from mura_lib.models.build import freeze_batchnorm_stats
from mura_lib.progress import track

if TYPE_CHECKING:
    from mura_lib.training.losses import Criterion


def train_one_epoch(
    model: nn.Module,
    loader: BatchLoader,
    augmenter: Augmenter,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    *,
    criterion: Criterion,
    amp: bool = True,
    channels_last: bool = False,
    progress: str = "none",
) -> float:
    """Train for one epoch with ``criterion`` (one of :data:`~mura_lib.training.losses.LOSSES`);
    return the mean loss over batches.

    All randomness of the epoch (batch order, augmentation, dropout) is seeded from
    ``(seed, epoch)``, so a run resumed at this epoch repeats it exactly. A loader of whole
    studies (``by_study``) trains a study-level model: one logit, one label and one loss weight
    per study; a loader of single images, one per image.
    """
    model.train()
    freeze_batchnorm_stats(model)
    augmenter.set_epoch(epoch)
    device = loader.device
    total, count = torch.zeros((), device=device), 0
    for batch in track(loader.epoch(epoch), progress, len(loader), f"epoch {epoch + 1}"):
        x = to_model_input(augmenter(batch.images), channels_last)
        with autocast(device, amp):
            if loader.grouped:
                logits = model(x, batch.group_index, batch.n_groups)
            else:
                logits = model(x).squeeze(1)
        loss = criterion(logits.float(), batch.labels, batch.weights)  # float32 whatever autocast
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        count += 1
    return float(total) / max(count, 1)  # one device sync per epoch, not per step
