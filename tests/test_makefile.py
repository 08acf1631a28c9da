"""The Makefile's targets as make would run them (dry runs: nothing is executed)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from mura_lib.config import PROJ_ROOT

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(target: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-s", "-C", str(PROJ_ROOT), target],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@needs_make
def test_lab_allows_root_exactly_when_run_as_root() -> None:
    """JupyterLab refuses root without --allow-root: `make lab` in a container stopped at once."""
    command = next(line for line in dry_run("lab").splitlines() if "jupyter lab" in line)
    assert ("--allow-root" in command) == (os.geteuid() == 0)
    assert command.rstrip().endswith("notebooks/")
