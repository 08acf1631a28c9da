"""requirements.lock: exact versions for everything `make setup` installs, used by setup and by
environment.yml, and a warning when the installed packages drift from it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from mura_lib.config import PROJ_ROOT
from mura_lib.provenance import LOCK_FILE, lock_drift, lock_warning, locked_versions


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_pins_every_dependency_of_the_project() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((PROJ_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pinned = {canonical(name) for name in locked_versions()}
    missing = [d for d in wanted if canonical(re.split(r"[<>=!~ \[]", d)[0]) not in pinned]
    assert missing == []
    assert locked_versions()["torch"] == "2.14.1"  # the release that made results/
    assert "--find-links" not in LOCK_FILE.read_text()  # nothing of one machine's pip setup


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_setup_installs_with_the_lock_as_constraints() -> None:
    done = subprocess.run(
        ["make", "-n", "-B", "-s", "-C", str(PROJ_ROOT), "setup"],
        capture_output=True,
        text=True,
        check=True,
    )
    install = next(line for line in done.stdout.splitlines() if "pip install" in line)
    assert "-c requirements.lock" in install and "-e '.[dev]'" in install


def test_environment_yml_uses_the_same_lock() -> None:
    text = (PROJ_ROOT / "environment.yml").read_text()
    assert re.search(r"^\s*- -c requirements\.lock\b", text, re.MULTILINE)


def test_this_environment_was_installed_as_locked() -> None:
    """What `make setup` (and CI's fresh clone) installs is exactly the lock."""
    assert lock_drift() == []
    assert lock_warning() is None


def test_drift_is_said_in_one_line(tmp_path) -> None:
    lock = tmp_path / "requirements.lock"
    lines = ["numpy==0.0.1", "    # via pandas", "no-such-package-here==1.0"]
    lock.write_text("\n".join([*lines, "torch==2.14.1 ; python_version > '3'", ""]))
    assert [name for name, _, _ in lock_drift(lock)] == ["numpy", "no-such-package-here"]
    warning = lock_warning(lock)
    assert warning.startswith("2 installed package(s) differ from requirements.lock: numpy ")
    assert "(locked 0.0.1)" in warning and "no-such-package-here missing (locked 1.0)" in warning
    assert "\n" not in warning
