"""Evaluate a checkpoint or an ensemble on a split of MURA: `mura evaluate` and notebook 03.

Each model runs under ``torch.inference_mode()`` in batches, with the preprocessing stored in
its checkpoint; the decision threshold was chosen on validation studies, never on the split
being evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mura_lib.config import published_path
from mura_lib.disk import write_text_atomic
from mura_lib.errors import MuraError
from mura_lib.inference.engine import check_tta

if TYPE_CHECKING:
    import pandas as pd

    from mura_lib.inference.ensemble import ModelSource
    from mura_lib.inference.members import MemberPredictions

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
    tta: str | None = None,
    labels: str | Path | None = None,
) -> dict:
    """Predict every image of ``split`` and write predictions.csv and metrics.json.

    ``checkpoint`` is a checkpoint or an ensemble manifest; ``tta`` the test-time
    augmentation (None: the one the source's threshold was chosen with, "none" for a
    checkpoint). The threshold is the source's when it was chosen with this ``tta``; otherwise
    it is chosen here, by the same rule, on the validation studies that every member held out
    (never on ``split``). An ensemble also writes member_predictions.csv (one probability
    column per member), from which its mean and every member's metrics are recomputable.

    ``labels`` is a folder of relabelled `{split}_labeled_studies.csv` files
    (:mod:`mura_lib.data.labels`) for the split and for a threshold chosen here; metrics.json
    records which labels were used.

    metrics.json is computed from predictions.csv as written (probabilities as float32), so a
    recomputation from the CSV gives exactly the same numbers.
    """
    # Imported here, not at the top: scikit-learn and pandas add seconds to the start-up of
    # `mura predict`, which imports this package but never evaluates.
    from mura_lib.data import scan_mura
    from mura_lib.evaluation.predictions import write_predictions
    from mura_lib.evaluation.report import evaluation_report
    from mura_lib.evaluation.thresholds import ThresholdChoice
    from mura_lib.inference.ensemble import load_source
    from mura_lib.inference.members import predict_rows, validation_threshold

    source = load_source(checkpoint)
    tta = check_tta(source.tta if tta is None else tta)
    index = scan_mura(data_root, labels=labels)
    frame = index.frame
    rows = frame[frame["split"] == split]
    if rows.empty:
        raise MuraError(
            f"{data_root} has no {split!r} images; splits present: "
            f"{sorted(frame['split'].unique())}"
        )
    run = dict(
        batch_size=batch_size,
        device=device,
        cache_dir=cache_dir,
        skip_bad_images=skip_bad_images,
        progress=progress,
    )
    if source.threshold is not None and source.tta == tta:
        threshold = ThresholdChoice(source.threshold, source.threshold_rule or "given")
        threshold_source = "manifest" if source.is_ensemble else "checkpoint"
        chosen_on = (source.manifest or {}).get("threshold_chosen_on")
    else:
        threshold, chosen_on = validation_threshold(source, frame, tta=tta, **run)
        threshold_source = "chosen at evaluation on validation studies"
    predicted = predict_rows(source, rows, tta=tta, desc=f"predict {split}", **run)
    out_dir = Path(out_dir)
    # metrics.json is removed first and written last: a folder that holds one always holds a
    # complete evaluation, whatever interrupted the previous one.
    (out_dir / "metrics.json").unlink(missing_ok=True)
    predictions = predicted.frame.assign(prob=predicted.mean)[PREDICTION_COLUMNS]
    if not source.is_ensemble and not np.isnan(predicted.view_weights).all():
        # a study-level model: which views it trusted (see mura_lib.models.study)
        predictions = predictions.assign(view_weight=predicted.view_weights[:, 0])
    pred_path = write_predictions(predictions, out_dir / "predictions.csv")
    report = evaluation_report(pred_path, threshold=threshold, n_boot=n_boot, seed=seed)
    if source.is_ensemble:
        members = write_member_predictions(predicted, out_dir / "member_predictions.csv")
        report["members"] = member_summaries(source, members)
    report["checkpoint"] = published_path(checkpoint)
    report["model"] = source.describe()
    report["tta"] = tta
    report["threshold_source"] = threshold_source
    report["threshold_chosen_on"] = chosen_on
    report["split"] = split
    report["labels"] = index.labels
    note = labels_note(source, index.labels)
    if note is not None:  # only then: the common case keeps metrics.json as it was
        report["labels_note"] = note
    report["skipped_images"] = [published_path(path) for path in predicted.skipped]
    write_json(report, out_dir / "metrics.json")
    return report


def labels_note(source: ModelSource, labels: dict) -> str | None:
    """A line when the labels evaluated against are not those the model was trained, and its
    threshold chosen, with (another label folder, or the same folder with other files)."""
    from mura_lib.data.labels import TREE_LABELS

    def key(record: dict) -> tuple:
        return record["source"], tuple(sorted(record.get("sha256", {}).items()))

    trained = {key(ckpt.get("labels", TREE_LABELS)) for ckpt in source.checkpoints}
    if trained == {key(labels)}:
        return None
    names = ", ".join(sorted({name for name, _ in trained}))
    return (
        f"the model was trained, and its threshold chosen, with labels from {names}; this "
        f"evaluation uses labels from {labels['source']}"
    )


def member_column(k: int) -> str:
    return f"prob_member_{k + 1}"


def write_member_predictions(predicted: MemberPredictions, path: Path) -> pd.DataFrame:
    """The prediction columns with one float32 probability column per member, as a CSV.

    Member k's predictions frame is this one with ``prob_member_k`` renamed ``prob``.
    """
    frame = predicted.frame[[c for c in PREDICTION_COLUMNS if c != "prob"]].copy()
    for k in range(predicted.probs.shape[1]):
        frame[member_column(k)] = predicted.probs[:, k].astype(np.float32)
    write_text_atomic(path, frame.to_csv(index=False), "member predictions")
    return frame


def member_summaries(source: ModelSource, members: pd.DataFrame) -> list[dict]:
    """Each member's study-level kappa (at its own threshold) and AUROC on the split."""
    from mura_lib.evaluation.metrics import binary_metrics
    from mura_lib.evaluation.studies import study_scores

    out = []
    for k, (path, ckpt) in enumerate(zip(source.members, source.checkpoints, strict=True)):
        studies = study_scores(members.rename(columns={member_column(k): "prob"}))
        m = binary_metrics(studies["label"], studies["prob"], float(ckpt["threshold"]))
        out.append(
            {
                "column": member_column(k),
                "path": published_path(path),
                "threshold": float(ckpt["threshold"]),
                "study_kappa": m["kappa"],
                "study_auroc": m["auroc"],
            }
        )
    return out


def write_json(payload: dict, path: Path) -> Path:
    """Write JSON atomically (temporary file, then rename); NaN is refused, not written."""
    return write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n", path.name)
