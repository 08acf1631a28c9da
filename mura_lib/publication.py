"""Whether published results belong with their models.

`make reproduce` publishes ``models/<profile>`` first, then ``results/<profile>``, whose
``manifest.json`` names every model file with its SHA-256. A run stopped between the two, or
models retrained since, leave results that describe other models: whatever reads published
results (the pipeline before it replaces them, `mura compare`) checks them here first.
"""

from __future__ import annotations

import json
from pathlib import Path

from mura_lib.config import from_root
from mura_lib.disk import sha256_file
from mura_lib.errors import MuraError


def publication_problem(results: Path) -> str | None:
    """Why the results folder does not belong with its models, or None when it does.

    ``results/manifest.json`` names every model file with its SHA-256; a file missing or
    different means that a run stopped between publishing its models and its results, or that
    the models were retrained since. Not checked: results without a run manifest (notebooks
    run by hand), and results whose models folder is absent (a fresh clone: models/ is not
    committed).
    """
    manifest_path = Path(results) / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        models = json.loads(manifest_path.read_text())["models"]
        folder, hashes = from_root(models["folder"]), dict(models["sha256"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        return f"{manifest_path} is not a run manifest of `make reproduce`"
    if not folder.is_dir():
        return None
    for name, digest in hashes.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            state = "changed" if path.is_file() else "missing"
            return (
                f"{results} were not made with the models in {folder} ({name} is {state}): a "
                "run stopped while publishing them, or the models were retrained since"
            )
    return None


def check_publication(results: Path) -> None:
    """Raise MuraError when results/<profile> does not belong with its models (see
    :func:`publication_problem`); what reads published results calls this first."""
    problem = publication_problem(results)
    if problem:
        raise MuraError(
            f"{problem}; run `make reproduce PROFILE={Path(results).name}` to make both again"
        )
