"""The torch device a name stands for; ``auto`` prefers CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
