"""Class activation maps (Zhou et al. 2016), the MURA paper's localisation method.

For a network that ends in global average pooling followed by a linear layer, the logit is
the spatial mean of ``w . f(x, y) + b`` where ``f`` are the last feature maps. That map (before
the mean) is the CAM: it shows where the evidence for "abnormal" lies, and its mean equals
the logit, which the tests use as a check.

The project's :class:`~mura_lib.models.small_cnn.SmallCNN` pools with a global max instead
(a finding covers a few cells of a film). Its map is the same weighted sum ``w . f(x, y) + b``
and is high where the evidence is, but its mean is not the logit: read it as a localisation,
not as a decomposition of the score.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mura_lib.errors import ConfigError

# (feature module, classifier, apply ReLU to the features as the model's forward does)
_CAM_LAYERS = {
    "ResNet": ("layer4", "fc", False),
    "DenseNet": ("features", "classifier", True),
    "SmallCNN": ("features", "classifier", False),
}


def _cam_layers(model: nn.Module) -> tuple[nn.Module, nn.Linear, bool]:
    spec = _CAM_LAYERS.get(type(model).__name__)
    if spec is None:
        raise ConfigError(
            f"class activation maps are implemented for ResNet, DenseNet and SmallCNN models, "
            f"not {type(model).__name__}"
        )
    features, classifier, relu = spec
    return model.get_submodule(features), model.get_submodule(classifier), relu


@torch.inference_mode()
def class_activation_maps(
    model: nn.Module, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (cams (B, H, W) at the input resolution, logits (B,)) for normalised ``images``."""
    feature_module, classifier, relu = _cam_layers(model)
    captured: list[torch.Tensor] = []
    handle = feature_module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        was_training = model.training
        model.eval()
        logits = model(images).float().squeeze(1)
        model.train(was_training)
    finally:
        handle.remove()
    feats = captured[0].float()
    if relu:
        feats = F.relu(feats)
    weight = classifier.weight.float()[0]  # (C,)
    bias = classifier.bias.float()[0] if classifier.bias is not None else 0.0
    cams = torch.einsum("bchw,c->bhw", feats, weight) + bias
    cams = F.interpolate(
        cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
    )
    return cams[:, 0], logits


# matplotlib's "jet" as its piecewise-linear segments (x, value) per channel, so that a CAM
# overlay (`mura predict --cam`) needs no plotting library; tested equal to matplotlib's.
_JET_SEGMENTS = (
    ((0.0, 0.35, 0.66, 0.89, 1.0), (0.0, 0.0, 1.0, 1.0, 0.5)),
    ((0.0, 0.125, 0.375, 0.64, 0.91, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0)),
    ((0.0, 0.11, 0.34, 0.65, 1.0), (0.5, 1.0, 1.0, 0.0, 0.0)),
)
_JET_LEVELS = 256  # matplotlib's lookup-table size


def _lookup_table(x: tuple[float, ...], y: tuple[float, ...]) -> np.ndarray:
    """One channel of a piecewise-linear colour map at ``_JET_LEVELS`` evenly spaced points,
    computed as matplotlib computes its lookup tables (so the colours agree bit for bit)."""
    # Both scaled to lookup-table units first, in matplotlib's order of operations.
    xp, yp = np.asarray(x) * (_JET_LEVELS - 1), np.asarray(y)
    grid = (_JET_LEVELS - 1) * np.linspace(0.0, 1.0, _JET_LEVELS)
    upper = np.searchsorted(xp, grid)[1:-1]
    distance = (grid[1:-1] - xp[upper - 1]) / (xp[upper] - xp[upper - 1])
    inner = distance * (yp[upper] - yp[upper - 1]) + yp[upper - 1]
    return np.clip(np.concatenate([[yp[0]], inner, [yp[-1]]]), 0.0, 1.0)


_JET_LUT = np.stack([_lookup_table(x, y) for x, y in _JET_SEGMENTS], axis=-1)


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour of each value in [0, 1]: an array of shape ``values.shape + (3,)``."""
    index = np.clip((np.asarray(values, dtype=np.float64) * _JET_LEVELS).astype(int), 0, 255)
    return _JET_LUT[index]


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> Image.Image:
    """Blend a heatmap (jet colour map, min-max scaled) over a uint8 grayscale image."""
    lo, hi = float(cam.min()), float(cam.max())
    scaled = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    heat = jet(scaled)
    gray = np.repeat((image.astype(np.float32) / 255.0)[..., None], 3, axis=-1)
    blended = (1 - alpha) * gray + alpha * heat
    return Image.fromarray(np.clip(blended * 255, 0, 255).astype(np.uint8))
