"""Checkpoints: plain dicts of tensors and literals, loadable with ``weights_only=True``.

A checkpoint holds everything needed to rebuild and use the model from the file alone (as
nanoGPT's does): the architecture and its arguments, the input size and normalisation, the
decision threshold chosen on the validation split, the training parameters, a fingerprint of
the training data and the code version. For resuming it also holds the optimizer, scheduler
and early-stopping state. No pickled objects: loading never executes code, and a checkpoint
saved on a GPU loads on a CPU-only machine (tensors are moved to CPU before saving).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mura_lib.disk import atomic_path
from mura_lib.errors import CheckpointError
from mura_lib.models.safe_load import load_weights_only

FORMAT = "mura_lib.checkpoint/1"
REQUIRED_KEYS = ("format", "model", "model_args", "image_size", "resize", "normalization")


def to_cpu(obj: Any) -> Any:
    """Recursively move tensors to the CPU (state dicts, optimizer states)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write ``checkpoint`` atomically: a temporary file in the same folder, then a rename.

    An interrupted save therefore leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    payload = {"format": FORMAT, **to_cpu(checkpoint)}
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}")
    with atomic_path(path, f"the checkpoint {path.name}") as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist: train one with `python -m mura_lib train` "
            "or `make reproduce`, or check the path"
        )
    ckpt = load_weights_only(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a {FORMAT} checkpoint (a bare state dict or another project's "
            "file?): use a best.pt/last.pt written by `python -m mura_lib train`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}: it is incomplete, retrain")
    return ckpt
