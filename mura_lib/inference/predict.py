"""Predict new images and study folders with a checkpoint or an ensemble: `mura predict`.

A study folder is one forward pass of its views per member; its probability is the mean over
its views (the paper's rule) for an image-level model, the pooling head's for a study-level
one (which also reports each view's weight), and its label uses the source's threshold.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from mura_lib.data.images import read_gray, resize_square
from mura_lib.data.mura_layout import skip_reason
from mura_lib.device import resolve_device
from mura_lib.errors import CheckpointError, MuraError
from mura_lib.inference.engine import (
    CheckpointNormalizer,
    check_tta,
    forward,
    to_model_input,
)
from mura_lib.inference.ensemble import ModelSource, load_source
from mura_lib.models.build import backbone_of, model_from_checkpoint, study_head_of
from mura_lib.models.cam import cam_on_film, cam_overlay, class_activation_maps


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


# no_grad rather than inference_mode: a CAM needs gradients, which the weights of a model built
# under inference_mode could never give.
@torch.no_grad()
def predict_paths(
    checkpoint: str | Path | ModelSource,
    paths: list[str | Path],
    *,
    device: str = "auto",
    cam_dir: str | Path | None = None,
    tta: str | None = None,
) -> list[dict]:
    """Predict image files and study folders; one result dict per input.

    ``checkpoint`` is a checkpoint or an ensemble manifest (a view's probability is then the
    mean of its members'), or one already loaded. A study's probability is the mean over its
    views (the paper's rule) and its label uses the source's threshold, which must have been
    chosen with the same test-time augmentation ``tta`` (None: the source's own). With
    ``cam_dir``, a CAM overlay PNG is written for every view, over the film at its own size
    (of the first member, for an ensemble).
    """
    source = checkpoint if isinstance(checkpoint, ModelSource) else load_source(checkpoint)
    checkpoint = source.path
    tta = check_tta(source.tta if tta is None else tta)
    if source.threshold is None:
        raise CheckpointError(
            f"{checkpoint} has no decision threshold: write it with "
            "`mura ensemble ... --data MURA_ROOT`, which chooses one on validation studies"
        )
    if tta != source.tta:
        raise CheckpointError(
            f"the threshold of {checkpoint} was chosen with TTA {source.tta!r}, not {tta!r}: "
            f"calibrate one with `mura ensemble {checkpoint} --tta {tta} --data MURA_ROOT "
            "--out FILE.json` and predict with that manifest"
        )
    dev = resolve_device(device)
    models = []
    for ckpt in source.checkpoints:
        model = model_from_checkpoint(ckpt).to(dev)
        models.append(model.to(memory_format=torch.channels_last) if dev.type == "cuda" else model)
    threshold = float(source.threshold)
    results = []
    for name, views in _expand(paths):  # one study (at most a dozen views) per forward pass
        member_study, member_views, member_weights = [], [], []
        films = [read_gray(v)[0] for v in views]
        for k, (model, ckpt) in enumerate(zip(models, source.checkpoints, strict=True)):
            arrays = [resize_square(f, ckpt["image_size"], ckpt["resize"]) for f in films]
            x = torch.from_numpy(np.stack(arrays)[:, None]).to(dev)
            x = to_model_input(CheckpointNormalizer(ckpt)(x), dev.type == "cuda")
            backbone = backbone_of(model)  # the view classifier
            if cam_dir is not None and k == 0:
                cams, _ = class_activation_maps(backbone, x)
                _write_cams(Path(cam_dir), views, films, cams.cpu().numpy(), ckpt["resize"])
            # The study's score (the head's, or the mean over the views for an image-level
            # model) and each view's own probability and share in it.
            one_study = torch.zeros(len(views), dtype=torch.int64, device=dev)
            study_prob, weights, view_probs = forward(model, x, one_study, 1, tta=tta)
            member_study.append(float(study_prob[0]))
            member_views.append(view_probs.cpu().numpy().astype(np.float64))
            if study_head_of(ckpt) != "none":
                member_weights.append(weights.cpu().numpy().astype(np.float64))
        prob = float(np.mean(member_study))
        result = {
            "input": name,
            "n_views": len(views),
            "prob": round(prob, 6),
            "prediction": "abnormal" if prob >= threshold else "normal",
            "threshold": threshold,
            "view_probs": [round(float(p), 6) for p in np.mean(member_views, axis=0)],
            "tta": tta,
            "n_members": len(models),
        }
        if member_weights:  # study-level members: their mean view weights, in view order
            result["view_weights"] = [round(float(w), 6) for w in np.mean(member_weights, 0)]
        results.append(result)
    return results


def _write_cams(
    cam_dir: Path, views: list[Path], films: list[np.ndarray], cams: np.ndarray, resize: str
) -> None:
    """Each view's CAM over its film, at the film's own size (as the MURA paper shows them)."""
    cam_dir.mkdir(parents=True, exist_ok=True)
    for name, film, cam in zip(cam_file_names(views), films, cams, strict=True):
        cam_overlay(film, cam_on_film(cam, film.shape, resize)).save(cam_dir / name)


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
