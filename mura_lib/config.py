"""Project paths and constants.

Every path is derived from the project root, so code behaves the same whether it is run from
a notebook folder (JupyterLab), the repository root (make, papermill) or anywhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJ_ROOT = Path(__file__).resolve().parents[1]

DATA_SAMPLE_DIR = PROJ_ROOT / "data_sample"
SAMPLE_ROOT = DATA_SAMPLE_DIR / "MURA-v1.1"  # the bundled synthetic sample (MURA-v1.1 layout)
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
PARAMS_DIR = PROJ_ROOT / "params"
RESULTS_DIR = PROJ_ROOT / "results"
MODELS_DIR = PROJ_ROOT / "models"
# Preprocessed image caches: derived data, safe to delete, never committed.
# MURA_CACHE_DIR moves it (e.g. to a fast local disk on a cluster).
CACHE_DIR = Path(os.environ.get("MURA_CACHE_DIR", PROJ_ROOT / "cache"))

# MURA's seven body parts as they appear in its folder names (without the "XR_" prefix), in the
# paper's order. Not a closed list: every XR_<PART> folder of a tree is a body part, and other
# parts follow MURA's in sorted order (mura_lib.data.mura_layout.ordered_parts).
BODY_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
SPLITS = ("train", "valid")

# ImageNet statistics, used to normalise inputs for ImageNet-pretrained models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The single-channel normalisation of our models: the mean of ImageNet's RGB statistics, since
# the first convolution sums the pretrained RGB filters (see mura_lib.models.build).
GRAY_MEAN = round(sum(IMAGENET_MEAN) / 3, 6)
GRAY_STD = round(sum(IMAGENET_STD) / 3, 6)


@dataclass(frozen=True)
class RunPaths:
    """Where one profile's run reads its data and writes its results and models."""

    profile: str
    data_root: Path  # the MURA-v1.1 folder (or its parent)
    results: Path  # executed notebooks, HTML, metrics.json, manifest.json
    figures: Path  # results/<profile>/figures
    models: Path  # checkpoints and training history
    labels: Path | None = None  # relabelled {split}_labeled_studies.csv; None: the tree's labels

    def figure(self, name: str) -> Path:
        """Path of a figure file, creating the figures folder on first use."""
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / name


def run_paths(
    profile: str,
    data_root: str = "",
    results_dir: str = "",
    models_dir: str = "",
    labels: str = "",
) -> RunPaths:
    """Resolve a notebook's path parameters; empty strings mean the project defaults.

    `make reproduce` passes staging folders for ``results_dir`` and ``models_dir`` so that a
    failed run never half-overwrites the last good results; in JupyterLab the defaults apply.
    """
    results = from_root(results_dir) if results_dir else RESULTS_DIR / profile
    return RunPaths(
        profile=profile,
        data_root=from_root(data_root) if data_root else SAMPLE_ROOT,
        results=results,
        figures=results / "figures",
        models=from_root(models_dir) if models_dir else MODELS_DIR / profile,
        labels=from_root(labels) if labels else None,
    )


# `make reproduce` runs the notebooks into <root>/.staging-<profile>, published as <root>/<profile>
STAGING_PREFIX = ".staging-"


def project_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the project root when inside it (the same in every clone),
    absolute otherwise."""
    path = Path(path).resolve()
    return str(path.relative_to(PROJ_ROOT)) if path.is_relative_to(PROJ_ROOT) else str(path)


def published_path(path: str | os.PathLike) -> str:
    """How results name a file: relative to the project root, and where `make reproduce`
    publishes it (``models/.staging-sample/best.pt`` is ``models/sample/best.pt``). Notebook 03
    reads the models in a staging folder; its metrics.json names them where they will be, so
    that publishing is two renames and rewrites nothing."""
    parts = (part.removeprefix(STAGING_PREFIX) for part in Path(path).resolve().parts)
    return project_relative(Path(*parts))


def from_root(path: str) -> Path:
    """A user path; relative ones are taken from the project root, not the working directory."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else PROJ_ROOT / expanded
