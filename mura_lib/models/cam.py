"""Class activation maps (Zhou et al. 2016), the MURA paper's localisation method, for any
convolutional backbone.

For a network that ends in global average pooling and a linear layer, the logit is the spatial
mean of ``w . f(x, y) + b``, where ``f`` are the last feature maps: that map is the CAM. Grad-CAM
(Selvaraju et al. 2017) weighs each feature map by the mean gradient of the logit over it,
which for such a head is ``w / (h * w)``: Grad-CAM equals the CAM up to scale and the bias, and
it needs no knowledge of the head, so it serves every architecture the registry builds (a
global max pool such as SmallCNN's, ConvNeXt's normalised head, timm's models). It is one
forward hook and one gradient, written here: captum's ``LayerGradCam`` computes the same, but
importing captum loads matplotlib, which the core never imports (`mura predict --cam` stays
free of plotting libraries).

The layer is the last feature map the network computes before it pools globally: the last
module output of shape (B, C, h, w) before its last global pooling module (or, when the network
pools with a function, before its last Linear layer). A backbone whose features become
a sequence of tokens after that (a vision transformer) has no spatial map, and gets one line
that says so.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mura_lib.data.images import letterbox_box
from mura_lib.errors import ConfigError

_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class NoSpatialMapError(ConfigError):
    """The backbone has no spatial feature map to draw a class activation map from."""


def _module_outputs(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Run ``model`` on ``images`` once; return its output and every submodule's tensor output,
    as (module, tensor) in the order the modules finished."""
    fired: list[tuple[nn.Module, torch.Tensor]] = []

    def record(module: nn.Module, _inputs: tuple, out: object) -> None:
        if isinstance(out, torch.Tensor):
            fired.append((module, out))

    hooks = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        output = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return output, fired


def _last_feature_map(model: nn.Module, fired: list) -> torch.Tensor:
    """Among ``fired`` (see :func:`_module_outputs`), the last spatial feature map.

    Raises:
        NoSpatialMapError: the model has none (its features become tokens, as a ViT's do).
    """
    # The last global pool (squeeze-and-excitation blocks pool too, inside the features).
    pools = [k for k, (m, _) in enumerate(fired) if _is_global_pool(m)]
    linears = [k for k, (m, _) in enumerate(fired) if isinstance(m, nn.Linear)]
    stop = pools[-1] if pools else linears[-1] if linears else len(fired)
    before = fired[:stop]
    pooling = set(fired[stop][0].modules()) if pools else set()  # a pool's own parts fire first
    spatial = [k for k, (m, out) in enumerate(before) if out.ndim == 4 and m not in pooling]
    if not spatial or any(out.ndim == 3 for _, out in before[spatial[-1] + 1 :]):
        raise NoSpatialMapError(
            f"no class activation maps for {type(model).__name__}: it has no spatial feature "
            "map before its classifier (a vision transformer?); CAMs need a convolutional "
            "backbone"
        )
    return before[spatial[-1]][1]


def _is_global_pool(module: nn.Module) -> bool:
    # timm pools with SelectAdaptivePool2d, whose inner AdaptiveAvgPool2d fires first.
    return isinstance(module, _GLOBAL_POOLS) or type(module).__name__ == "SelectAdaptivePool2d"


def cam_unavailable(model: nn.Module, image_size: int) -> str | None:
    """Why ``model`` has no class activation maps (one line), or None when it has them."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, fired = _module_outputs(
                model, torch.zeros(1, 1, image_size, image_size, device=device)
            )
        _last_feature_map(model, fired)
    except NoSpatialMapError as err:
        return str(err)
    finally:
        model.train(was_training)
    return None


def class_activation_maps(
    model: nn.Module, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (cams (B, H, W) at the input resolution, logits (B,)) for normalised ``images``.

    High values are where the evidence for "abnormal" lies; the maps are signed (no ReLU), as
    the CAM is, so that a normal film shows where it looks normal too. One forward pass finds
    the feature map and gives the logits; one gradient gives the weights.
    """
    was_training = model.training
    model.eval()  # BatchNorm statistics stay as trained; no dropout
    try:
        # Gradients are needed, also when called under torch.inference_mode: a normal tensor
        # copied out of inference mode can be differentiated.
        with torch.inference_mode(False), torch.enable_grad():
            x = images.clone().requires_grad_(True)
            output, fired = _module_outputs(model, x)
            logits = output.float().squeeze(1)
            features = _last_feature_map(model, fired)
            (grads,) = torch.autograd.grad(logits.sum(), features)
            # Each image's logit depends on its own features only, so the gradient of the
            # sum is each image's own; the mean gradient over a map is that map's weight.
            weights = grads.float().mean(dim=(2, 3), keepdim=True)
            cams = (weights * features.detach().float()).sum(dim=1, keepdim=True)
        cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
    finally:
        model.train(was_training)
    return cams[:, 0], logits.detach()


def cam_on_film(cam: np.ndarray, film_shape: tuple[int, int], resize: str) -> np.ndarray:
    """A CAM of the (S, S) model input mapped onto the film it came from: (height, width).

    A letterboxed input holds the film in a centred box: that box of the map is cut out and
    resized to the film; a stretched input is resized whole.
    """
    height, width = film_shape
    if resize == "letterbox":
        top, left, box_h, box_w = letterbox_box(height, width, cam.shape[0])
        cam = cam[top : top + box_h, left : left + box_w]
    resized = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )
    return resized[0, 0].numpy()


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
