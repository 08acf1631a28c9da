"""Study-level aggregation of per-image predictions.

MURA labels belong to studies, not images, and the paper scores a study by the arithmetic mean
of its views' abnormality probabilities. :func:`study_scores` does that and checks that the
views of a study agree on the label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mura_lib.evaluation.predictions import PredictionsError, check_predictions

# Columns copied to the study row when present; each must be constant within a study.
_STUDY_COLUMNS = ("body_part", "patient_id", "split", "subset")


def study_scores(predictions: pd.DataFrame, source: str = "predictions frame") -> pd.DataFrame:
    """Aggregate per-image probabilities into one score per study: the mean over its views.

    Rows are sorted by ``study_id`` (then ``view`` when present) before aggregating, so the
    result does not depend on the input's row order, and probabilities are canonical
    (float32-rounded, see :mod:`mura_lib.evaluation.predictions`), so the result is the same
    for a frame in memory and for the CSV it was written to.

    Args:
        predictions: one row per image with at least study_id, body_part, label, prob.
        source: what to call the input in error messages.

    Returns:
        One row per study, sorted by study_id, with columns study_id, body_part, then
        patient_id / split / subset when present, label, prob and n_views.

    Raises:
        PredictionsError: the frame is invalid, or the views of a study disagree on the label
            or body part (the message names the studies).
    """
    frame = check_predictions(predictions, source=source)
    order = ["study_id", "view"] if "view" in frame.columns else ["study_id"]
    frame = frame.sort_values(order, kind="mergesort").reset_index(drop=True)

    study_ids = frame["study_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, study_ids[1:] != study_ids[:-1]])
    n_views = np.diff(np.r_[starts, len(frame)])

    keep = [c for c in _STUDY_COLUMNS if c in frame.columns]
    for column in ["label", *keep]:
        codes = pd.factorize(frame[column])[0]
        varies = np.minimum.reduceat(codes, starts) != np.maximum.reduceat(codes, starts)
        if varies.any():
            bad = study_ids[starts[varies]]
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise PredictionsError(
                f"{source}: the views of study {shown} disagree on {column}; every view of a "
                "study must carry the study's value. Check how the predictions were joined "
                "to the index."
            )

    score = np.add.reduceat(frame["prob"].to_numpy(), starts) / n_views

    first = frame.iloc[starts]
    studies = pd.DataFrame({"study_id": first["study_id"].to_numpy()})
    for column in keep:
        studies[column] = first[column].to_numpy()
    studies["label"] = first["label"].to_numpy()
    studies["prob"] = score
    studies["n_views"] = n_views.astype(np.int64)
    return studies
