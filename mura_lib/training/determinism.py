"""Deterministic GPU training on request (``deterministic: true`` in a profile).

A GPU run is not bit-for-bit repeatable by default: cuDNN's benchmark mode times several
convolution algorithms and keeps the fastest, which can change between runs, and some kernels
(atomic adds in backward passes, cuBLAS's split reductions) add in whatever order the threads
finish. The switch asks torch for deterministic kernels only, cuDNN for deterministic
algorithms without benchmarking, and cuBLAS for a fixed workspace. It costs speed (to be
measured on each GPU; see docs/reproducibility.md), so the profiles leave it off. CPU runs
need it not: their numerics are pinned instead (:mod:`mura_lib.numerics`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from mura_lib.errors import ConfigError

CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE = ":4096:8"  # NVIDIA's documented setting for reproducible cuBLAS results


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a training run when ``enabled``; the flags
    as they were afterwards (a notebook's kernel goes on to other work).

    cuBLAS reads its workspace setting when CUDA starts, so it is set here, before the run's
    first CUDA call, and left set: a second run in the same process (notebook 02 fine-tunes
    the study heads after the main run) finds it in place.
    """
    if not enabled:
        yield
        return
    if CUBLAS_VARIABLE not in os.environ:
        if torch.cuda.is_initialized():
            raise ConfigError(
                f"deterministic=True needs {CUBLAS_VARIABLE}={CUBLAS_WORKSPACE} before CUDA "
                "starts, and this process has used CUDA already: restart the kernel (or "
                f"process), or set {CUBLAS_VARIABLE}={CUBLAS_WORKSPACE} in its environment"
            )
        os.environ[CUBLAS_VARIABLE] = CUBLAS_WORKSPACE
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    # warn_only: an operation with no deterministic kernel on this GPU warns, naming itself,
    # rather than stopping a run hours in.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]
