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
from mura_lib.errors import CheckpointError, ConfigError
from mura_lib.models.build import model_from_checkpoint
from mura_lib.models.checkpoint import load_checkpoint
from mura_lib.models.study import StudyModel, segment_sum
from mura_lib.progress import track


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_model_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# Test-time augmentation: the probability of a view is the mean over transformed copies of it.
# "flip" adds the lateral mirror image, a transformation the models were trained with (hflip)
# and that changes no finding's meaning (MURA mixes left and right limbs).
TTA_MODES = ("none", "flip")


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ConfigError(f"test-time augmentation {mode!r}: use one of {TTA_MODES}")
    return mode


class CheckpointNormalizer:
    """The evaluation half of an Augmenter for a checkpoint: its normalisation, nothing else.

    Callable like :class:`mura_lib.data.augment.Augmenter` (``train=False``), so
    :func:`predict` takes either.
    """

    def __init__(self, ckpt: dict) -> None:
        self.mean = float(ckpt["normalization"]["mean"][0])
        self.std = float(ckpt["normalization"]["std"][0])

    def __call__(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        return normalize(images, self.mean, self.std)


def forward(
    model: nn.Module,
    x: torch.Tensor,
    group_index: torch.Tensor,
    n_groups: int,
    *,
    tta: str = "none",
    amp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group probabilities (n_groups,), view weights (V,) and the views' own probabilities
    (V,) for the model-ready views ``x`` (``group_index``: each view's group), averaged over
    ``tta`` (probabilities, not logits, as for an ensemble's members), in float32.

    A study-level model scores a group with its head. An image-level model scores it with the
    mean of its views' probabilities, the paper's study rule, each view weighing 1/n; a group
    of one image is then that image's probability.
    """
    copies = [x, x.flip(-1)] if tta == "flip" else [x]
    probs, weights, view_probs = [], [], []
    for copy in copies:
        if isinstance(model, StudyModel):
            with autocast(x.device, amp):
                logits = model(copy, group_index, n_groups)
            probs.append(torch.sigmoid(logits.float()))
            weights.append(model.view_weights)
            view_probs.append(torch.sigmoid(model.view_logits))
        else:
            with autocast(x.device, amp):
                own = torch.sigmoid(model(copy).squeeze(1).float())
            counts = segment_sum(torch.ones_like(own), group_index, n_groups)
            share = 1.0 / counts[group_index]
            probs.append(segment_sum(share * own, group_index, n_groups))
            weights.append(share)
            view_probs.append(own)
    return tuple(torch.stack(values).mean(0) for values in (probs, weights, view_probs))


@torch.inference_mode()
def predict(
    model: nn.Module,
    loader: BatchLoader,
    augmenter: Callable[..., torch.Tensor],
    *,
    amp: bool = True,
    channels_last: bool = False,
    tta: str = "none",
    progress: str = "none",
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """A model over an unshuffled loader: per row, the probability of its group (for single
    images, the image's own) and, for a study-level model, the view's weight in its study;
    NaN for the rows this rank did not predict (under torchrun each rank has a share of the
    groups) and for the weights of an image-level model.

    A study-level model goes with a loader of whole studies (``by_study``), so that every
    view of a study carries the study's probability: study scores (the mean over views) are
    then the model's own and every evaluation function applies unchanged. ``augmenter`` is
    called with ``train=False``: an Augmenter or a CheckpointNormalizer.
    """
    check_tta(tta)
    model.eval()
    device = loader.device
    probs = torch.full((len(loader.images),), float("nan"), dtype=torch.float32, device=device)
    weights = torch.full_like(probs, float("nan"))
    for batch in track(loader.epoch(0), progress, len(loader), desc):
        x = to_model_input(augmenter(batch.images, train=False), channels_last)
        group_probs, view_weights, _ = forward(
            model, x, batch.group_index, batch.n_groups, tta=tta, amp=amp
        )
        probs[batch.index] = group_probs[batch.group_index]
        if isinstance(model, StudyModel):
            weights[batch.index] = view_weights
    return probs.cpu().numpy(), weights.cpu().numpy()


def usable_checkpoint(path: str | Path) -> dict:
    """A checkpoint that can be used for inference: one with a decision threshold."""
    ckpt = load_checkpoint(path)
    if ckpt.get("threshold") is None:
        raise CheckpointError(
            f"{path} has no decision threshold (a last.pt?): use the best.pt of a run or a "
            "member written by --keep-top-k"
        )
    return ckpt


def load_for_inference(
    checkpoint: str | Path, device: str = "auto"
) -> tuple[torch.nn.Module, dict]:
    """The model of ``checkpoint`` in eval mode on ``device``, and the checkpoint dict.

    Only a checkpoint with a decision threshold (a best.pt, a top-k member) can be used: a
    last.pt was never calibrated on the validation studies.
    """
    ckpt = usable_checkpoint(checkpoint)
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, ckpt
