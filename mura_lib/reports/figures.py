"""Saving figures: one place, so every notebook writes its PNGs the same way."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a figure (format from the suffix), creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
