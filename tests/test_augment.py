"""Batched augmentation: each transform, one warp for all geometric ones, independent seeded
streams, the DDP share, the names a config accepts, and a transform added by a researcher."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mura_lib.config import GRAY_MEAN, GRAY_STD
from mura_lib.data import augment
from mura_lib.data.augment import (
    Augmenter,
    Brightness,
    Contrast,
    HFlip,
    PixelTransform,
    RandomGamma,
    Rotate,
    Scale,
    Translate,
    build_transforms,
    normalize,
    register,
    sampling_grid,
    stream_seed,
    warp,
)
from mura_lib.data.batches import BatchLoader
from mura_lib.errors import ConfigError
from mura_lib.models.build import build_model
from mura_lib.training.config import TrainConfig
from mura_lib.training.loop import train_one_epoch
from mura_lib.training.losses import weighted_bce

S = 16


def images(batch: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, S, S), generator=generator, dtype=torch.uint8)


def default_augmenter(seed: int = 0, **shard: int) -> Augmenter:
    return Augmenter(TrainConfig().augmentations(), seed=seed, **shard)


def column(*values: float) -> torch.Tensor:
    """Parameters of one transform for len(values) samples, one number each."""
    return torch.tensor(values, dtype=torch.float64)[:, None]


def theta(transform, params: torch.Tensor) -> torch.Tensor:
    return transform.matrix(params)[:, :2].to(torch.float32)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return x * GRAY_STD + GRAY_MEAN


@pytest.fixture
def registry(monkeypatch):
    """The registry as the library fills it, restored after the test."""
    monkeypatch.setattr(augment, "TRANSFORMS", dict(augment.TRANSFORMS))
    return augment.TRANSFORMS


# --------------------------------------------------------------------------- the default list


def test_the_default_list_is_the_papers_plus_zoom_shift_and_jitter() -> None:
    transforms = TrainConfig().augmentations()
    assert [t.name for t in transforms] == [
        "hflip",
        "translate",
        "rotate",
        "scale",
        "brightness",
        "contrast",
    ]
    flip, shift, rotate, scale, brightness, contrast = transforms
    assert (flip.p, shift.fraction, rotate.degrees) == (0.5, 0.05, 30.0)
    assert (scale.low, scale.high, brightness.amount, contrast.amount) == (0.9, 1.1, 0.2, 0.2)


def test_none_and_zero_ranges_only_normalise() -> None:
    x = images()
    assert TrainConfig(augment="none").augmentations() == []
    zero = {"rotate_degrees": 0.0, "translate": 0.0, "brightness": 0.0, "contrast": 0.0}
    off = TrainConfig(
        augment="translate,rotate,scale,brightness,contrast", scale_min=1.0, scale_max=1.0, **zero
    )
    for transforms in ([], off.augmentations()):
        torch.testing.assert_close(Augmenter(transforms)(x), normalize(x))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"augment": "hflip,blur"}, r"unknown 'blur'; use comma-separated names from hflip, "),
        ({"augment": ""}, r"unknown ''; .* or none"),
        ({"augment": "rotate,hflip,rotate"}, r"names rotate twice: name it once"),
        ({"rotate_degrees": -5.0}, r"rotate_degrees=-5.0: use a largest angle in \[0, 180\]"),
        ({"scale_min": 1.2}, r"scale_min=1.2, scale_max=1.1: use 0 < scale_min <= scale_max"),
        ({"translate": 2.0}, r"translate=2.0: use a fraction of the side in \[0, 1\]"),
        ({"contrast": 1.5}, r"contrast=1.5: use a jitter in \[0, 1\]"),
    ],
)
def test_bad_augmentation_settings_are_refused_by_validate(change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change).validate()


def test_unused_transform_settings_are_not_checked() -> None:
    TrainConfig(augment="hflip", rotate_degrees=-5.0).validate()


# --------------------------------------------------------------------------- random streams


def test_same_seed_same_output_other_seed_differs() -> None:
    x = images()
    one = default_augmenter(seed=1)(x)
    assert torch.equal(one, default_augmenter(seed=1)(x))
    assert not torch.equal(one, default_augmenter(seed=2)(x))


def test_set_epoch_replays_the_stream() -> None:
    """A run resumed at an epoch draws that epoch's parameters again."""
    augmenter = default_augmenter()
    augmenter.set_epoch(3)
    first = [augmenter.draw(4) for _ in range(2)]
    fresh = default_augmenter()
    fresh.set_epoch(3)
    for drawn in first:
        assert all(torch.equal(a, b) for a, b in zip(drawn, fresh.draw(4), strict=True))
    fresh.set_epoch(4)
    assert not torch.equal(first[0][2], fresh.draw(4)[2])


def test_adding_or_removing_a_transform_changes_no_other_draws() -> None:
    base = [HFlip(), Rotate(), Brightness()]
    more = [HFlip(), Translate(), Rotate(), RandomGamma(), Brightness()]
    a, b = Augmenter(base, seed=7), Augmenter(more, seed=7)
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for _ in range(3):
            drawn_a, drawn_b = a.draw(8), b.draw(8)
            for i, j in ((0, 0), (1, 2), (2, 4)):
                assert torch.equal(drawn_a[i], drawn_b[j])


def test_stream_seeds_are_fixed_functions_of_seed_epoch_and_name() -> None:
    # crc32 of the name, not hash(): the same in every process and every Python, so the
    # values can be pinned. A change here changes every run's augmentation.
    assert stream_seed(0, 0, "rotate") == 4251301662918905812
    assert stream_seed(3, 1, "hflip") == 6257032171012186423
    seeds = {stream_seed(0, 0, "rotate"), stream_seed(0, 1, "rotate"), stream_seed(0, 0, "scale")}
    assert len(seeds) == 3


@pytest.mark.parametrize("world_size", [2, 4])
def test_each_rank_gets_its_samples_share_of_the_one_process_draws(world_size) -> None:
    """Under torchrun a rank holds every world_size-th sample of the global batch."""
    x = images(8)
    alone = default_augmenter(seed=3)
    ranks = [default_augmenter(seed=3, rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 2):
        for augmenter in (alone, *ranks):
            augmenter.set_epoch(epoch)
        for _ in range(2):  # the streams stay aligned from batch to batch
            full = alone(x)
            for rank, augmenter in enumerate(ranks):
                out = augmenter(x[rank::world_size])
                torch.testing.assert_close(out, full[rank::world_size], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- one warp


def test_output_type_shape_and_device() -> None:
    out = default_augmenter()(images())
    assert out.dtype == torch.float32 and out.shape == (4, 1, S, S) and out.device.type == "cpu"


def test_eval_path_is_pure_normalisation() -> None:
    x = images()
    expected = (x.double() / 255 - GRAY_MEAN) / GRAY_STD
    for out in (default_augmenter()(x, train=False), normalize(x)):
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


def test_identity_warp_reproduces_the_image() -> None:
    x = images().float()
    torch.testing.assert_close(warp(x, theta(Rotate(), column(0, 0, 0, 0))), x, atol=1e-3, rtol=0)


def test_sampling_grid_matches_affine_grid() -> None:
    matrices = theta(Rotate(), Rotate().draw(5, torch.Generator().manual_seed(0)))
    expected = F.affine_grid(matrices, [5, 1, S, S], align_corners=False)
    torch.testing.assert_close(sampling_grid(matrices, S), expected, rtol=0, atol=1e-5)


def test_flip_mirrors_left_and_right_with_probability_p() -> None:
    x = images(1).float()
    out = warp(x, theta(HFlip(), column(1.0)))
    torch.testing.assert_close(out, torch.flip(x, dims=[3]), rtol=0, atol=1e-3)
    flips = HFlip().draw(4000, torch.Generator().manual_seed(0))
    assert set(flips.flatten().tolist()) == {0.0, 1.0} and abs(flips.mean() - 0.5) < 0.03
    assert HFlip(0.0).is_identity


def test_quarter_turn_is_a_rot90() -> None:
    x = images(1).float()
    out = warp(x, theta(Rotate(), column(math.pi / 2)))
    turned = [torch.rot90(x, k, dims=(2, 3)) for k in (1, -1)]
    assert any(torch.allclose(out, t, atol=1e-3) for t in turned)


def test_shift_by_one_pixel_moves_content() -> None:
    x = images(1).float()
    out = warp(x, theta(Translate(), torch.tensor([[1 / S, 0.0]], dtype=torch.float64)))
    torch.testing.assert_close(out[..., :-1], x[..., 1:], rtol=0, atol=1e-3)
    assert (out[..., -1] == 0).all()  # zero padding comes in from the edge


def test_zoom_in_magnifies_about_the_centre() -> None:
    x = torch.zeros(1, 1, S, S)
    x[..., 6:10, 6:10] = 255.0  # a 4x4 square in the middle
    out = warp(x, theta(Scale(), column(2.0)))
    bright = (out > 127).nonzero()[:, 2:]
    assert (bright.min().item(), bright.max().item()) == (4, 11)  # now 8x8, still centred


def test_list_order_is_the_order_the_image_moves_in_one_warp() -> None:
    """Shift then zoom x2 moves the content twice as far as zoom then shift."""
    x = torch.zeros(1, 1, S, S, dtype=torch.uint8)
    x[..., 7:9, 7:9] = 255
    shift, zoom = torch.tensor([[-2 / S, 0.0]], dtype=torch.float64), column(2.0)
    moved = {}
    for order in ("translate,scale", "scale,translate"):
        augmenter = Augmenter(
            TrainConfig(scale_min=2.0, scale_max=2.0, augment=order).augmentations()
        )
        params = [shift if t.name == "translate" else zoom for t in augmenter.transforms]
        bright = (unnormalize(augmenter.apply(x, params)) > 0.5).nonzero()[:, 3]
        moved[order] = bright.float().mean().item() - 7.5
    assert moved == pytest.approx({"translate,scale": 4.0, "scale,translate": 2.0})


# --------------------------------------------------------------------------- pixel transforms


def test_brightness_scales_and_clamps() -> None:
    x = torch.full((2, 1, S, S), 100, dtype=torch.uint8)
    out = unnormalize(Augmenter([Brightness(0.5)]).apply(x, [column(1.5, 3.0)]))
    torch.testing.assert_close(out[0], torch.full((1, S, S), 150 / 255), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1], torch.full((1, S, S), 1.0), rtol=0, atol=1e-5)


def test_zero_contrast_gives_the_mean_gray() -> None:
    x = images(1)
    out = unnormalize(Augmenter([Contrast(1.0)]).apply(x, [column(0.0)]))
    mean = x.double().mean().item() / 255
    torch.testing.assert_close(out, torch.full_like(out, mean), rtol=0, atol=1e-5)


def test_contrast_folded_with_normalisation_equals_contrast_then_normalisation() -> None:
    x = images()
    factors = column(0.5, 0.9, 1.2, 1.8)
    folded = Augmenter([Contrast(1.0)]).apply(x, [factors])
    # Brightness 1 after it: contrast's own apply, then the separate normalisation.
    plain = Augmenter([Contrast(1.0), Brightness(0.5)]).apply(x, [factors, column(1, 1, 1, 1)])
    torch.testing.assert_close(folded, plain, rtol=0, atol=1e-5)


def test_float_input_is_not_modified() -> None:
    x = images().float()
    before = x.clone()
    default_augmenter()(x)
    normalize(x)
    assert torch.equal(x, before)


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, S, S\)"):
        default_augmenter()(torch.zeros(2, 3, S, S, dtype=torch.uint8))


# --------------------------------------------------------------------------- adding one


def test_the_worked_example_is_named_in_the_config_and_used_in_training() -> None:
    """gamma, the README's example of adding a transform: registered, named, trained with."""
    config = TrainConfig(augment="hflip,rotate,gamma", rotate_degrees=10.0)
    config.validate()
    transforms = config.augmentations()
    assert [type(t) for t in transforms] == [HFlip, Rotate, RandomGamma]
    # Gamma alone: a power of the [0, 1] intensities.
    x = images(2)
    out = unnormalize(Augmenter([RandomGamma()]).apply(x, [column(0.5, 2.0)]))
    expected = (x.double() / 255) ** torch.tensor([0.5, 2.0]).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)
    # One training epoch through the project's loop.
    rng = np.random.default_rng(0)
    loader = BatchLoader(
        rng.integers(0, 256, (8, 32, 32), dtype=np.uint8),
        rng.integers(0, 2, 8).astype(np.float32),
        4,
        weights=np.ones(8),
    )
    torch.manual_seed(0)
    model = build_model("small_cnn")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    augmenter = Augmenter(transforms)
    loss = train_one_epoch(model, loader, augmenter, optimizer, 0, criterion=weighted_bce)
    assert math.isfinite(loss)


def test_a_name_is_registered_once(registry) -> None:
    class Other(PixelTransform):
        pass

    taken = r"'rotate' already names mura_lib.data.augment.Rotate: register yours under another"
    with pytest.raises(ConfigError, match=taken):
        register("rotate")(Other)
    register("rotate")(Rotate)  # the same class again, as a notebook cell run twice
    with pytest.raises(ConfigError, match="'my gamma' cannot name a transform: use a word"):
        register("my gamma")(Other)
    assert registry["rotate"] is Rotate


def test_build_transforms_reads_the_parameters_from_the_config() -> None:
    config = TrainConfig(rotate_degrees=12.0, scale_min=0.8, scale_max=1.3, translate=0.1)
    rotate, scale, shift = build_transforms(" rotate, scale ,translate", config)
    assert (rotate.degrees, scale.low, scale.high, shift.fraction) == (12.0, 0.8, 1.3, 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x = images()
    cpu = default_augmenter(seed=5)(x)
    cuda = default_augmenter(seed=5)(x.cuda()).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-3)
