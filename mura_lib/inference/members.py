"""Every member of a model source over rows of the image index; the threshold of an ensemble.

A source (:class:`~mura_lib.inference.ensemble.ModelSource`) is one checkpoint or several.
Each member sees the images at its own input size and resize mode, from the decode-once cache
(one cache per size, shared by the members that use it), and its probabilities are kept
apart, so that the ensemble's probability (their mean) and each member's own numbers can be
recomputed from the files written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mura_lib.data.batches import BatchLoader
from mura_lib.data.cache import build_cache
from mura_lib.device import resolve_device
from mura_lib.errors import ConfigError, MuraError
from mura_lib.evaluation.predictions import canonical_prob, read_predictions
from mura_lib.evaluation.studies import study_scores
from mura_lib.evaluation.thresholds import ThresholdChoice, choose_threshold, held_out_threshold
from mura_lib.inference.engine import (
    CheckpointNormalizer,
    check_tta,
    predict,
    usable_checkpoint,
)
from mura_lib.inference.ensemble import ModelSource, expand_members, read_manifest, write_manifest
from mura_lib.models.build import model_from_checkpoint, study_head_of
from mura_lib.progress import resolve_mode


@dataclass
class MemberPredictions:
    """Per-member probabilities of the rows of ``frame`` (one column per member).

    ``probs`` holds float32-canonical values (what a predictions CSV stores), so the mean
    written for the ensemble is recomputable exactly from the member columns.
    """

    frame: pd.DataFrame
    probs: np.ndarray  # (n_rows, n_members)
    skipped: list[str]
    # (n_rows, n_members): each view's weight in its study for study-level members, NaN for
    # image-level ones (whose study score is the plain mean of the views)
    view_weights: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray:
        """The ensemble's probability of each row: the mean of its members' (float64)."""
        return self.probs.astype(np.float64).mean(axis=1)


def predict_rows(
    source: ModelSource,
    rows: pd.DataFrame,
    *,
    tta: str = "none",
    batch_size: int = 64,
    device: str = "auto",
    cache_dir: str | None = None,
    skip_bad_images: bool = False,
    progress: str = "auto",
    desc: str = "predict",
) -> MemberPredictions:
    """Run every member of ``source`` over ``rows`` (index rows with a ``path`` column)."""
    dev = resolve_device(device)
    mode = resolve_mode(progress)
    caches: dict[tuple[int, str], object] = {}
    columns, view_weights, frame, skipped = [], [], None, []
    for k, ckpt in enumerate(source.checkpoints):
        key = (int(ckpt["image_size"]), str(ckpt["resize"]))
        if key not in caches:
            caches[key] = build_cache(
                rows,
                size=key[0],
                resize=key[1],
                cache_dir=cache_dir,
                skip_bad=skip_bad_images,
                progress=mode == "bar",
            )
        cache = caches[key]
        if frame is None:
            frame, skipped = cache.frame, [bad.path for bad in cache.report.bad]
        elif not frame["rel_path"].equals(cache.frame["rel_path"]):
            raise MuraError(
                f"members of {source.path} read different images at sizes {sorted(caches)}: "
                "an image is unreadable at one size only; rebuild the caches (delete cache/)"
            )
        model = model_from_checkpoint(ckpt).to(dev)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        run = dict(
            channels_last=dev.type == "cuda",
            tta=tta,
            progress=mode,
            desc=desc if len(source.checkpoints) == 1 else f"{desc} (member {k + 1})",
        )
        # A study-level model reads whole studies (at most study_max_views views a batch).
        by_study = study_head_of(ckpt) != "none"
        cap = max(int(ckpt["train_args"].get("study_max_views", 0)), batch_size)
        loader = BatchLoader.from_cache(
            cache, cap if by_study else batch_size, by_study=by_study, device=dev, shuffle=False
        )
        probs, weights = predict(model, loader, CheckpointNormalizer(ckpt), **run)
        columns.append(canonical_prob(probs))
        view_weights.append(weights)
        del model, loader
    return MemberPredictions(
        frame, np.stack(columns, axis=1), skipped, np.stack(view_weights, axis=1)
    )


def shared_validation_rows(source: ModelSource, frame: pd.DataFrame) -> pd.DataFrame:
    """The official-train rows that every member held out for validation.

    Each member's validation subset is the patient-grouped split of its own run (its seed,
    val_fraction and fold). Only images in all of them were trained on by no member, so the
    ensemble's threshold is chosen on those.
    """
    from mura_lib.data.splits import split_of_run

    held_out = None
    for member, ckpt in zip(source.members, source.checkpoints, strict=True):
        args = ckpt.get("train_args") or {}
        if "seed" not in args or "val_fraction" not in args:
            raise ConfigError(
                f"{member} does not record its training split (seed, val_fraction): its "
                "validation subset, and so a threshold for it, cannot be rebuilt"
            )
        split = split_of_run(frame, args)
        val = set(split.loc[split["subset"] == "val", "rel_path"])
        held_out = val if held_out is None else held_out & val
    rows = frame[frame["rel_path"].isin(held_out or set())]
    if rows.empty:
        raise ConfigError(
            f"the members of {source.path} share no validation image (they were trained on "
            "different splits that cover all of official train): no threshold can be chosen "
            "on data that none of them trained on"
        )
    return rows


def threshold_rule_of(source: ModelSource) -> str:
    """The rule the members' thresholds were chosen by; an ensemble uses the same rule."""
    rules = {ckpt.get("threshold_rule") or "max_kappa" for ckpt in source.checkpoints}
    if source.threshold_rule:
        return source.threshold_rule
    if len(rules) > 1:
        raise ConfigError(
            f"the members of {source.path} chose their thresholds by different rules "
            f"{sorted(rules)}: name one in the manifest (threshold_rule)"
        )
    return rules.pop()


def validation_threshold(
    source: ModelSource,
    frame: pd.DataFrame,
    *,
    tta: str = "none",
    **predict_kwargs,
) -> tuple[ThresholdChoice, dict]:
    """Choose the threshold of ``source`` with ``tta`` on its shared validation studies.

    Returns the choice and a description of the studies it was chosen on.
    """
    rows = shared_validation_rows(source, frame)
    predicted = predict_rows(source, rows, tta=tta, desc="calibrate on val", **predict_kwargs)
    studies = study_scores(predicted.frame.assign(prob=canonical_prob(predicted.mean)))
    choice = choose_threshold(studies["label"], studies["prob"], threshold_rule_of(source))
    chosen_on = {
        "subset": "val (held out by every member)",
        "n_studies": len(studies),
        "n_images": len(predicted.frame),
        "tta": tta,
    }
    return choice, chosen_on


def sidecar_threshold(source: ModelSource) -> tuple[ThresholdChoice, dict] | None:
    """The threshold from the members' own validation predictions
    (:func:`~mura_lib.evaluation.thresholds.held_out_threshold`), None unless every member
    has them.

    A checkpoint names its validation predictions file (``val_predictions``, beside it); these
    are the probabilities the run computed anyway, so no image is read again.
    """
    frames = []
    for member, ckpt in zip(source.members, source.checkpoints, strict=True):
        name = ckpt.get("val_predictions")
        path = member.parent / name if name else None
        if path is None or not path.is_file():
            return None
        frames.append(read_predictions(path))
    return held_out_threshold(frames, threshold_rule_of(source))


def build_ensemble(
    paths: list[str | Path],
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    labels: str | Path | None = None,
    tta: str = "none",
    chosen_by: dict | None = None,
    **predict_kwargs,
) -> dict:
    """Write a manifest of the checkpoints named by ``paths`` (manifests are expanded).

    The threshold is chosen by the members' rule on validation studies that no member trained
    on: with ``data_root`` (and ``labels``), by predicting the studies every member held out
    (with ``tta``); otherwise from the members' validation predictions when they all have
    them, each image scored by the members that held it out (out of fold for the runs of a
    cross-validation). When neither is possible the manifest holds no threshold, and
    `mura evaluate` chooses one on validation studies. ``chosen_by`` says how the members were
    chosen (default: named by the user).
    """
    from mura_lib.data import read_mura

    members = expand_members(paths)
    source = ModelSource(
        path=Path(out),
        members=members,
        checkpoints=[usable_checkpoint(m) for m in members],
        threshold=None,
        threshold_rule=None,
        threshold_note=None,
        tta=check_tta(tta),
    )
    calibrated = None
    if data_root is not None:
        frame = read_mura(data_root, labels)
        calibrated = validation_threshold(source, frame, tta=tta, **predict_kwargs)
    elif tta == "none":
        calibrated = sidecar_threshold(source)
    choice, chosen_on = calibrated if calibrated is not None else (None, None)
    written = write_manifest(
        out,
        members,
        chosen_by or {"how": "named by the user", "inputs": [str(p) for p in paths]},
        threshold=None if choice is None else choice.value,
        threshold_rule=threshold_rule_of(source) if choice is None else choice.rule,
        threshold_note=None if choice is None else choice.note,
        threshold_chosen_on=chosen_on,
        tta=tta,
    )
    return read_manifest(written)
