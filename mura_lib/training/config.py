"""The training parameters: a flat dataclass of literals, free of torch so that the command
line and notebooks can build and check it before anything heavy is imported."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mura_lib.config import GRAY_MEAN, GRAY_STD
from mura_lib.errors import ConfigError
from mura_lib.training.schedule import check_patiences, metric_mode

if TYPE_CHECKING:
    from mura_lib.data.augment import AugmentConfig

# Settings that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "device", "cache_dir", "sync_batchnorm"}


@dataclass
class TrainConfig:
    """Every training parameter, a flat list of literals (what a params file holds)."""

    arch: str = "resnet18"  # any torchvision classification model
    weights: str = "none"  # none | imagenet | path to a checkpoint of ours
    trainable: str = "auto"  # auto (preset if pretrained) | all | comma-separated prefixes
    image_size: int = 128  # side S of the square inputs
    resize: str = "letterbox"  # letterbox (keep aspect ratio) | stretch (original project)
    epochs: int = 20  # maximum number of epochs
    batch_size: int = 32
    lr: float = 1e-4  # Adam learning rate (the paper's and the original project's)
    weight_decay: float = 0.0
    loss_weighting: str = "paper"  # paper (per body part) | class (original) | none
    select_metric: str = "study_kappa"  # study_kappa | study_auroc | study_f1 | val_loss
    plateau_factor: float = 0.1  # the paper divides the rate by 10 on a plateau
    plateau_patience: int = 2  # epochs without improvement before the rate drops
    early_stop_patience: int = 5  # 0 disables; must be >= plateau_patience + 2
    threshold_rule: str = "max_kappa"  # max_kappa | youden | fixed (0.5)
    keep_top_k: int = 0  # keep the k best epochs as an ensemble (OUT/ensemble.json); 0: off
    top_k_by: str = "val_loss"  # rank them by val_loss (the paper) | select_metric
    val_fraction: float = 0.2  # share of official-train studies held out for selection
    study_head: str = "none"  # none (image-level) | mean | max | attention (study-level)
    study_max_views: int = 32  # study-level: views per batch and process (>= largest study)
    hflip: bool = True  # augmentation: random lateral flip
    rotate_degrees: float = 30.0  # the paper: up to 30 degrees
    scale_min: float = 0.9  # random zoom range
    scale_max: float = 1.1
    translate: float = 0.05  # random shift, fraction of the side
    brightness: float = 0.2  # intensity jitter
    contrast: float = 0.2
    seed: int = 0  # one seed fixes split, initialisation, batch order and augmentation
    device: str = "auto"  # auto (cuda, mps, cpu) | cpu | cuda | cuda:1 ...
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA (ignored on CPU)
    sync_batchnorm: bool = True  # under torchrun on CUDA: BatchNorm over the global batch
    skip_bad_images: bool = False  # leave unreadable images out (reported) instead of failing
    cache_dir: str = ""  # "" = the project's cache/ folder

    def validate(self) -> None:
        check_patiences(self.plateau_patience, self.early_stop_patience)
        metric_mode(self.select_metric)
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 16 or self.lr <= 0:
            raise ConfigError("epochs and batch_size must be >= 1, image_size >= 16, lr > 0")
        if self.study_max_views < 1:
            raise ConfigError(f"study_max_views={self.study_max_views}: use at least 11 on MURA")
        if self.keep_top_k < 0:
            raise ConfigError(f"keep_top_k={self.keep_top_k}: use 0 (off) or a number of epochs")
        # Checked here, before any image is decoded, rather than where each is first used.
        choices = {
            "loss_weighting": ("paper", "class", "none"),
            "threshold_rule": ("max_kappa", "youden", "fixed"),
            "resize": ("letterbox", "stretch"),
            "top_k_by": ("val_loss", "select_metric"),
            "study_head": ("none", "mean", "max", "attention"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: use one of {allowed}")

    def augment_config(self) -> AugmentConfig:
        from mura_lib.data.augment import AugmentConfig  # torch: imported only when training

        return AugmentConfig(
            hflip=self.hflip,
            rotate_degrees=self.rotate_degrees,
            scale=(self.scale_min, self.scale_max),
            translate=self.translate,
            brightness=self.brightness,
            contrast=self.contrast,
            mean=GRAY_MEAN,
            std=GRAY_STD,
        )

    def to_argv(self) -> list[str]:
        """The `mura train` options that give this config (``--image-size 128 --no-amp`` ...)."""
        argv = []
        for field in dataclasses.fields(self):
            flag, value = "--" + field.name.replace("_", "-"), getattr(self, field.name)
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + flag[2:])
            else:
                argv += [flag, str(value)]
        return argv

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        """The config from a mapping that may hold other names too (a notebook's globals,
        a profile's parameters): every field present is taken, the others keep defaults."""
        return cls(**{f.name: params[f.name] for f in dataclasses.fields(cls) if f.name in params})
