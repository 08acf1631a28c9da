"""Build a one-logit abnormality classifier from any torchvision classification architecture.

Two adaptations are made to the torchvision model, whatever the architecture:

* **One input channel.** Radiographs are grayscale. Instead of copying every image into three
  identical channels (three times the memory traffic of the first layer and of the data path),
  the first convolution takes one channel and its pretrained weights are the sum of the RGB
  weights, as timm's ``adapt_input_conv`` does. For an image replicated into RGB, this gives the
  same response up to the per-channel normalisation, which we replace by one gray mean/std
  (the mean of ImageNet's, see :data:`mura_lib.config.GRAY_MEAN`).
* **One output.** The last linear layer is replaced by a fresh ``Linear(in_features, 1)``: the
  logit of "abnormal" (a sigmoid, as in the MURA paper, rather than the original project's two
  softmax outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    import pandas as pd

from mura_lib.errors import ConfigError
from mura_lib.models.checkpoint import load_checkpoint  # checkpoint.py imports nothing of ours
from mura_lib.models.small_cnn import SmallCNN
from mura_lib.models.study import STUDY_HEADS, StudyModel

# Architectures of this project, beside torchvision's (built without pretrained weights).
PROJECT_ARCHS = {"small_cnn": SmallCNN}

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
        arch: any torchvision classification model name (``torchvision.models.list_models``),
            or ``"small_cnn"`` (:mod:`mura_lib.models.small_cnn`, for CPU demonstrations).
        weights: ``"none"`` (random init), ``"imagenet"`` (torchvision's default ImageNet
            weights, from the torch hub cache; see :mod:`mura_lib.models.pretrained`) or the
            path of one of our checkpoints (its model weights are loaded).
        trainable: which parameters train. ``"all"``; a list of parameter-name prefixes (e.g.
            ``["layer3", "layer4", "fc"]``); or ``"auto"``: the architecture's preset when
            starting from pretrained weights, everything when training from scratch (freezing
            random layers would only cripple the model).
        in_chans: input channels (1 for radiographs; 3 keeps the architecture unchanged).
    """
    if arch in PROJECT_ARCHS:
        if weights == "imagenet":
            raise ConfigError(f"{arch} has no ImageNet weights: use --weights none")
        model = PROJECT_ARCHS[arch]()
    else:
        # Imported here: torchvision.models pulls in torch._dynamo (about 2.5 s on a small
        # CPU), which building or loading a project architecture never needs.
        import torchvision.models as tv_models

        if arch not in tv_models.list_models(module=tv_models):
            raise ConfigError(
                f"unknown architecture {arch!r}: use a torchvision classification model name "
                "(e.g. resnet18, resnet50, densenet169, efficientnet_b0) or one of "
                f"{sorted(PROJECT_ARCHS)}"
            )
        model = tv_models.get_model(arch, weights=None)
    if weights == "imagenet":
        from mura_lib.models.pretrained import load_imagenet_state_dict

        model.load_state_dict(load_imagenet_state_dict(arch))
    _replace_head(model)
    if in_chans != 3:
        _adapt_input_conv(model, in_chans)
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
    model = StudyModel(backbone, head)
    if weights not in ("none", "imagenet") and model.attention is not None:
        ckpt = load_checkpoint(weights)
        if study_head_of(ckpt) == head:
            model.load_state_dict(ckpt["model"])
    return model


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """Rebuild the model described by ``ckpt`` and load its weights (eval mode, on CPU)."""
    args = ckpt["model_args"]
    model = build_model(args["arch"], "none", trainable="all", in_chans=args["in_chans"])
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


def _replace_head(model: nn.Module) -> None:
    """Replace the last Linear layer (the classifier) by a one-logit Linear."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ConfigError(
            f"{type(model).__name__} has no Linear classifier to replace; "
            "use an architecture with a linear head (ResNet, DenseNet, EfficientNet, ConvNeXt, ViT)"
        )
    old = model.get_submodule(last)
    _set_submodule(model, last, nn.Linear(old.in_features, 1))


def _adapt_input_conv(model: nn.Module, in_chans: int) -> None:
    """Give the first convolution ``in_chans`` inputs, summing (or tiling) its RGB weights."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(
                in_chans,
                module.out_channels,
                kernel_size=module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=module.groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            with torch.no_grad():
                weight = module.weight
                if in_chans == 1:
                    new.weight.copy_(weight.sum(dim=1, keepdim=True))
                else:
                    # As timm: tile the RGB filters and rescale so activations keep their size.
                    repeats = -(-in_chans // 3)
                    tiled = weight.repeat(1, repeats, 1, 1)[:, :in_chans]
                    new.weight.copy_(tiled * (3 / in_chans))
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            _set_submodule(model, name, new)
            return
    raise ConfigError(f"{type(model).__name__} has no 3-channel input convolution to adapt")


def _set_submodule(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


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
