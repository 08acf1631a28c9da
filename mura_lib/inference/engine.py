"""Batched inference, the same code for validation during training and for evaluation.

On CUDA the model runs in channels_last memory format under bf16 autocast (no loss scaling
needed, unlike fp16); on CPU both are off and the code path is otherwise identical. The
checkpoint carries its preprocessing (image size, resize mode, normalisation) and its decision
threshold, so a model is used exactly as it was validated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mura_lib.data.augment import normalize
from mura_lib.data.batches import BatchLoader
from mura_lib.device import resolve_device
from mura_lib.errors import CheckpointError
from mura_lib.models.build import model_from_checkpoint
from mura_lib.models.checkpoint import load_checkpoint
from mura_lib.progress import track


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_model_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class CheckpointNormalizer:
    """The evaluation half of an Augmenter for a checkpoint: its normalisation, nothing else.

    Callable like :class:`mura_lib.data.augment.Augmenter` (``train=False``), so
    :func:`predict_probs` takes either.
    """

    def __init__(self, ckpt: dict) -> None:
        self.mean = float(ckpt["normalization"]["mean"][0])
        self.std = float(ckpt["normalization"]["std"][0])

    def __call__(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        return normalize(images, self.mean, self.std)


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    loader: BatchLoader,
    augmenter: Callable[..., torch.Tensor],
    *,
    amp: bool = True,
    channels_last: bool = False,
    progress: str = "none",
    desc: str = "predict",
) -> np.ndarray:
    """Abnormality probability of every row of an (unshuffled) loader, in row order.

    ``augmenter`` is called with ``train=False``: an Augmenter or a CheckpointNormalizer.
    """
    model.eval()
    device = loader.device
    probs = torch.empty(len(loader.images), dtype=torch.float32, device=device)
    for batch in track(loader.epoch(0), progress, len(loader), desc):
        x = to_model_input(augmenter(batch.images, train=False), channels_last)
        with autocast(device, amp):
            logits = model(x).squeeze(1)
        probs[batch.index.to(device)] = torch.sigmoid(logits.float())
    return probs.cpu().numpy()


def load_for_inference(
    checkpoint: str | Path, device: str = "auto"
) -> tuple[torch.nn.Module, dict]:
    """The model of ``checkpoint`` in eval mode on ``device``, and the checkpoint dict.

    Only a checkpoint with a decision threshold (a best.pt) can be used: a last.pt was never
    calibrated on the validation studies.
    """
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("threshold") is None:
        raise CheckpointError(
            f"{checkpoint} has no decision threshold (a last.pt?): use the best.pt of a run"
        )
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, ckpt
