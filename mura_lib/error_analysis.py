"""Looking at mistakes: the most confident errors, their views with class activation maps,
and (on the synthetic sample) which kinds of abnormality the model misses.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from mura_lib.data.augment import normalize
from mura_lib.data.images import load_image
from mura_lib.models.cam import cam_overlay, class_activation_maps


def confident_errors(
    studies: pd.DataFrame, threshold: float, n: int = 4
) -> dict[str, pd.DataFrame]:
    """The ``n`` most confident false negatives (abnormal, lowest score) and false positives
    (normal, highest score) among study scores."""
    fn = studies[(studies["label"] == 1) & (studies["prob"] < threshold)].nsmallest(n, "prob")
    fp = studies[(studies["label"] == 0) & (studies["prob"] >= threshold)].nlargest(n, "prob")
    return {"false_negatives": fn, "false_positives": fp}


def study_cam_figure(
    model: torch.nn.Module, checkpoint: dict, views: pd.DataFrame, max_views: int = 4
) -> Figure:
    """One study: each view (as the model sees it) above its CAM overlay and probability."""
    views = views.sort_values("view").head(max_views)
    size, resize = checkpoint["image_size"], checkpoint["resize"]
    images = np.stack([load_image(p, size, resize)[0] for p in views["path"]])
    mean, std = checkpoint["normalization"]["mean"][0], checkpoint["normalization"]["std"][0]
    device = next(model.parameters()).device
    x = normalize(torch.from_numpy(images[:, None]).to(device), mean, std)
    cams, logits = class_activation_maps(model, x)
    probs = torch.sigmoid(logits).cpu().numpy()
    fig, axes = plt.subplots(2, len(views), figsize=(2.6 * len(views), 5.4), squeeze=False)
    for k, (image, cam, prob) in enumerate(zip(images, cams.cpu().numpy(), probs, strict=True)):
        axes[0, k].imshow(image, cmap="gray", vmin=0, vmax=255)
        axes[0, k].set_title(f"view {views['view'].iloc[k]}", fontsize="small")
        axes[1, k].imshow(cam_overlay(image, cam))
        axes[1, k].set_title(f"CAM, p={prob:.2f}", fontsize="small")
    for ax in axes.flat:
        ax.axis("off")
    first = views.iloc[0]
    label = "abnormal" if first["label"] == 1 else "normal"
    fig.suptitle(f"{first['study_id']} (label: {label})", fontsize="medium")
    fig.tight_layout()
    return fig


def read_synthetic_truth(data_root: str | Path) -> pd.DataFrame | None:
    """The synthetic sample's ground truth (kind, subtlety per image), or None for real data.

    ``data_root`` is the MURA-v1.1 folder or its parent; the sidecar lies beside MURA-v1.1.
    """
    root = Path(data_root)
    for candidate in (root / "synthetic_truth.csv", root.parent / "synthetic_truth.csv"):
        if candidate.is_file():
            return pd.read_csv(candidate)
    return None


def misses_by_kind(
    predictions: pd.DataFrame, truth: pd.DataFrame, threshold: float
) -> pd.DataFrame:
    """Per abnormality kind and subtlety band: abnormal studies, and the share detected.

    A study's kind is that of its most visible (least subtle) abnormal view.
    """
    from mura_lib.evaluation.studies import study_scores

    studies = study_scores(predictions)
    merged = predictions.merge(truth, on="rel_path", how="left")
    abnormal_views = merged[merged["kind"].fillna("none") != "none"]
    per_study = (
        abnormal_views.sort_values("subtlety").groupby("study_id")[["kind", "subtlety"]].first()
    )
    rows = studies[studies["label"] == 1].merge(per_study, on="study_id", how="left")
    rows["subtlety_band"] = pd.cut(
        rows["subtlety"],
        [0, 0.33, 0.67, 1.0],
        labels=["obvious", "moderate", "subtle"],
        include_lowest=True,
    )
    rows["detected"] = rows["prob"] >= threshold
    table = rows.groupby(["kind", "subtlety_band"], observed=True).agg(
        studies=("study_id", "size"), detected=("detected", "mean"), mean_prob=("prob", "mean")
    )
    return table.reset_index()
