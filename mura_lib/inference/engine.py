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
from mura_lib.data.study_batches import StudyBatchLoader
from mura_lib.device import resolve_device
from mura_lib.errors import CheckpointError, ConfigError
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


# Test-time augmentation: the probability of a view is the mean over transformed copies of it.
# "flip" adds the lateral mirror image, a transformation the models were trained with (hflip)
# and that changes no finding's meaning (MURA mixes left and right limbs).
TTA_MODES = ("none", "flip")


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ConfigError(f"test-time augmentation {mode!r}: use one of {TTA_MODES}")
    return mode


def forward_probs(
    model: nn.Module, x: torch.Tensor, *, tta: str = "none", amp: bool = True
) -> torch.Tensor:
    """Abnormality probability of each image of a model-ready batch, averaged over ``tta``.

    Probabilities, not logits, are averaged (as for an ensemble's members), in float32.
    """
    with autocast(x.device, amp):
        logits = model(x).squeeze(1)
    probs = torch.sigmoid(logits.float())
    if tta == "flip":
        with autocast(x.device, amp):
            mirrored = model(x.flip(-1)).squeeze(1)
        probs = (probs + torch.sigmoid(mirrored.float())) / 2
    return probs


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


def forward_study(
    model: nn.Module,
    x: torch.Tensor,
    study_index: torch.Tensor,
    n_studies: int,
    *,
    tta: str = "none",
    amp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Study probabilities (n_studies,), view weights (V,) and the views' own probabilities
    (V,, from the backbone's classifier) of a study-level model for the model-ready views
    ``x`` of whole studies (``study_index``: each view's study), all averaged over ``tta``."""
    copies = [x, x.flip(-1)] if tta == "flip" else [x]
    probs, weights, view_probs = [], [], []
    for copy in copies:
        with autocast(x.device, amp):
            logits = model(copy, study_index, n_studies)
        probs.append(torch.sigmoid(logits.float()))
        weights.append(model.view_weights)
        view_probs.append(torch.sigmoid(model.view_logits))
    return tuple(torch.stack(values).mean(0) for values in (probs, weights, view_probs))


@torch.inference_mode()
def predict_study_probs(
    model: nn.Module,
    loader: StudyBatchLoader,
    augmenter: Callable[..., torch.Tensor],
    *,
    amp: bool = True,
    channels_last: bool = False,
    tta: str = "none",
    progress: str = "none",
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray]:
    """A study-level model over an (unshuffled) study loader: the probability of each of the
    loader's studies and the weight of each row (view) in its study; NaN where this rank
    did not predict (under torchrun each rank has a share of the studies)."""
    check_tta(tta)
    model.eval()
    device = loader.device
    probs = torch.full((loader.n_studies,), float("nan"), dtype=torch.float32, device=device)
    weights = torch.full((len(loader.images),), float("nan"), dtype=torch.float32, device=device)
    for batch in track(loader.epoch(0), progress, len(loader), desc):
        x = to_model_input(augmenter(batch.images, train=False), channels_last)
        study_probs, view_weights, _ = forward_study(
            model, x, batch.study_index, batch.n_studies, tta=tta, amp=amp
        )
        probs[torch.from_numpy(batch.studies).to(device)] = study_probs
        weights[batch.index.to(device)] = view_weights.float()
    return probs.cpu().numpy(), weights.cpu().numpy()


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    loader: BatchLoader,
    augmenter: Callable[..., torch.Tensor],
    *,
    amp: bool = True,
    channels_last: bool = False,
    tta: str = "none",
    progress: str = "none",
    desc: str = "predict",
) -> np.ndarray:
    """Abnormality probability of every row of an (unshuffled) loader, in row order.

    ``augmenter`` is called with ``train=False``: an Augmenter or a CheckpointNormalizer.
    """
    check_tta(tta)
    model.eval()
    device = loader.device
    probs = torch.empty(len(loader.images), dtype=torch.float32, device=device)
    for batch in track(loader.epoch(0), progress, len(loader), desc):
        x = to_model_input(augmenter(batch.images, train=False), channels_last)
        probs[batch.index.to(device)] = forward_probs(model, x, tta=tta, amp=amp)
    return probs.cpu().numpy()


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
