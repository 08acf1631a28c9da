"""Backbones from three sources, named by one ``arch`` string.

* ``resnet18``, ``densenet169``, ``efficientnet_b0`` ...: a torchvision classification model,
  adapted to one input channel and one logit (torchvision has no option for either);
* ``timm/<name>``: ``timm.create_model(name, in_chans=1, num_classes=1)``, which adapts the
  first convolution and the head itself (``timm.list_models()`` lists the names);
* ``<module>:<callable>``: a researcher's own factory, importable from the project root, the
  current folder or ``PYTHONPATH`` (``mymodels:tiny_cnn`` is ``tiny_cnn()`` of
  ``mymodels.py``). It takes no argument and returns a model that maps (B, 1, H, W) images to
  (B, 1) logits.

Short names of the project's own factories (:data:`PROJECT_ARCHS`) are entry points too, so
the project's models and a researcher's go through the same code. Every model built here ends in
one logit of "abnormal" (a sigmoid, as in the MURA paper).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import torch
from torch import nn

from mura_lib.config import PROJ_ROOT
from mura_lib.errors import ConfigError

TIMM_PREFIX = "timm/"

# The project's own architectures: short names of entry points.
PROJECT_ARCHS = {"small_cnn": "mura_lib.models.small_cnn:small_cnn"}


def arch_source(arch: str) -> str:
    """Where ``arch`` comes from: "timm", "module" (an entry point) or "torchvision"."""
    if arch.startswith(TIMM_PREFIX):
        return "timm"
    if ":" in PROJECT_ARCHS.get(arch, arch):
        return "module"
    return "torchvision"


def create_backbone(arch: str, pretrained: bool = False, in_chans: int = 1) -> nn.Module:
    """The model ``arch`` names, with ``in_chans`` inputs and one logit.

    ``pretrained`` loads ImageNet weights (torchvision's or timm's, from the local caches; see
    :mod:`mura_lib.models.pretrained`), which own factories do not have.
    """
    source = arch_source(arch)
    if source == "timm":
        return _timm_model(arch[len(TIMM_PREFIX) :], pretrained, in_chans)
    if source == "module":
        if pretrained:
            raise ConfigError(
                f"{arch} is a factory of its own and has no ImageNet weights: use --weights "
                "none (a factory may load weights of its own)"
            )
        if in_chans != 1:
            raise ConfigError(f"{arch}: own factories take one input channel, not {in_chans}")
        factory = _factory(PROJECT_ARCHS.get(arch, arch))
        try:
            model = factory()
        except Exception as err:
            raise _own_code_failed(arch, "its factory", err) from err
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"arch {arch}: the factory returned a {type(model).__name__}, not a torch nn.Module"
            )
        return model
    return _torchvision_model(arch, pretrained, in_chans)


def source_record(arch: str) -> dict[str, Any]:
    """What a checkpoint records of where its model came from, to rebuild it from the file."""
    source = arch_source(arch)
    record: dict[str, Any] = {"source": source}
    if source == "timm":
        import timm

        record["timm_version"] = timm.__version__
    elif source == "module":
        module = sys.modules.get(PROJECT_ARCHS.get(arch, arch).partition(":")[0])
        record["file"] = str(getattr(module, "__file__", "") or "")
    return record


def check_output(model: nn.Module, arch: str, image_size: int) -> None:
    """Refuse a model that does not map (B, 1, S, S) images to (B, 1) logits, before training.

    One forward pass in eval mode: no batch statistics change and no random number is drawn.
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(2, 1, image_size, image_size, device=next(model.parameters()).device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # the model's own error, reported with the input it was given
        raise ConfigError(
            f"arch {arch} cannot take (B, 1, {image_size}, {image_size}) images: "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 1):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"arch {arch} maps (2, 1, {image_size}, {image_size}) images to {shape}, "
            "not to (2, 1) logits: its factory must return a one-logit model"
        )


def _torchvision_model(name: str, pretrained: bool, in_chans: int) -> nn.Module:
    # Imported here: torchvision.models pulls in torch._dynamo (about 2.5 s on a small CPU),
    # which building or loading another source never needs.
    import torchvision.models as tv_models

    if name not in tv_models.list_models(module=tv_models):
        raise ConfigError(
            f"unknown architecture {name!r}: use a torchvision classification model name "
            "(e.g. resnet18, densenet169, efficientnet_b0), timm/<name> (e.g. "
            f"timm/resnet10t), module:callable for a factory of your own, or one of "
            f"{sorted(PROJECT_ARCHS)}"
        )
    model = tv_models.get_model(name, weights=None)
    if pretrained:
        from mura_lib.models.pretrained import load_imagenet_state_dict

        model.load_state_dict(load_imagenet_state_dict(name))
    _replace_head(model)
    if in_chans != 3:
        _adapt_input_conv(model, in_chans)
    return model


def _timm_model(name: str, pretrained: bool, in_chans: int) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise ConfigError(
            f"timm has no model {name!r}: `timm.list_models('*{name[:6]}*')` lists the names"
        )
    overlay = None
    if pretrained:
        from mura_lib.models.pretrained import timm_weights_file

        # timm loads the cached file itself and adapts its first convolution and head.
        overlay = {"file": str(timm_weights_file(name))}
    return timm.create_model(
        name,
        pretrained=pretrained,
        pretrained_cfg_overlay=overlay,
        in_chans=in_chans,
        num_classes=1,
    )


def _factory(spec: str) -> Any:
    """The callable named by ``module:callable``, importable from the project root or PYTHONPATH."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"arch {spec!r}: name an own factory as module:callable")
    # After PYTHONPATH, so the researcher's copy wins: the project root, and the folder the
    # command runs in (as `python -m` has it; the `mura` script would not).
    for folder in (str(PROJ_ROOT), os.getcwd()):
        if folder not in sys.path:
            sys.path.append(folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not module_name.startswith(err.name):
            raise _own_code_failed(spec, f"importing {module_name}", err) from err
        raise ConfigError(
            f"arch {spec}: cannot import {module_name!r}: put {module_name}.py in the project "
            f"root ({PROJ_ROOT}), the current folder or a folder on PYTHONPATH"
        ) from None
    except Exception as err:  # a syntax error, or any error the module raises as it loads
        raise _own_code_failed(spec, f"importing {module_name}", err) from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"arch {spec}: {module.__file__} defines no callable {attr!r}")
    return factory


def _own_code_failed(spec: str, step: str, err: Exception) -> ConfigError:
    """One line for an error in a researcher's own module, with the file and line it came from
    (the traceback is one `python -c "import mymodels; mymodels.tiny_cnn()"` away)."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    if isinstance(err, SyntaxError):
        where = f" ({err.filename}:{err.lineno})"
    return ConfigError(f"arch {spec}: {step} failed{where}: {type(err).__name__}: {err}")


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
    """Give the first convolution ``in_chans`` inputs, its weights adapted as timm adapts them.

    Radiographs are grayscale: rather than copying every image into three identical channels
    (three times the memory traffic of the data path and the first layer), the first
    convolution takes one channel whose weights are the sum of the RGB ones. For a gray image
    replicated into RGB this gives the same response, up to the per-channel normalisation,
    which one gray mean/std replaces (:data:`mura_lib.config.GRAY_MEAN`).
    """
    from timm.models import adapt_input_conv

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
                new.weight.copy_(adapt_input_conv(in_chans, module.weight))
                if module.bias is not None:
                    new.bias.copy_(module.bias)
            _set_submodule(model, name, new)
            return
    raise ConfigError(f"{type(model).__name__} has no 3-channel input convolution to adapt")


def _set_submodule(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
