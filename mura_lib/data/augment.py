"""Batched data augmentation on the training device: a list of small named transforms, and the
normalisation every model input gets.

A training run names its augmentation as a list (``augment = "hflip,translate,rotate,..."``),
applied in order, as torchvision's ``Compose`` would, but to a whole batch at once on whatever
device trains. Input: uint8 (B, 1, S, S) on any device; output: float32 (B, 1, S, S), same device.

* Geometric transforms (:class:`GeometricTransform`: flip, shift, rotation, zoom) each give a
  3x3 matrix per sample. Their product is applied by ONE ``F.affine_grid`` + ``F.grid_sample``
  (bilinear, zero padding, the background colour of a radiograph), so the image is resampled
  once however many there are. They move the image in list order: the default shifts before
  it rotates and zooms about the centre, so a shift turns and scales with the image.
* Pixel transforms (:class:`PixelTransform`: brightness, contrast) then work on float images
  in [0, 1], in list order.
* Normalisation with the single-channel mean/std ends it, folded into the last pixel transform
  where that transform knows how (contrast does): passes over the batch are most of the
  augmentation's cost on a CPU.

Each transform draws its per-sample parameters on the CPU from its own ``torch.Generator``,
seeded from (seed, epoch, its name) alone: a seed gives the same parameters on CPU and CUDA, a
resumed run replays them, and adding or removing a transform changes no other's draws. The
numbers the device needs travel in one small copy per batch.

Adding a transform touches one place: a subclass of GeometricTransform or PixelTransform in
this file, registered under its name with ``@register("name")``; ``--augment ...,name`` then
uses it (README, "How to extend"). Evaluation only normalises (:func:`normalize`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from mura_lib.config import GRAY_MEAN, GRAY_STD
from mura_lib.data.transfer import host_to_device
from mura_lib.errors import ConfigError

if TYPE_CHECKING:
    from mura_lib.training.config import TrainConfig


class Transform:
    """One random augmentation of a whole batch, with parameters drawn per sample."""

    name = ""  # set by @register: the transform's name in `augment` and the seed of its stream
    is_identity = False  # True when its parameters make it change nothing: it is then skipped

    @classmethod
    def from_config(cls, config: TrainConfig) -> Transform:
        """The transform with its parameters from a training config (default: its own)."""
        return cls()

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The (n, k) float64 parameters of n samples, drawn on the CPU from ``generator``."""
        raise NotImplementedError


class GeometricTransform(Transform):
    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        """(n, 3, 3) float64: per sample, the map from a point of the output to the point of
        the input it is read from, in coordinates normalised to [-1, 1] (as ``F.affine_grid``)."""
        raise NotImplementedError


class PixelTransform(Transform):
    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Transform float32 images (B, 1, S, S) in [0, 1] on the device, with their (B, k)
        float32 parameters on the same device. ``x`` is the augmenter's own copy: changing it
        in place saves a pass. The result stays in [0, 1]."""
        raise NotImplementedError

    def apply_and_normalize(
        self, x: torch.Tensor, params: torch.Tensor, mean: float, std: float
    ) -> torch.Tensor:
        """``apply``, then ``(x - mean) / std``; override to fold the two into fewer passes."""
        return self.apply(x, params).sub_(mean).mul_(1.0 / std)


TRANSFORMS: dict[str, type[Transform]] = {}
T = TypeVar("T", bound=type[Transform])


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a transform available as ``name`` in a run's ``augment`` list."""

    def add(cls: T) -> T:
        if not name or name == "none" or any(c in name for c in ", :"):
            raise ConfigError(f"{name!r} cannot name a transform: use a word such as 'gamma'")
        old = TRANSFORMS.get(name)
        # The same class again (a notebook cell run twice) replaces itself; another is refused.
        if old is not None and _qualified(old) != _qualified(cls):
            raise ConfigError(
                f"{name!r} already names {_qualified(old)}: register yours under another name"
            )
        cls.name = name
        TRANSFORMS[name] = cls
        return cls

    return add


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _uniform(n: int, k: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand((n, k), generator=generator, dtype=torch.float64)
    return u.mul_(high - low).add_(low)


_EYE = torch.eye(3, dtype=torch.float64)


def _matrices(n: int) -> torch.Tensor:
    return _EYE.expand(n, 3, 3).clone()  # a third of the time of eye(3).repeat(n, 1, 1)


@register("hflip")
class HFlip(GeometricTransform):
    """Lateral mirror image with probability ``p`` (the paper's; MURA mixes left and right)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"hflip probability {p}: use a probability in [0, 1]")
        self.p = p
        self.is_identity = p == 0.0

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand((n, 1), generator=generator, dtype=torch.float64)
        return (u < self.p).to(torch.float64)

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        m = _matrices(len(params))
        m[:, 0, 0] = 1.0 - 2.0 * params[:, 0]
        return m


@register("translate")
class Translate(GeometricTransform):
    """Shift by up to ``fraction`` of the side along each axis, uniformly."""

    def __init__(self, fraction: float = 0.05) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"translate={fraction}: use a fraction of the side in [0, 1]")
        self.fraction = fraction
        self.is_identity = fraction == 0.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> Translate:
        return cls(config.translate)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return _uniform(n, 2, -self.fraction, self.fraction, generator)

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        m = _matrices(len(params))
        m[:, :2, 2] = 2.0 * params  # the side spans 2 in normalised coordinates
        return m


@register("rotate")
class Rotate(GeometricTransform):
    """Rotation about the centre by an angle uniform in [-degrees, degrees]."""

    def __init__(self, degrees: float = 30.0) -> None:
        if not 0.0 <= degrees <= 180.0:
            raise ConfigError(f"rotate_degrees={degrees}: use a largest angle in [0, 180]")
        self.degrees = degrees
        self.is_identity = degrees == 0.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> Rotate:
        return cls(config.rotate_degrees)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        limit = math.radians(self.degrees)
        return _uniform(n, 1, -limit, limit, generator)

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        # The images are square, so a rotation in normalised coordinates is a true rotation.
        cos, sin = torch.cos(params[:, 0]), torch.sin(params[:, 0])
        m = _matrices(len(params))
        m[:, :2, :2] = torch.stack([cos, -sin, sin, cos], dim=1).view(-1, 2, 2)
        return m


@register("scale")
class Scale(GeometricTransform):
    """Zoom about the centre by a factor uniform in [low, high]; > 1 zooms in."""

    def __init__(self, low: float = 0.9, high: float = 1.1) -> None:
        if not 0.0 < low <= high:
            raise ConfigError(f"scale_min={low}, scale_max={high}: use 0 < scale_min <= scale_max")
        self.low, self.high = low, high
        self.is_identity = low == high == 1.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> Scale:
        return cls(config.scale_min, config.scale_max)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return _uniform(n, 1, self.low, self.high, generator)

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        m = _matrices(len(params))
        m[:, 0, 0] = m[:, 1, 1] = 1.0 / params[:, 0]
        return m


def _check_jitter(field: str, amount: float) -> float:
    if not 0.0 <= amount <= 1.0:
        raise ConfigError(f"{field}={amount}: use a jitter in [0, 1] (factors 1 - x to 1 + x)")
    return amount


@register("brightness")
class Brightness(PixelTransform):
    """As torchvision's ``ColorJitter``: multiply by a factor in [1 - b, 1 + b], clamp."""

    def __init__(self, amount: float = 0.2) -> None:
        self.amount = _check_jitter("brightness", amount)
        self.is_identity = amount == 0.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> Brightness:
        return cls(config.brightness)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return _uniform(n, 1, 1.0 - self.amount, 1.0 + self.amount, generator)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return x.mul_(params.reshape(-1, 1, 1, 1)).clamp_(0.0, 1.0)


@register("contrast")
class Contrast(PixelTransform):
    """As torchvision's ``ColorJitter``: blend each image with its own mean gray level by a
    factor in [1 - c, 1 + c] (0: uniform gray, > 1: more contrast), clamp."""

    def __init__(self, amount: float = 0.2) -> None:
        self.amount = _check_jitter("contrast", amount)
        self.is_identity = amount == 0.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> Contrast:
        return cls(config.contrast)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return _uniform(n, 1, 1.0 - self.amount, 1.0 + self.amount, generator)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.apply_and_normalize(x, params, 0.0, 1.0)

    def apply_and_normalize(
        self, x: torch.Tensor, params: torch.Tensor, mean: float, std: float
    ) -> torch.Tensor:
        # The blend, the clamp to [0, 1] and the normalisation are all affine, so they fold
        # into one multiply-add and one clamp in normalised units (two passes, not four).
        factor = params.reshape(-1, 1, 1, 1)
        level = x.mean(dim=(1, 2, 3), keepdim=True)
        low, high = -mean / std, (1.0 - mean) / std
        offset = level * (1.0 - factor) / std + low
        return torch.addcmul(offset, x, factor / std).clamp_(low, high)


# Not in the default list: the worked example of adding a transform (README, "How to extend").
@register("gamma")
class RandomGamma(PixelTransform):
    """Raise intensities (in [0, 1]) to a power uniform in [1 - amount, 1 + amount]."""

    def __init__(self, amount: float = 0.3) -> None:
        self.amount = amount

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand((n, 1), generator=generator, dtype=torch.float64)
        return 1.0 + self.amount * (2.0 * u - 1.0)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return x.pow_(params.reshape(-1, 1, 1, 1))


def build_transforms(augment: str, config: TrainConfig) -> list[Transform]:
    """The transforms named in ``augment`` (comma-separated, in order; "none": no augmentation),
    with their parameters from ``config``."""
    names = [name.strip() for name in augment.split(",")]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown:
        raise ConfigError(
            f"augment={augment!r}: unknown {', '.join(map(repr, unknown))}; use comma-separated "
            f"names from {', '.join(TRANSFORMS)}, or none"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"augment={augment!r} names {', '.join(repeated)} twice: name it once")
    return [TRANSFORMS[name].from_config(config) for name in names]


def stream_seed(seed: int, epoch: int, name: str) -> int:
    """The seed of one transform's generator in one epoch, a function of these three alone.

    crc32 rather than ``hash``: Python salts string hashes differently in every process.
    """
    entropy = [int(seed), int(epoch), zlib.crc32(name.encode())]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


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
    """Resample float images (B, 1, S, S) with per-sample (B, 2, 3) matrices (bilinear, zeros)."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square images, got {tuple(images.shape)}")
    grid = sampling_grid(theta, images.shape[-1])
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def normalize(images: torch.Tensor, mean: float = GRAY_MEAN, std: float = GRAY_STD) -> torch.Tensor:
    """The evaluation path: uint8 (or [0, 255] float) images to normalised float32."""
    # A cast, then two passes in place: about four times faster on a CPU than one
    # uint8 * float, whose type promotion is slow.
    scaled = images.to(torch.float32, copy=True).mul_(1.0 / (255.0 * std))
    return scaled.sub_(mean / std)


class Augmenter:
    """Seeded training augmentation and the matching evaluation normalisation.

    Example::

        augmenter = Augmenter([HFlip(), Rotate(30.0)], seed=0)  # or config.augmentations()
        for epoch in range(epochs):
            augmenter.set_epoch(epoch)  # a resumed run replays the same parameters
            for batch in loader.epoch(epoch):
                x = augmenter(batch.images)            # training
        x = augmenter(batch.images, train=False)       # evaluation: normalisation only
    """

    def __init__(
        self,
        transforms: Sequence[Transform],
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        names = [t.name for t in transforms]
        if "" in names or len(set(names)) < len(names):
            raise ValueError(f"transforms need distinct registered names, got {names}")
        for t in transforms:
            if not isinstance(t, (GeometricTransform, PixelTransform)):
                raise TypeError(f"{t.name}: subclass GeometricTransform or PixelTransform")
        self.transforms = [t for t in transforms if not t.is_identity]
        self.seed = int(seed)
        # Under torchrun a rank holds every world_size-th sample of the global batch (see
        # BatchLoader): parameters are drawn for the whole global batch and this rank takes
        # its samples' share, so each sample gets the parameters it gets in one process.
        self.rank, self.world_size = int(rank), int(world_size)
        self.generators = {t.name: torch.Generator(device="cpu") for t in self.transforms}
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Restart every transform's stream at a state that depends only on (seed, epoch)."""
        for name, generator in self.generators.items():
            generator.manual_seed(stream_seed(self.seed, epoch, name))

    def draw(self, batch_size: int) -> list[torch.Tensor]:
        """This process's share of one batch's parameters: a CPU tensor per transform."""
        n, share = batch_size * self.world_size, slice(self.rank, None, self.world_size)
        return [t.draw(n, self.generators[t.name])[share] for t in self.transforms]

    def __call__(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, S, S), got {tuple(images.shape)}")
        if not train or not self.transforms:
            return normalize(images)
        return self.apply(images, self.draw(images.shape[0]))

    def apply(self, images: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """Augment uint8 images (B, 1, S, S) with drawn parameters (as :meth:`draw` gives)."""
        pairs = list(zip(self.transforms, params, strict=True))
        geometric = [(t, p) for t, p in pairs if isinstance(t, GeometricTransform)]
        pixel = [(t, p) for t, p in pairs if isinstance(t, PixelTransform)]
        host = []
        if geometric:
            theta = geometric[0][0].matrix(geometric[0][1])
            for t, p in geometric[1:]:
                theta = theta @ t.matrix(p)  # the first in the list moves the image first
            host.append(theta[:, :2].reshape(-1, 6))
        host += [p for _, p in pixel]
        # All per-sample numbers travel to the device in one small copy.
        packed = host_to_device(torch.cat(host, dim=1).to(torch.float32), images.device)
        x = images.to(torch.float32, copy=True)  # a copy the steps below may change
        column = 0
        if geometric:
            x, column = warp(x, packed[:, :6].reshape(-1, 2, 3)), 6
        if not pixel:  # the scaling to [0, 1] folds into the normalisation
            return x.mul_(1.0 / (255.0 * GRAY_STD)).sub_(GRAY_MEAN / GRAY_STD)
        x = x.mul_(1.0 / 255.0)
        for t, p in pixel[:-1]:
            x = t.apply(x, packed[:, column : column + p.shape[1]])
            column += p.shape[1]
        last = pixel[-1][0]
        return last.apply_and_normalize(x, packed[:, column:], GRAY_MEAN, GRAY_STD)
