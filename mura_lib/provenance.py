"""Where a result came from: the code version (package and git commit) of this checkout."""

from __future__ import annotations

import subprocess

from mura_lib import __version__
from mura_lib.config import PROJ_ROOT


def git(*args: str) -> str:
    """Output of a git command in the project checkout; "" when git or the checkout is absent."""
    try:
        return subprocess.run(
            ["git", "-C", str(PROJ_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> str:
    """Package version plus the git commit (and ``-dirty``), e.g. ``0.1.0+1a2b3c4-dirty``."""
    return f"{__version__}+{git('describe', '--always', '--dirty') or 'unknown'}"


def git_state() -> dict:
    """The commit and whether the code, notebooks or parameters differ from it."""
    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--", "mura_lib", "notebooks", "params")),
    }
