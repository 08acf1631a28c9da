"""ImageNet weights of torchvision and timm models, with a clear error when offline.

torchvision keeps downloaded weights in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), timm in the
Hugging Face cache (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``). We look there
first; if the file is missing we try to download it, and if that fails we stop at once with a
message saying where the file is expected and how to train without it. We never fall back to
random weights: a run that asked for ImageNet features and silently got noise would produce
misleading results.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

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


# timm publishes its weights on the Hugging Face Hub under these file names, newest first.
_TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def timm_weights_file(name: str) -> Path:
    """The cached file of timm model ``name``'s default pretrained weights, downloading it
    into the Hugging Face cache when the Hub can be reached."""
    import huggingface_hub
    import timm

    repo = timm.models.get_pretrained_cfg(name).hf_hub_id if timm.is_model(name) else None
    if not repo:
        raise WeightsUnavailableError(f"timm has no pretrained weights on the Hub for {name!r}")
    for filename in _TIMM_WEIGHT_FILES:
        cached = huggingface_hub.try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    # huggingface_hub retries an unreachable host for about a minute: ask the network first,
    # so that an offline machine gets its answer at once, as for torchvision's weights.
    host = urlparse(huggingface_hub.constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=DOWNLOAD_TIMEOUT_S).close()
        return Path(huggingface_hub.hf_hub_download(repo, _TIMM_WEIGHT_FILES[0]))
    except Exception as err:
        raise WeightsUnavailableError(
            f"timm's ImageNet weights for {name} ({repo}) are not in the Hugging Face cache "
            f"({huggingface_hub.constants.HF_HUB_CACHE}) and cannot be downloaded ({err}); "
            f'on a machine with internet run `python -c "import timm; timm.create_model('
            f"'{name}', pretrained=True)\"` and copy its cache folder here (or set "
            "HF_HUB_CACHE to it), or train from scratch with --weights none"
        ) from err
