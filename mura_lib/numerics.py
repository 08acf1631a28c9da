"""Pinned CPU numerics: a CPU run gives the same bits on every x86-64 CPU with AVX2.

MKL (matrix products), oneDNN (convolutions) and torch's own vectorised kernels (reductions,
element-wise operations) each pick the widest vector code the CPU offers. AVX2 and AVX-512
code sum in another order and round differently, so the same training on two kinds of CPU
drifts apart from the first step. Capping all three at AVX2 makes them run the same code on
every x86-64 CPU that has AVX2 (Intel since 2013, AMD since Zen).

The caps are read once, when each library starts: they must be in the environment before
``import torch``. :func:`pinned_cpu_numerics` puts them there; the entry points (`mura`,
`make reproduce`) call it first, and what they start inherits it (the notebooks' kernels,
torchrun's workers). A value the user set wins (``setdefault``).

GPU runs are not pinned: the GPU does their arithmetic, and
:mod:`mura_lib.training.determinism` is their switch. ``MURA_PIN_CPU=0`` turns pinning off,
``MURA_PIN_CPU=1`` on even where a GPU is visible.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator, MutableMapping
from pathlib import Path

SWITCH = "MURA_PIN_CPU"
PINNED = {
    "MKL_CBWR": "AVX2,STRICT",  # MKL's Conditional Numerical Reproducibility, thread-count proof
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN: no AVX-512 convolutions
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's kernels; never set where the CPU lacks AVX2
}


def cpu_has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU runs AVX2 code. torch trusts ATEN_CPU_CAPABILITY blindly (AVX2 code on a
    CPU without it dies of an illegal instruction), so without /proc/cpuinfo the answer is no."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not cpuinfo.is_file():
        return False
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return "avx2" in line.split(":", 1)[1].split()
    return False


def gpu_visible(environ: MutableMapping[str, str] = os.environ, dev: Path = Path("/dev")) -> bool:
    """Whether an NVIDIA GPU is visible to this process, told without importing torch."""
    if environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return any(dev.glob("nvidia[0-9]*"))


def wants_pinning(device: str, environ: MutableMapping[str, str] = os.environ) -> bool:
    """Pin for a CPU run: ``device`` is ``cpu``, or ``auto`` with no GPU visible. ``MURA_PIN_CPU``
    (0 or 1) overrides the guess."""
    switch = environ.get(SWITCH, "").strip()
    if switch in ("0", "1"):
        return switch == "1"
    return device == "cpu" or (device == "auto" and not gpu_visible(environ))


def pin(device: str = "auto", environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the caps that are not set yet (a run on ``device``); return those it set."""
    if not (wants_pinning(device, environ) and cpu_has_avx2()):
        return {}
    added = {name: value for name, value in PINNED.items() if name not in environ}
    environ.update(added)
    return added


@contextlib.contextmanager
def pinned_cpu_numerics(device: str = "auto") -> Iterator[dict[str, str]]:
    """:func:`pin` for the duration of a run, then the environment as it was (tests and
    notebooks call the entry points in a process that goes on)."""
    added = pin(device)
    try:
        yield added
    finally:
        for name in added:
            os.environ.pop(name, None)


def cpu_numerics(environ: MutableMapping[str, str] = os.environ) -> dict:
    """What a manifest records: whether this process's CPU arithmetic is pinned, and how."""
    caps = {name: environ.get(name) for name in PINNED}
    return {"pinned": all(caps[name] == value for name, value in PINNED.items()), **caps}
