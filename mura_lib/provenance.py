"""Where a result came from: the code version (package and git commit) of this checkout."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

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


def cpu_state(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The kind of CPU a result was made on. Training on a CPU is identical on one kind of CPU
    but not across kinds: the vector kernels that MKL and oneDNN pick (``capability``: AVX2,
    AVX512, ...) round differently, so two manifests are comparable bit for bit only when
    these match."""
    import torch

    fields: dict[str, str] = {}
    if cpuinfo.is_file():  # Linux; elsewhere only the capability is known
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor describes them all
    return {
        "model_name": fields.get("model name", "unknown"),
        "family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


LOCK_FILE = PROJ_ROOT / "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def locked_versions(lock: Path = LOCK_FILE) -> dict[str, str]:
    """{package: version} of the exact pins of a pip-compile lock file."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def lock_drift(lock: Path = LOCK_FILE) -> list[tuple[str, str, str | None]]:
    """(package, locked version, installed version or None) for every pin not honoured."""
    if not lock.is_file():
        return []
    drift = []
    for name, version in locked_versions(lock).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            drift.append((name, version, installed))
    return drift


def lock_warning(lock: Path = LOCK_FILE) -> str | None:
    """One line saying how the installed packages differ from the lock, or None."""
    drift = lock_drift(lock)
    if not drift:
        return None
    shown = ", ".join(f"{n} {i or 'missing'} (locked {v})" for n, v, i in drift[:4])
    more = f" and {len(drift) - 4} more" if len(drift) > 4 else ""
    return (
        f"{len(drift)} installed package(s) differ from {lock.name}: {shown}{more}; results "
        "may not regenerate exactly (a fresh `make setup` installs the locked versions)"
    )
