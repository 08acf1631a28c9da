"""Class activation maps of a study, view by view: where the model saw the evidence, and (for a
study-level model) how much weight its pooling head gave each view."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from mura_lib.data.images import read_gray, resize_square
from mura_lib.inference.engine import CheckpointNormalizer
from mura_lib.models.cam import cam_on_film, cam_overlay, class_activation_maps


def study_cam_figure(
    model: torch.nn.Module, checkpoint: dict, views: pd.DataFrame, max_views: int = 4
) -> Figure:
    """One study: each view's film above its CAM, drawn over the film, and its probability.

    ``model`` is an image-level classifier (a study-level model's ``backbone``: the CAM and
    probability are then the view's own). A ``view_weight`` column in ``views`` (see
    :func:`study_views`) is shown in each view's title: the weight the head gave it.
    """
    views = views.sort_values("view").head(max_views)
    size, resize = checkpoint["image_size"], checkpoint["resize"]
    films = [read_gray(p)[0] for p in views["path"]]
    images = np.stack([resize_square(film, size, resize) for film in films])
    device = next(model.parameters()).device
    x = CheckpointNormalizer(checkpoint)(torch.from_numpy(images[:, None]).to(device))
    cams, logits = class_activation_maps(model, x)
    probs = torch.sigmoid(logits).cpu().numpy()
    fig, axes = plt.subplots(2, len(views), figsize=(2.6 * len(views), 5.4), squeeze=False)
    for k, (film, cam, prob) in enumerate(zip(films, cams.cpu().numpy(), probs, strict=True)):
        axes[0, k].imshow(film, cmap="gray", vmin=0, vmax=255)
        title = f"view {views['view'].iloc[k]}"
        if "view_weight" in views:
            title += f", weight {views['view_weight'].iloc[k]:.2f}"
        axes[0, k].set_title(title, fontsize="small")
        axes[1, k].imshow(cam_overlay(film, cam_on_film(cam, film.shape, resize)))
        axes[1, k].set_title(f"CAM, p={prob:.2f}", fontsize="small")
    for ax in axes.flat:
        ax.axis("off")
    first = views.iloc[0]
    label = "abnormal" if first["label"] == 1 else "normal"
    fig.suptitle(f"{first['study_id']} (label: {label})", fontsize="medium")
    fig.tight_layout()
    return fig


def study_views(
    frame: pd.DataFrame, study_id: str, predictions: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The rows of ``frame`` (read_mura) of one study, with the ``view_weight`` of
    ``predictions`` beside each view when it has one (a study-level model's predictions)."""
    views = frame[frame["study_id"] == study_id]
    if predictions is None or "view_weight" not in predictions:
        return views
    weights = predictions.loc[predictions["study_id"] == study_id, ["view", "view_weight"]]
    return views.merge(weights, on="view", how="left")
