"""Project paths and constants.

Every path is derived from the project root, so code behaves the same whether it is run from
a notebook folder (JupyterLab), the repository root (make, papermill) or anywhere else.
"""

from __future__ import annotations

import os
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

# Body parts as they appear in MURA folder names (without the "XR_" prefix), in the paper's order.
BODY_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
SPLITS = ("train", "valid")

# ImageNet statistics, used to normalise inputs for ImageNet-pretrained models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
