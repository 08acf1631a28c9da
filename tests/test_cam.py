"""Class activation maps: shape, Grad-CAM equal to the CAM, localisation, every backbone, films."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mura_lib.data.augment import normalize
from mura_lib.models.build import build_model
from mura_lib.models.cam import (
    NoSpatialMapError,
    cam_on_film,
    cam_overlay,
    cam_unavailable,
    class_activation_maps,
)

pytest_plugins = ["fixtures_training"]  # one_torch_thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")

S, PATCH = 64, 16  # resnet18's layer4 is 2 x 2 at S=64: one feature cell per quadrant


def patch_images(
    generator: torch.Generator, n: int, corners: list[tuple[int, int] | None]
) -> torch.Tensor:
    """Normalised (n, 1, S, S) dark noise, with a bright PATCH square at each given corner."""
    x = torch.randint(0, 60, (n, 1, S, S), generator=generator, dtype=torch.uint8)
    for i, corner in enumerate(corners):
        if corner is not None:
            r, c = corner
            x[i, :, r : r + PATCH, c : c + PATCH] = 255
    return normalize(x)


def train_on_patches(model: torch.nn.Module, steps: int) -> torch.nn.Module:
    """Train ``model`` (seeded) for ``steps`` batches to call bright patches abnormal."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        labels = torch.arange(16) % 2
        corners = [
            tuple(torch.randint(0, S - PATCH, (2,), generator=generator).tolist()) if y else None
            for y in labels
        ]
        logits = model(patch_images(generator, 16, corners)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def patch_model(one_torch_thread) -> torch.nn.Module:
    """A resnet18 (random init) trained to call bright patches abnormal."""
    torch.manual_seed(0)
    # maps peak at the patch from step 4 on; 8 leave a margin
    return train_on_patches(build_model("resnet18", "none"), steps=8)


@pytest.fixture(scope="module")
def small_patch_model(one_torch_thread) -> torch.nn.Module:
    """The project's SmallCNN (global max pooling; 4 x 4 maps at S=64), trained alike."""
    torch.manual_seed(0)
    return train_on_patches(build_model("small_cnn", "none"), steps=16)


def test_shape_and_logits_match_the_model(patch_model):
    x = patch_images(torch.Generator().manual_seed(1), 3, [None, (4, 4), (40, 20)])
    cams, logits = class_activation_maps(patch_model, x)
    assert cams.shape == (3, S, S) and logits.shape == (3,)
    with torch.no_grad():
        torch.testing.assert_close(logits, patch_model(x).squeeze(1))
    # it did learn the patches (eval-mode BatchNorm statistics still lag after 8 steps,
    # so compare with the plain image rather than with 0)
    assert min(logits[1], logits[2]) > logits[0] + 10


def test_grad_cam_is_the_cam_up_to_scale_and_bias(patch_model):
    """For global average pooling and a linear layer, Grad-CAM is the CAM ``w . f + b`` less
    the bias, divided by the h * w cells; so its mean times h * w, plus the bias, is the logit.

    The returned map is upsampled bilinearly (align_corners=False) by an integer factor (32
    here), which keeps the mean; so only float rounding separates the two.
    """
    x = patch_images(torch.Generator().manual_seed(2), 4, [None, (0, 0), (48, 48), (20, 30)])
    cams, logits = class_activation_maps(patch_model, x)
    cells, bias = 2 * 2, patch_model.fc.bias.item()  # layer4 is 2 x 2 at S=64
    torch.testing.assert_close(cams.mean(dim=(1, 2)) * cells + bias, logits, rtol=1e-5, atol=1e-4)


def test_one_feature_cell_gives_a_flat_map(patch_model):
    # at S=32 layer4 is 1 x 1: the map is that one value everywhere, the logit less the bias
    x = normalize(torch.randint(0, 255, (2, 1, 32, 32), dtype=torch.uint8))
    cams, logits = class_activation_maps(patch_model, x)
    expected = (logits - patch_model.fc.bias.item())[:, None, None].expand(-1, 32, 32)
    torch.testing.assert_close(cams, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("corner", "quadrant"),
    [((6, 6), (0, 0)), ((6, 42), (0, 1)), ((42, 6), (1, 0)), ((42, 42), (1, 1))],
)
@pytest.mark.parametrize("model_name", ["patch_model", "small_patch_model"])
def test_map_peaks_where_the_patch_is(request, model_name, corner, quadrant):
    model = request.getfixturevalue(model_name)
    x = patch_images(torch.Generator().manual_seed(3), 1, [corner])
    cams, _ = class_activation_maps(model, x)
    row, col = divmod(int(cams[0].argmax()), S)
    assert (row // (S // 2), col // (S // 2)) == quadrant


def test_training_mode_is_restored(patch_model):
    patch_model.train()
    try:
        class_activation_maps(patch_model, torch.zeros(1, 1, S, S))
        assert patch_model.training
    finally:
        patch_model.eval()


@pytest.mark.parametrize(
    "arch",
    ["densenet121", "efficientnet_b0", "convnext_tiny", "timm/resnet10t", "timm/convnext_atto"],
)
def test_every_convolutional_backbone_has_maps(arch):
    torch.manual_seed(0)
    model = build_model(arch, "none").eval()
    x = torch.randn(2, 1, S, S)
    cams, logits = class_activation_maps(model, x)
    assert cams.shape == (2, S, S) and torch.isfinite(cams).all()
    assert cams.std() > 0  # a map, not a constant
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x).squeeze(1))
    assert cam_unavailable(model, S) is None


def test_a_vision_transformer_gets_one_line():
    model = build_model("timm/vit_tiny_patch16_224", "none")
    reason = cam_unavailable(model, 224)
    assert reason is not None and "\n" not in reason
    assert "VisionTransformer" in reason and "convolutional backbone" in reason
    with pytest.raises(NoSpatialMapError, match="no spatial feature map"):
        class_activation_maps(model, torch.zeros(1, 1, 224, 224))


def test_maps_work_under_inference_mode(patch_model):
    """`mura predict` runs under torch.inference_mode; Grad-CAM needs gradients all the same."""
    x = patch_images(torch.Generator().manual_seed(4), 1, [(4, 4)])
    with torch.inference_mode():
        cams, _ = class_activation_maps(patch_model, x)
    assert cams.shape == (1, S, S)


@pytest.mark.parametrize("resize", ["letterbox", "stretch"])
def test_map_on_the_film_keeps_the_film_size_and_the_peak(resize):
    """A film 420 high and 512 wide; letterboxed into 64 x 64 it fills rows 6-57."""
    cam = np.zeros((S, S), dtype=np.float32)
    cam[20:24, 40:44] = 1.0  # inside the box; centre (22, 42) in input pixels
    on_film = cam_on_film(cam, (420, 512), resize)
    assert on_film.shape == (420, 512)
    rows, cols = np.nonzero(on_film >= 0.99 * on_film.max())
    top, box_h = (6, 52) if resize == "letterbox" else (0, S)
    assert abs(rows.mean() - (22 - top) * 420 / box_h) < 2
    assert abs(cols.mean() - 42 * 512 / S) < 2


@pytest.mark.parametrize("cam", [np.linspace(-1, 3, 32 * 32).reshape(32, 32), np.ones((32, 32))])
def test_overlay_is_an_rgb_image_of_the_input_size(cam):
    image = np.full((32, 32), 100, dtype=np.uint8)
    overlay = cam_overlay(image, cam)
    assert overlay.mode == "RGB" and overlay.size == (32, 32)
    pixels = np.asarray(overlay)
    if cam.min() == cam.max():  # a flat map tints the image evenly
        assert (pixels == pixels[0, 0]).all()
