"""Build a one-logit abnormality classifier, load it from a checkpoint, choose what trains.

The backbone comes from one of three sources named by ``arch`` (torchvision, ``timm/<name>``,
or a researcher's own ``module:callable``; see :mod:`mura_lib.models.backbones`); this module
adds what every source shares: starting from one of our checkpoints, freezing by parameter-name
prefix, and the study-level head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    import pandas as pd

from mura_lib.errors import CheckpointError, ConfigError
from mura_lib.models.backbones import create_backbone
from mura_lib.models.checkpoint import load_checkpoint  # checkpoint.py imports nothing of ours
from mura_lib.models.study import STUDY_HEADS, StudyModel

# Layers trained when fine-tuning from ImageNet, per architecture (prefixes of parameter names).
# resnet18: the original project's recipe (stem and layer1 frozen). densenet169: the paper
# fine-tunes everything. Other architectures train everything unless told otherwise.
PRESET_TRAINABLE: dict[str, tuple[str, ...] | None] = {
    "resnet18": ("layer2", "layer3", "layer4", "fc"),
    "densenet169": None,
}


def build_model(
    arch: str = "resnet18",
    weights: str = "none",
    *,
    trainable: str | Sequence[str] = "auto",
    in_chans: int = 1,
) -> nn.Module:
    """Build ``arch`` with one input channel and one abnormality logit.

    Args:
        arch: a torchvision classification model name, ``timm/<name>``, ``module:callable``
            (a factory of your own) or ``"small_cnn"`` (:mod:`mura_lib.models.small_cnn`);
            see :mod:`mura_lib.models.backbones`.
        weights: ``"none"`` (random init), ``"imagenet"`` (torchvision's or timm's ImageNet
            weights, from the local caches; see :mod:`mura_lib.models.pretrained`) or the
            path of one of our checkpoints (its model weights are loaded).
        trainable: which parameters train. ``"all"``; a list of parameter-name prefixes (e.g.
            ``["layer3", "layer4", "fc"]``); or ``"auto"``: the architecture's preset when
            starting from pretrained weights, everything when training from scratch (freezing
            random layers would only cripple the model).
        in_chans: input channels (1 for radiographs; 3 keeps a torchvision model unchanged).
    """
    model = create_backbone(arch, pretrained=weights == "imagenet", in_chans=in_chans)
    if weights not in ("none", "imagenet"):
        ckpt = load_checkpoint(weights)
        if ckpt["model_args"]["arch"] != arch or ckpt["model_args"]["in_chans"] != in_chans:
            raise ConfigError(
                f"checkpoint {weights} holds a {ckpt['model_args']['arch']} with "
                f"{ckpt['model_args']['in_chans']} input channel(s), not a {arch} with "
                f"{in_chans}: pass --arch {ckpt['model_args']['arch']}"
            )
        model.load_state_dict(backbone_state(ckpt))
    set_trainable(model, resolve_trainable(arch, weights, trainable))
    return model


def study_head_of(ckpt: dict[str, Any]) -> str:
    """The pooling head of a checkpoint's model; "none" for an image-level model."""
    return ckpt["model_args"].get("study_head", "none")


def backbone_of(model: nn.Module) -> nn.Module:
    """The image-level classifier of a model: itself, or a study model's backbone."""
    return model.backbone if isinstance(model, StudyModel) else model


def backbone_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The image-level weights of a checkpoint: its model, or a study model's backbone."""
    if study_head_of(ckpt) == "none":
        return ckpt["model"]
    prefix = "backbone."
    return {k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}


def build_study_model(
    arch: str, weights: str, head: str, *, trainable: str | Sequence[str] = "auto"
) -> nn.Module:
    """``build_model``'s classifier, under a study-level pooling head unless ``head`` is "none".

    Started from a checkpoint of ours, the backbone takes its image-level weights (a study
    model's backbone too); a study model of the same head also passes on its attention layers.
    """
    if head not in STUDY_HEADS:
        raise ConfigError(f"study_head={head!r}: use one of {STUDY_HEADS}")
    backbone = build_model(arch, weights, trainable=trainable)
    if head == "none":
        return backbone
    try:
        model = StudyModel(backbone, head)
    except ValueError as err:  # no Linear classifier whose input is the view embedding
        raise ConfigError(
            f"study_head={head!r} needs {arch} to end in a Linear layer: {err}"
        ) from None
    if weights not in ("none", "imagenet") and model.attention is not None:
        ckpt = load_checkpoint(weights)
        if study_head_of(ckpt) == head:
            model.load_state_dict(ckpt["model"])
    return model


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the model described by ``ckpt`` and load its weights (eval mode, on CPU)."""
    args = ckpt["model_args"]
    try:
        model = build_model(args["arch"], "none", trainable="all", in_chans=args["in_chans"])
    except ConfigError as err:
        trained_with = f" (trained with {args['file']})" if args.get("file") else ""
        raise CheckpointError(
            f"cannot rebuild the checkpoint's model{trained_with}: {err}"
        ) from None
    if study_head_of(ckpt) != "none":
        model = StudyModel(model, study_head_of(ckpt))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def resolve_trainable(arch: str, weights: str, trainable: str | Sequence[str]) -> list[str] | None:
    """The parameter-name prefixes that train (``None`` = all), with ``"auto"`` resolved."""
    if trainable == "all":
        return None
    if trainable == "auto":
        preset = PRESET_TRAINABLE.get(arch)
        return None if weights == "none" or preset is None else list(preset)
    if isinstance(trainable, str):
        return [p.strip() for p in trainable.split(",") if p.strip()]
    return list(trainable)


def set_trainable(model: nn.Module, prefixes: Sequence[str] | None) -> None:
    """Freeze every parameter whose name does not start with one of ``prefixes``.

    Frozen BatchNorm layers also stop updating their running statistics (they are put in
    eval mode by :func:`freeze_batchnorm_stats` during training), as in a true frozen stem.
    """
    names = [name for name, _ in model.named_parameters()]
    if prefixes is not None and not prefixes:
        # would freeze everything and fail later in the optimizer, far from the cause
        raise ConfigError(
            "trainable names no parameter prefix: use 'all', 'auto' or a comma-separated "
            "list of prefixes such as 'layer4,fc'"
        )
    if prefixes is not None:
        unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
        if unknown:
            raise ConfigError(
                f"trainable prefixes {unknown} match no parameter of the model; "
                f"top-level modules are: {sorted({n.split('.')[0] for n in names})}"
            )
    for name, param in model.named_parameters():
        param.requires_grad = prefixes is None or any(name.startswith(p) for p in prefixes)


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen in eval mode (call after .train())."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def trainable_summary(model: nn.Module) -> pd.DataFrame:
    """Parameters per top-level module, and how many of them train."""
    import pandas as pd

    rows: dict[str, dict[str, int]] = {}
    for name, param in model.named_parameters():
        row = rows.setdefault(name.split(".")[0], {"parameters": 0, "trainable": 0})
        row["parameters"] += param.numel()
        row["trainable"] += param.numel() if param.requires_grad else 0
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "module"
    return table
