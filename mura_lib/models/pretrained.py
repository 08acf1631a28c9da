"""ImageNet weights through torchvision's weights API, with a clear error when offline.

torchvision keeps downloaded weights in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). We look
there first; if the file is missing we try to download it, and if that fails we stop at once
with a message saying where the file is expected and how to train without it. We never fall
back to random weights: a run that asked for ImageNet features and silently got noise would
produce misleading results.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import torch
import torchvision

from mura_lib.errors import CheckpointError, WeightsUnavailableError
from mura_lib.models.safe_load import load_weights_only

# Seconds to wait for the download server before giving up (an offline machine fails at once
# on DNS; a firewalled one would otherwise hang for minutes).
DOWNLOAD_TIMEOUT_S = 20

# torchvision's DenseNet weight files predate a module rename: they hold keys such as
# "denselayer1.norm.1.weight" where the model has "denselayer1.norm1.weight". torchvision's
# own densenet loader renames them with this pattern; so must we.
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def imagenet_weights_path(arch: str) -> tuple[str, Path]:
    """The download URL of ``arch``'s default ImageNet weights and their path in the hub cache."""
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError) as err:
        raise WeightsUnavailableError(f"torchvision has no ImageNet weights for {arch!r}") from err
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    return weights.url, checkpoints / os.path.basename(weights.url)


def load_imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """Return the ImageNet state dict of ``arch`` from the cache, downloading it if possible."""
    url, path = imagenet_weights_path(arch)
    if not path.is_file():
        _download(url, path, arch)
    try:
        state_dict = load_weights_only(path, "weights file")
    except CheckpointError as err:  # a truncated or foreign file: say which and what to do
        raise WeightsUnavailableError(
            f"the ImageNet weights file cannot be read: {err}; delete it and run again to "
            "download a fresh copy"
        ) from None
    return {_current_key(key): value for key, value in state_dict.items()}


def _current_key(key: str) -> str:
    """The model's name for a (possibly legacy DenseNet) key of a torchvision weights file."""
    match = _LEGACY_DENSENET_KEY.match(key)
    return match.group(1) + match.group(2) if match else key


def _download(url: str, path: Path, arch: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as err:
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not cached and cannot be downloaded ({err}).\n"
            f"  expected file: {path}\n"
            f"  fix: on a machine with internet, download {url} and copy it to that path "
            "(or set TORCH_HOME to the folder whose hub/checkpoints/ holds it);\n"
            "  or train from scratch with --weights none (weights: none in a params file)."
        ) from err
    finally:
        socket.setdefaulttimeout(previous)
