"""The training parameters: a flat dataclass of literals, free of torch so that the command
line and notebooks can build and check it before anything heavy is imported.

Each field's trailing comment is its documentation: :func:`field_docs` reads it from this
file, and `mura train --help` shows it with the default and the :data:`CHOICES`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mura_lib.errors import ConfigError
from mura_lib.training.losses import LOSSES
from mura_lib.training.schedule import SELECTION_METRICS, check_patiences, metric_mode

if TYPE_CHECKING:
    from mura_lib.data.augment import Transform

# Settings that may differ between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "device", "cache_dir", "sync_batchnorm"}

# The values of the fields that take one of a few: validate() checks them before any image is
# decoded, and `mura train` offers them as choices.
CHOICES: dict[str, tuple[str, ...]] = {
    "resize": ("letterbox", "stretch"),
    "loss": tuple(LOSSES),
    "loss_weighting": ("paper", "class", "none"),
    "select_metric": tuple(SELECTION_METRICS),
    "lr_schedule": ("plateau", "cosine"),
    "threshold_rule": ("max_kappa", "youden", "fixed"),
    "top_k_by": ("val_loss", "select_metric"),
    "study_head": ("none", "mean", "max", "attention"),
}


@dataclass
class TrainConfig:
    """Every training parameter, a flat list of literals (what a params file holds)."""

    arch: str = "resnet18"  # torchvision name | timm/<name> | module:callable | small_cnn
    weights: str = "none"  # none | imagenet | path to a checkpoint of ours
    trainable: str = "auto"  # auto (preset if pretrained) | all | comma-separated prefixes
    image_size: int = 128  # side S of the square inputs
    resize: str = "letterbox"  # letterbox (keep aspect ratio) | stretch (original project)
    epochs: int = 20  # maximum number of epochs
    batch_size: int = 32  # images per step, over all processes under torchrun
    lr: float = 1e-4  # Adam learning rate (the paper's and the original project's)
    weight_decay: float = 0.0  # Adam's L2 penalty (the paper: none)
    loss: str = "bce"  # bce | focal (Lin et al. 2017): training loss and val_loss alike
    loss_weighting: str = "paper"  # paper (per body part) | class (original) | none
    select_metric: str = "study_kappa"  # study_kappa | study_auroc | study_f1 | val_loss
    lr_schedule: str = "plateau"  # plateau (the paper) | cosine (to 0 at the last epoch)
    plateau_factor: float = 0.1  # the paper divides the rate by 10 on a plateau
    plateau_patience: int = 2  # epochs without improvement before the rate drops
    early_stop_patience: int = 5  # 0 disables; must be >= plateau_patience + 2
    threshold_rule: str = "max_kappa"  # max_kappa | youden | fixed (0.5)
    keep_top_k: int = 0  # keep the k best epochs as an ensemble (OUT/ensemble.json); 0: off
    top_k_by: str = "val_loss"  # rank them by val_loss (the paper) | select_metric
    val_fraction: float = 0.2  # share of official-train studies held out for selection
    folds: int = 0  # K >= 2: K patient-grouped folds of official train, one held out; 0: off
    fold: int = 0  # with folds: the fold held out for selection (0 .. folds - 1)
    labels: str = ""  # folder of relabelled {train,valid}_labeled_studies.csv; "": the tree's
    study_head: str = "none"  # none (image-level) | mean | max | attention (study-level)
    study_max_views: int = 32  # study-level: views per batch and process (>= largest study)
    augment: str = "hflip,translate,rotate,scale,brightness,contrast"  # applied in order | none
    rotate_degrees: float = 30.0  # augmentation rotate: up to this angle (the paper: 30)
    scale_min: float = 0.9  # augmentation scale: smallest zoom factor (< 1 zooms out)
    scale_max: float = 1.1  # augmentation scale: largest zoom factor (> 1 zooms in)
    translate: float = 0.05  # augmentation translate: shift up to this fraction of the side
    brightness: float = 0.2  # augmentation brightness: intensity factor in [1 - b, 1 + b]
    contrast: float = 0.2  # augmentation contrast: blend with the mean gray, factor 1 -/+ c
    seed: int = 0  # one seed fixes split, initialisation, batch order and augmentation
    device: str = "auto"  # auto (cuda, mps, cpu) | cpu | cuda | cuda:1 ...
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA (ignored on CPU)
    sync_batchnorm: bool = True  # under torchrun on CUDA: BatchNorm over the global batch
    deterministic: bool = False  # deterministic GPU kernels, slower (CPU runs: MURA_PIN_CPU)
    skip_bad_images: bool = False  # leave unreadable images out (reported) instead of failing
    cache_dir: str = ""  # "" = the project's cache/ folder

    def validate(self) -> None:
        from mura_lib.data.splits import check_folds  # pandas: when a run is checked

        check_patiences(self.plateau_patience, self.early_stop_patience)
        check_folds(self.folds, self.fold)
        metric_mode(self.select_metric)
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 16 or self.lr <= 0:
            raise ConfigError("epochs and batch_size must be >= 1, image_size >= 16, lr > 0")
        if self.study_max_views < 1:
            raise ConfigError(f"study_max_views={self.study_max_views}: use at least 11 on MURA")
        if self.keep_top_k < 0:
            raise ConfigError(f"keep_top_k={self.keep_top_k}: use 0 (off) or a number of epochs")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: use one of {allowed}")
        self.augmentations()

    def augmentations(self) -> list[Transform]:
        """The transforms named in ``augment``, in order, with this config's parameters.

        Unknown names and bad ranges raise ConfigError (validate() calls it). The transforms
        live with torch, imported here: when a run is checked, not when this module is.
        """
        from mura_lib.data.augment import build_transforms

        return build_transforms(self.augment, self)

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


def field_docs() -> dict[str, str]:
    """Each TrainConfig field's documentation: the comment that ends its line ("" if none).

    Read from the source, so that the comments of the flat list stay the one place where a
    field is documented.
    """
    source = inspect.getsource(TrainConfig)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}
    (class_def,) = ast.parse(source).body
    return {
        node.target.id: comments.get(node.end_lineno, "").lstrip("#").strip()
        for node in class_def.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
