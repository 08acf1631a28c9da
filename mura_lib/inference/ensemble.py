"""Ensembles: a set of checkpoints used as one model, written down as a small JSON manifest.

The MURA paper's headline model is the mean of the five checkpoints with the lowest
validation loss. Here an ensemble is any set of our checkpoints (the top-k of one run, several
seeds, other architectures or input sizes), named in a manifest::

    {"format": "mura_lib.ensemble/1",
     "members": [{"path": "top_k/epoch-033.pt", "sha256": "..."}, ...],  # relative to the file
     "chosen_by": {...},            # how the members were chosen, as given by who wrote it
     "combine": "mean of member probabilities",
     "tta": "none",                 # the test-time augmentation the threshold was chosen with
     "threshold": 0.43, "threshold_rule": "max_kappa", "threshold_note": null,
     "threshold_chosen_on": {...}}  # or threshold null: chosen at evaluation, on validation

The probability of an image is the mean of its members' probabilities, each member seeing the
image at its own input size; the study rule is unchanged. A member whose file is missing or
whose SHA-256 differs from the manifest's is refused: an ensemble is exactly the files it was
evaluated with, or nothing.

:class:`ModelSource` is what ``--checkpoint`` names, a checkpoint or a manifest, so that
evaluation and prediction treat both alike.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mura_lib.config import published_path
from mura_lib.disk import sha256_file, write_text_atomic
from mura_lib.errors import CheckpointError
from mura_lib.inference.engine import check_tta, usable_checkpoint

MANIFEST_FORMAT = "mura_lib.ensemble/1"
COMBINE_RULE = "mean of member probabilities"


def is_manifest(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".json"


@dataclass
class ModelSource:
    """A model as ``--checkpoint`` names it: one checkpoint, or the members of a manifest.

    Attributes:
        path: the checkpoint or manifest file.
        members: the member checkpoints (one for a plain checkpoint).
        checkpoints: their dicts, loaded with ``weights_only=True`` and verified.
        threshold, threshold_rule, threshold_note: the decision threshold and how it was
            chosen; threshold None when a manifest leaves it to be chosen at evaluation.
        tta: the test-time augmentation the threshold was chosen with.
        manifest: the manifest dict, None for a plain checkpoint.
    """

    path: Path
    members: list[Path]
    checkpoints: list[dict[str, Any]]
    threshold: float | None
    threshold_rule: str | None
    threshold_note: str | None
    tta: str
    manifest: dict | None = None

    @property
    def is_ensemble(self) -> bool:
        return self.manifest is not None

    def describe(self) -> dict:
        """What metrics.json records of the model: the file and its members, named as
        :func:`~mura_lib.config.published_path` names files.

        No file hashes: a checkpoint holds its run's timings, so its hash changes from one
        identical rerun to the next, and metrics.json must not (the manifest's hashes are
        what guarantee that an ensemble is evaluated with the files it names).
        """
        return {
            "kind": "ensemble" if self.is_ensemble else "checkpoint",
            "path": published_path(self.path),
            "members": [
                {
                    "path": published_path(member),
                    "arch": ckpt["model_args"]["arch"],
                    "image_size": ckpt["image_size"],
                    "epoch": int(ckpt["epoch"]) + 1 if "epoch" in ckpt else None,
                }
                for member, ckpt in zip(self.members, self.checkpoints, strict=True)
            ],
            "chosen_by": (self.manifest or {}).get("chosen_by"),
            "combine": COMBINE_RULE,
        }


def load_source(path: str | Path) -> ModelSource:
    """The checkpoint or ensemble manifest at ``path``, every member loaded and verified."""
    path = Path(path)
    if not is_manifest(path):
        ckpt = usable_checkpoint(path)
        return ModelSource(
            path=path,
            members=[path],
            checkpoints=[ckpt],
            threshold=float(ckpt["threshold"]),
            threshold_rule=ckpt.get("threshold_rule"),
            threshold_note=None,
            tta="none",  # a training run chooses its threshold without TTA
        )
    manifest = read_manifest(path)
    members = [path.parent / m["path"] for m in manifest["members"]]
    threshold = manifest.get("threshold")
    return ModelSource(
        path=path,
        members=members,
        checkpoints=[usable_checkpoint(m) for m in members],
        threshold=None if threshold is None else float(threshold),
        threshold_rule=manifest.get("threshold_rule"),
        threshold_note=manifest.get("threshold_note"),
        tta=check_tta(manifest.get("tta", "none")),
        manifest=manifest,
    )


def read_manifest(path: str | Path) -> dict:
    """Read and verify a manifest: its format, and every member present with its SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"ensemble manifest {path} does not exist: write one with `mura ensemble` or "
            "`mura train --keep-top-k K`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not a readable JSON manifest ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(
            f"{path} is not a {MANIFEST_FORMAT} manifest: write one with `mura ensemble`"
        )
    members = manifest.get("members")
    if not isinstance(members, list) or not members:
        raise CheckpointError(f"{path} names no members: an ensemble needs a checkpoint")
    for entry in members:
        if not isinstance(entry, dict) or not {"path", "sha256"} <= set(entry):
            raise CheckpointError(f"{path}: every member needs a path and a sha256: {entry!r}")
        member = path.parent / entry["path"]
        if not member.is_file():
            raise CheckpointError(
                f"{path}: member {entry['path']} is missing ({member}); restore it or write "
                "the manifest again"
            )
        actual = sha256_file(member)
        if actual != entry["sha256"]:
            raise CheckpointError(
                f"{path}: member {entry['path']} has changed since the manifest was written "
                f"(SHA-256 {actual[:12]}..., expected {entry['sha256'][:12]}...); an ensemble "
                "is refused unless every member is the file it was made from"
            )
    return manifest


def write_manifest(
    out: str | Path,
    members: list[str | Path],
    chosen_by: dict,
    *,
    threshold: float | None,
    threshold_rule: str | None,
    threshold_note: str | None = None,
    threshold_chosen_on: dict | None = None,
    tta: str = "none",
    check_members: bool = True,
) -> Path:
    """Write a manifest naming ``members`` (paths stored relative to its folder), atomically.

    Each member is loaded first to check it is a usable checkpoint, unless ``check_members``
    is False: training names files it has just written, and reloading every member each time
    the top k change would read them all again (hundreds of MB for DenseNet-169).
    """
    out = Path(out)
    entries = []
    for member in members:
        member = Path(member)
        if check_members:
            usable_checkpoint(member)  # never name a file that could not be used
        relative = os.path.relpath(member.resolve(), out.parent.resolve())
        entries.append({"path": Path(relative).as_posix(), "sha256": sha256_file(member)})
    manifest = {
        "format": MANIFEST_FORMAT,
        "members": entries,
        "chosen_by": chosen_by,
        "combine": COMBINE_RULE,
        "tta": check_tta(tta),
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "threshold_note": threshold_note,
        "threshold_chosen_on": threshold_chosen_on,
    }
    return write_text_atomic(
        out, json.dumps(manifest, indent=2, allow_nan=False) + "\n", "the ensemble manifest"
    )


def expand_members(paths: list[str | Path]) -> list[Path]:
    """Checkpoints named directly or through manifests, in order, each file once."""
    members: list[Path] = []
    for raw in paths:
        path = Path(raw)
        found = load_source(path).members if is_manifest(path) else [path]
        for member in found:
            if member.resolve() not in {m.resolve() for m in members}:
                members.append(member)
    return members
