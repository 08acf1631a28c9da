"""Use a trained checkpoint: evaluate it on a split of MURA, or predict new images and studies.

Both run the model under ``torch.inference_mode()`` in batches, with the preprocessing stored
in the checkpoint (image size, resize mode, normalisation) and its decision threshold, which
was chosen on the validation subset, never on the split being evaluated.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from mura_lib.data.augment import normalize
from mura_lib.data.images import load_image
from mura_lib.data.mura_layout import skip_reason
from mura_lib.device import resolve_device
from mura_lib.errors import CheckpointError, MuraError
from mura_lib.models.cam import cam_overlay, class_activation_maps
from mura_lib.models.checkpoint import load_checkpoint, model_from_checkpoint
from mura_lib.training.loop import autocast, predict_probs, to_model_input
from mura_lib.training.progress import resolve_mode

PREDICTION_COLUMNS = ["study_id", "body_part", "patient_id", "view", "label", "prob", "rel_path"]


class _EvalNormalizer:
    """The evaluation half of an Augmenter: normalisation only (what predict_probs calls)."""

    def __init__(self, ckpt: dict) -> None:
        self.mean = float(ckpt["normalization"]["mean"][0])
        self.std = float(ckpt["normalization"]["std"][0])

    def __call__(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        return normalize(images, self.mean, self.std)


def load_for_inference(
    checkpoint: str | Path, device: str = "auto"
) -> tuple[torch.nn.Module, dict]:
    """The model of ``checkpoint`` in eval mode on ``device``, and the checkpoint dict."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("threshold") is None:
        raise CheckpointError(
            f"{checkpoint} has no decision threshold (a last.pt?): use the best.pt of a run"
        )
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, ckpt


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    *,
    split: str = "valid",
    batch_size: int = 64,
    device: str = "auto",
    n_boot: int = 1000,
    seed: int = 0,
    skip_bad_images: bool = False,
    cache_dir: str | None = None,
    progress: str = "auto",
) -> dict:
    """Predict every image of ``split`` and write predictions.csv and metrics.json.

    metrics.json is computed from predictions.csv as written (probabilities as float32), so a
    recomputation from the CSV gives exactly the same numbers.
    """
    # Imported here, not at the top: `predict` needs none of them, and scikit-learn and
    # pandas add seconds to a one-study prediction's start-up.
    from mura_lib.data import read_mura
    from mura_lib.data.batches import BatchLoader
    from mura_lib.data.cache import build_cache
    from mura_lib.evaluation.predictions import write_predictions
    from mura_lib.evaluation.report import evaluation_report

    model, ckpt = load_for_inference(checkpoint, device)
    frame = read_mura(data_root)
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise MuraError(
            f"{data_root} has no {split!r} images; splits present: "
            f"{sorted(frame['split'].unique())}"
        )
    cache = build_cache(
        rows,
        size=ckpt["image_size"],
        resize=ckpt["resize"],
        cache_dir=cache_dir,
        skip_bad=skip_bad_images,
        progress=resolve_mode(progress) == "bar",
    )
    dev = next(model.parameters()).device
    loader = BatchLoader.from_cache(cache, batch_size, device=dev, shuffle=False)
    probs = predict_probs(
        model,
        loader,
        _EvalNormalizer(ckpt),
        channels_last=dev.type == "cuda",
        progress=resolve_mode(progress),
        desc=f"predict {split}",
    )
    out_dir = Path(out_dir)
    predictions = cache.frame.assign(prob=probs)[PREDICTION_COLUMNS]
    pred_path = write_predictions(predictions, out_dir / "predictions.csv")
    report = evaluation_report(
        pred_path,
        threshold=ckpt["threshold"],
        threshold_rule=ckpt["threshold_rule"],
        n_boot=n_boot,
        seed=seed,
    )
    report["checkpoint"] = str(checkpoint)
    report["split"] = split
    report["skipped_images"] = [bad.path for bad in cache.report.bad]
    write_json(report, out_dir / "metrics.json")
    return report


def write_json(payload: dict, path: Path) -> Path:
    """Write JSON atomically (temporary file, then rename); NaN is refused, not written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _natural_key(path: Path) -> tuple:
    """image2 before image10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def _expand(paths: list[str | Path]) -> list[tuple[str, list[Path]]]:
    """Group the inputs: a folder is a study (its PNG views), a file is a one-image item."""
    items = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            views = sorted(
                (
                    p
                    for p in path.iterdir()
                    if p.is_file() and skip_reason(p.name, is_dir=False, in_study=True) is None
                ),
                key=_natural_key,
            )
            if not views:
                raise MuraError(f"{path} holds no PNG image: pass a study folder or image files")
            items.append((str(path), views))
        elif path.is_file():
            items.append((str(path), [path]))
        else:
            raise MuraError(f"{path} does not exist: pass image files or study folders")
    return items


@torch.inference_mode()
def predict_paths(
    checkpoint: str | Path,
    paths: list[str | Path],
    *,
    device: str = "auto",
    cam_dir: str | Path | None = None,
) -> list[dict]:
    """Predict image files and study folders; one result dict per input.

    A study's probability is the mean over its views (the paper's rule) and its label uses
    the checkpoint's threshold. With ``cam_dir``, a CAM overlay PNG is written for every view.
    """
    model, ckpt = load_for_inference(checkpoint, device)
    dev = next(model.parameters()).device
    threshold = float(ckpt["threshold"])
    results = []
    for name, views in _expand(paths):  # one study (at most a dozen views) per forward pass
        arrays = [load_image(v, ckpt["image_size"], ckpt["resize"])[0] for v in views]
        x = torch.from_numpy(np.stack(arrays)[:, None]).to(dev)
        x = to_model_input(_EvalNormalizer(ckpt)(x), dev.type == "cuda")
        if cam_dir is not None:
            cams, logits = class_activation_maps(model, x)
            _write_cams(Path(cam_dir), views, arrays, cams.cpu().numpy())
        else:
            with autocast(dev, True):
                logits = model(x).float().squeeze(1)
        view_probs = torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64)
        prob = float(view_probs.mean())
        results.append(
            {
                "input": name,
                "n_views": len(views),
                "prob": round(prob, 6),
                "prediction": "abnormal" if prob >= threshold else "normal",
                "threshold": threshold,
                "view_probs": [round(float(p), 6) for p in view_probs],
            }
        )
    return results


def _write_cams(
    cam_dir: Path, views: list[Path], arrays: list[np.ndarray], cams: np.ndarray
) -> None:
    cam_dir.mkdir(parents=True, exist_ok=True)
    for name, image, cam in zip(cam_file_names(views), arrays, cams, strict=True):
        cam_overlay(image, cam).save(cam_dir / name)


def cam_file_names(views: list[Path]) -> list[str]:
    """One overlay file name per view, distinct so that no overlay overwrites another.

    The study folder alone is not enough: in MURA nearly every study is ``study1_positive`` or
    ``study1_negative``, so the name holds the last three folders (part, patient, study) and
    the image name, and is numbered when two inputs still share it.
    """
    names: list[str] = []
    for view in views:
        absolute = view.resolve()
        folders = [part for part in absolute.parent.parts[-3:] if part != absolute.anchor]
        base = name = "_".join([*folders, view.stem])
        n = 1
        while f"{name}_cam.png" in names:
            n += 1
            name = f"{base}-{n}"
        names.append(f"{name}_cam.png")
    return names
