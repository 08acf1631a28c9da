"""Batched augmentation: determinism, geometry of the single warp, jitter, normalisation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mura_lib.data.augment import (
    GRAY_MEAN,
    GRAY_STD,
    AugmentConfig,
    Augmenter,
    AugmentParams,
    affine_matrices,
    apply_augmentation,
    augment,
    draw_params,
    normalize,
    sampling_grid,
    warp,
)

S = 16


def images(batch: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, S, S), generator=generator, dtype=torch.uint8)


def params(batch: int = 1, **values: float) -> AugmentParams:
    """Parameters meaning "no change", with some overridden."""
    neutral = {
        "flip": 0.0,
        "angle": 0.0,
        "scale": 1.0,
        "shift_x": 0.0,
        "shift_y": 0.0,
        "brightness": 1.0,
        "contrast": 1.0,
        **values,
    }
    full = {
        name: torch.full((batch,), float(v), dtype=torch.float64) for name, v in neutral.items()
    }
    full["flip"] = full["flip"].bool()
    return AugmentParams(**full)


def test_same_seed_same_output_other_seed_differs() -> None:
    x = images()
    one = Augmenter(seed=1)(x)
    assert torch.equal(one, Augmenter(seed=1)(x))
    assert not torch.equal(one, Augmenter(seed=2)(x))


def test_set_epoch_replays_the_stream() -> None:
    x = images()
    augmenter = Augmenter(seed=0)
    augmenter.set_epoch(3)
    first = [augmenter(x) for _ in range(2)]
    augmenter.set_epoch(3)
    assert all(torch.equal(a, augmenter(x)) for a in first)
    augmenter.set_epoch(4)
    assert not torch.equal(first[0], augmenter(x))


def test_draws_do_not_depend_on_the_config() -> None:
    """A fixed number of draws per batch: switching a transform off does not shift the stream."""
    a, b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    draw_params(8, AugmentConfig(), a)
    draw_params(8, AugmentConfig.identity(), b)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))


def test_output_type_shape_and_device() -> None:
    out = augment(images(), AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (4, 1, S, S) and out.device.type == "cpu"


def test_eval_path_is_pure_normalisation() -> None:
    x = images()
    expected = (x.double() / 255 - GRAY_MEAN) / GRAY_STD
    for out in (Augmenter(seed=0)(x, train=False), normalize(x)):
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


def test_identity_config_only_normalises() -> None:
    x = images()
    out = augment(x, AugmentConfig.identity(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, normalize(x))


def test_identity_warp_reproduces_the_image() -> None:
    x = images().float()
    theta = affine_matrices(params(4))
    torch.testing.assert_close(warp(x, theta), x, rtol=0, atol=1e-3)


def test_sampling_grid_matches_affine_grid() -> None:
    theta = affine_matrices(draw_params(5, AugmentConfig(), torch.Generator().manual_seed(0)))
    expected = F.affine_grid(theta, [5, 1, S, S], align_corners=False)
    torch.testing.assert_close(sampling_grid(theta, S), expected, rtol=0, atol=1e-5)


def test_flip_mirrors_left_and_right() -> None:
    x = images(1).float()
    out = warp(x, affine_matrices(params(flip=1.0)))
    torch.testing.assert_close(out, torch.flip(x, dims=[3]), rtol=0, atol=1e-3)


def test_quarter_turn_is_a_rot90() -> None:
    x = images(1).float()
    out = warp(x, affine_matrices(params(angle=math.pi / 2)))
    turned = [torch.rot90(x, k, dims=(2, 3)) for k in (1, -1)]
    assert any(torch.allclose(out, t, atol=1e-3) for t in turned)


def test_shift_by_one_pixel_moves_content() -> None:
    x = images(1).float()
    out = warp(x, affine_matrices(params(shift_x=1 / S)))  # input = output + one pixel
    torch.testing.assert_close(out[..., :-1], x[..., 1:], rtol=0, atol=1e-3)
    assert (out[..., -1] == 0).all()  # zero padding comes in from the edge


def test_zoom_in_magnifies_about_the_centre() -> None:
    x = torch.zeros(1, 1, S, S)
    x[..., 6:10, 6:10] = 255.0  # a 4x4 square in the middle
    out = warp(x, affine_matrices(params(scale=2.0)))
    bright = (out > 127).nonzero()[:, 2:]
    assert (bright.min().item(), bright.max().item()) == (4, 11)  # now 8x8, still centred


def test_brightness_scales_and_clamps() -> None:
    x = torch.full((2, 1, S, S), 100, dtype=torch.uint8)
    config = replace(AugmentConfig.identity(), brightness=0.5)
    p = params(2)
    p.brightness = torch.tensor([1.5, 3.0], dtype=torch.float64)
    out = apply_augmentation(x, p, config) * GRAY_STD + GRAY_MEAN
    torch.testing.assert_close(out[0], torch.full((1, S, S), 150 / 255), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1], torch.full((1, S, S), 1.0), rtol=0, atol=1e-5)


def test_zero_contrast_gives_the_mean_gray() -> None:
    x = images(1)
    config = replace(AugmentConfig.identity(), contrast=1.0)
    out = apply_augmentation(x, params(contrast=0.0), config) * GRAY_STD + GRAY_MEAN
    torch.testing.assert_close(
        out, torch.full_like(out, x.double().mean().item() / 255), rtol=0, atol=1e-5
    )


def test_float_input_is_not_modified() -> None:
    x = images().float()
    before = x.clone()
    augment(x, AugmentConfig(), torch.Generator().manual_seed(0))
    normalize(x)
    assert torch.equal(x, before)


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, S, S\)"):
        augment(torch.zeros(2, 3, S, S, dtype=torch.uint8), AugmentConfig(), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x = images()
    cpu = Augmenter(seed=5)(x)
    cuda = Augmenter(seed=5)(x.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-3)
