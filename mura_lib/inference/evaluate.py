"""Evaluate a checkpoint on a split of MURA: what `mura evaluate` and notebook 03 run.

The model runs under ``torch.inference_mode()`` in batches, with the preprocessing stored in
the checkpoint and its decision threshold, which was chosen on the validation subset, never on
the split being evaluated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mura_lib.errors import MuraError
from mura_lib.inference.engine import CheckpointNormalizer, load_for_inference, predict_probs
from mura_lib.progress import resolve_mode

PREDICTION_COLUMNS = ["study_id", "body_part", "patient_id", "view", "label", "prob", "rel_path"]


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
    # Imported here, not at the top: scikit-learn and pandas add seconds to the start-up of
    # `mura predict`, which imports this package but never evaluates.
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
        CheckpointNormalizer(ckpt),
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
