"""Batched data augmentation on the training device, and the normalisation every model input gets.

The project we grew from augmented one PIL image at a time (flip, rotation, colour jitter,
random resized crop), each a separate resample, in the training process. Here a whole batch
is augmented at once, on whatever device trains:

* one affine warp per batch: lateral flip, rotation, zoom and translation are composed into
  one 2x3 matrix per sample and applied by a single ``F.affine_grid`` + ``F.grid_sample``
  (bilinear, zero padding, the background colour of a radiograph), so the image is
  resampled once rather than once per transform;
* per-sample brightness and contrast (as torchvision's ``ColorJitter``: brightness scales,
  contrast blends with the image mean), clamped to the valid range;
* normalisation to float with a single-channel mean/std.

Random parameters are drawn on the CPU from a ``torch.Generator`` (a fixed number of draws per
batch, whatever the configuration) and only the small parameter tensors move to the device,
so a seed gives the same parameters on CPU and CUDA, and a resumed run can replay them.

Input: uint8 (B, 1, S, S) on any device. Output: float32 (B, 1, S, S) on the same device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mura_lib.data.transfer import host_to_device

# Grayscale statistics: the mean of ImageNet's three channel means / stds. Models take one
# input channel whose first-conv weights are the sum of the pretrained RGB weights, so a gray
# value normalised with these constants excites the network as the gray RGB image would.
GRAY_MEAN = 0.449
GRAY_STD = 0.226

_N_DRAWS = 7  # flip, angle, scale, tx, ty, brightness, contrast


@dataclass(frozen=True)
class AugmentConfig:
    """What the training augmentation may do. Ranges are symmetric around "no change".

    The default follows the MURA paper (lateral flips, rotations up to 30 degrees) plus mild
    zoom/shift and brightness/contrast jitter; :meth:`original_project` matches the project we
    grew from; :meth:`identity` only normalises.
    """

    hflip: bool = True  # random lateral flip, probability 0.5
    rotate_degrees: float = 30.0  # rotation uniform in [-d, d]
    scale: tuple[float, float] = (0.9, 1.1)  # zoom factor range; > 1 zooms in
    translate: float = 0.05  # shift up to this fraction of the side, each axis
    brightness: float = 0.2  # multiply intensities by a factor in [1 - b, 1 + b]
    contrast: float = 0.2  # blend with the image mean by a factor in [1 - c, 1 + c]
    mean: float = GRAY_MEAN  # normalisation
    std: float = GRAY_STD

    @classmethod
    def identity(cls) -> AugmentConfig:
        """No augmentation at all (normalisation only)."""
        return cls(
            hflip=False,
            rotate_degrees=0.0,
            scale=(1.0, 1.0),
            translate=0.0,
            brightness=0.0,
            contrast=0.0,
        )

    @classmethod
    def original_project(cls) -> AugmentConfig:
        """The augmentation family of the project we grew from, in this module's terms.

        Its RandomResizedCrop(scale=(0.85, 1.0)) cropped 85-100 % of the area and resized it
        back: an isotropic zoom of 1 to 1/sqrt(0.85) = 1.085 with the crop anywhere inside the
        image, i.e. a shift of up to (1 - 1/1.085) / 2 = 4 % of the side.
        """
        return cls(
            hflip=True,
            rotate_degrees=15.0,
            scale=(1.0, 1.085),
            translate=0.04,
            brightness=0.2,
            contrast=0.2,
        )

    @property
    def is_geometric(self) -> bool:
        return (
            self.hflip
            or self.rotate_degrees != 0
            or self.translate != 0
            or self.scale != (1.0, 1.0)
        )


@dataclass
class AugmentParams:
    """Per-sample random parameters of one batch (CPU tensors of shape (B,))."""

    flip: torch.Tensor  # bool
    angle: torch.Tensor  # radians
    scale: torch.Tensor
    shift_x: torch.Tensor  # fraction of the side
    shift_y: torch.Tensor
    brightness: torch.Tensor  # factor
    contrast: torch.Tensor  # factor


def draw_params(
    batch_size: int, config: AugmentConfig, generator: torch.Generator
) -> AugmentParams:
    """Draw one batch of random parameters on the CPU.

    Always consumes ``batch_size * 7`` numbers from ``generator``, so the stream of later
    batches does not depend on which transforms are switched on.
    """
    u = torch.rand((batch_size, _N_DRAWS), generator=generator, dtype=torch.float64)
    sym = 2.0 * u - 1.0  # uniform in [-1, 1]
    low, high = config.scale
    return AugmentParams(
        flip=(u[:, 0] < 0.5) & bool(config.hflip),
        angle=sym[:, 1] * math.radians(config.rotate_degrees),
        scale=low + u[:, 2] * (high - low),
        shift_x=sym[:, 3] * config.translate,
        shift_y=sym[:, 4] * config.translate,
        brightness=1.0 + sym[:, 5] * config.brightness,
        contrast=1.0 + sym[:, 6] * config.contrast,
    )


def affine_matrices(params: AugmentParams) -> torch.Tensor:
    """The (B, 2, 3) matrices that map output to input coordinates, for ``F.affine_grid``.

    Coordinates are normalised to [-1, 1]; the images are square, so a rotation in these
    coordinates is a true rotation. input = R(angle) @ diag(flip, 1) @ output / scale + shift.
    """
    cos, sin = torch.cos(params.angle), torch.sin(params.angle)
    flip = 1.0 - 2.0 * params.flip.to(torch.float64)
    inv = 1.0 / params.scale
    theta = torch.stack(
        [
            torch.stack([cos * flip * inv, -sin * inv, 2.0 * params.shift_x], dim=1),
            torch.stack([sin * flip * inv, cos * inv, 2.0 * params.shift_y], dim=1),
        ],
        dim=1,
    )
    return theta.to(torch.float32)


def sampling_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """The (B, S, S, 2) grid of ``F.affine_grid(theta, (B, 1, S, S), align_corners=False)``.

    Computed as two broadcast sums (x-term + y-term per output plane) instead of affine_grid's
    batched matmul over a (B, S*S, 3) base grid: the same numbers, about 2.5x faster on CPU,
    where the grid was a third of the augmentation's cost.
    """
    lin = (torch.arange(size, dtype=torch.float32, device=theta.device) * 2 + 1) / size - 1
    grid = torch.empty((theta.shape[0], size, size, 2), dtype=torch.float32, device=theta.device)
    for k in range(2):
        y_term = theta[:, k, 1, None, None] * lin[None, :, None] + theta[:, k, 2, None, None]
        x_term = theta[:, k, 0, None, None] * lin[None, None, :]
        torch.add(y_term, x_term, out=grid[..., k])
    return grid


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample float images (B, 1, S, S) with per-sample affine matrices (bilinear, zeros)."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images, got {tuple(images.shape)}")
    grid = sampling_grid(theta, images.shape[-1])
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def normalize(images: torch.Tensor, mean: float = GRAY_MEAN, std: float = GRAY_STD) -> torch.Tensor:
    """The evaluation path: uint8 (or [0, 255] float) images to normalised float32."""
    # uint8 * float promotes to float32 in the same pass as the scaling: two passes in all.
    scaled = torch.mul(images, 1.0 / (255.0 * std)).to(torch.float32)
    return scaled.sub_(mean / std)


def apply_augmentation(
    images: torch.Tensor, params: AugmentParams, config: AugmentConfig
) -> torch.Tensor:
    """Apply drawn parameters to uint8 images (B, 1, S, S): warp, jitter, normalise."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (B, 1, S, S), got {tuple(images.shape)}")
    if not config.is_geometric and not config.brightness and not config.contrast:
        return normalize(images, config.mean, config.std)
    # All per-sample numbers travel to the device in one (B, 8) copy.
    packed = torch.cat(
        [
            affine_matrices(params).reshape(-1, 6),
            params.brightness.to(torch.float32)[:, None],
            params.contrast.to(torch.float32)[:, None],
        ],
        dim=1,
    )
    packed = host_to_device(packed, images.device)
    x = images.to(torch.float32, copy=True)  # the steps below work in place on this copy
    if config.is_geometric:
        x = warp(x, packed[:, :6].reshape(-1, 2, 3))
    shape = (-1, 1, 1, 1)
    if config.brightness:
        # Brightness as ColorJitter: scale, then clamp to the valid range (x >= 0 already).
        x = x.mul_(packed[:, 6].reshape(shape)).clamp_(max=255.0)
    # Contrast as ColorJitter blends each image with its own mean gray level m and clamps to
    # [0, 255]; normalisation follows. Both are affine, so they fold into one multiply-add
    # and one clamp in normalised units. Passes over the batch are most of the augmentation's
    # cost on a CPU; folding halved them.
    scale = 1.0 / (255.0 * config.std)
    low, high = -config.mean / config.std, (1.0 - config.mean) / config.std
    if config.contrast:
        factor = packed[:, 7].reshape(shape)
        level = x.mean(dim=(1, 2, 3), keepdim=True)
        offset = level * (1.0 - factor) * scale + low
        return torch.addcmul(offset, x, factor * scale).clamp_(low, high)
    return x.mul_(scale).add_(low)


def augment(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Augment a uint8 batch (B, 1, S, S) with fresh random parameters from ``generator``."""
    params = draw_params(images.shape[0], config, generator)
    return apply_augmentation(images, params, config)


class Augmenter:
    """Seeded training augmentation and the matching evaluation normalisation.

    Example::

        augmenter = Augmenter(AugmentConfig(rotate_degrees=30), seed=0)
        for epoch in range(epochs):
            augmenter.set_epoch(epoch)  # a resumed run replays the same parameters
            for batch in loader.epoch(epoch):
                x = augmenter(batch.images)            # training
        x = augmenter(batch.images, train=False)       # evaluation: normalisation only
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.config = config if config is not None else AugmentConfig()
        self.seed = int(seed)
        # Under torchrun a rank holds every world_size-th sample of the global batch (see
        # BatchLoader): parameters are drawn for the whole global batch and this rank takes
        # its samples' share, so each sample gets the parameters it gets in one process.
        self.rank, self.world_size = int(rank), int(world_size)
        self.generator = torch.Generator(device="cpu")
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Restart the parameter stream at a state that depends only on (seed, epoch)."""
        state = np.random.SeedSequence([self.seed, int(epoch)]).generate_state(2, np.uint32)
        self.generator.manual_seed(int(state[0]) << 32 | int(state[1]))

    def __call__(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        if not train:
            return normalize(images, self.config.mean, self.config.std)
        if self.world_size == 1:
            return augment(images, self.config, self.generator)
        drawn = draw_params(images.shape[0] * self.world_size, self.config, self.generator)
        share = AugmentParams(
            **{k: v[self.rank :: self.world_size] for k, v in vars(drawn).items()}
        )
        return apply_augmentation(images, share, self.config)
