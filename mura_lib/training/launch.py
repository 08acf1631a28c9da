"""Starting `mura train` under torchrun from Python: what notebook 02 does with ``gpus > 1``.

A notebook's kernel is one process; DistributedDataParallel wants one process per GPU, started
by torchrun. So the notebook launches ``torchrun --nproc_per_node=N -m mura_lib train ...`` as
a subprocess with the same parameters, streams its one-line-per-epoch log into the cell's
output, and reads the run's files back, giving the summary that :func:`fit` gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mura_lib.config import PROJ_ROOT
from mura_lib.errors import MuraError
from mura_lib.training.config import TrainConfig
from mura_lib.training.train import fit, run_summary


def torchrun_argv(
    data_root: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    nproc: int,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> list[str]:
    """The command line: this interpreter's torchrun (``python -m torch.distributed.run``)."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    argv += ["-m", "mura_lib", "train", "--data", str(data_root), "--out", str(out_dir)]
    argv += config.to_argv()
    return argv + (["--resume"] if resume else []) + (["--overwrite"] if overwrite else [])


def fit_with_torchrun(
    data_root: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    nproc: int,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train with ``nproc`` processes; return fit()'s summary, read from the run's folder."""
    config.validate()
    argv = torchrun_argv(data_root, out_dir, config, nproc, resume=resume, overwrite=overwrite)
    env = {**os.environ, "MURA_PROGRESS": os.environ.get("MURA_PROGRESS", "log")}
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=PROJ_ROOT,
        env=env,
        bufsize=1,
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if not line.startswith('{"out_dir"'):  # the command's summary: read from files below
            print(line, end="", flush=True)
    code = process.wait()
    if code != 0:
        errors = [line for line in lines if line.startswith("error:")]
        reason = errors[-1] if errors else (lines[-1] if lines else "no output")
        raise MuraError(
            f"training with torchrun on {nproc} processes failed (status {code}): {reason}; "
            f"{out_dir}/last.pt keeps the last finished epoch, resume=True continues the run"
        )
    return run_summary(out_dir)


def fit_on(
    gpus: int,
    data_root: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """:func:`fit` in this process, or under torchrun with one process per GPU (``gpus`` > 1)."""
    if gpus > 1:
        return fit_with_torchrun(
            data_root, out_dir, config, gpus, resume=resume, overwrite=overwrite
        )
    return fit(data_root, out_dir, config, resume=resume, overwrite=overwrite)
