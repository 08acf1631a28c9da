"""The predictions frame: validation, canonical probabilities, CSV reading and writing.

A predictions frame has one row per image: at least ``study_id``, ``body_part`` and ``label``
(as in the image index of :mod:`mura_lib.data.mura`) and ``prob``, the model's probability that
the image is abnormal; other columns of the index ride along. Every evaluation function first
passes it through :func:`check_predictions`, which returns a canonical copy.

Why probabilities are canonicalised to float32: the evaluation must give the same numbers
whether it runs on the frame in memory or on ``predictions.csv`` read back from disk. A float
written as text and parsed again is only guaranteed to be the same float when the text has
enough digits and the parser rounds correctly. Rounding every probability to float32 (the
precision the model computes in, so nothing is lost) and working on those values makes the
round trip exact for any writer that keeps at least 9 significant digits: pandas' default
``to_csv`` (shortest repr of float64 or float32) and :func:`write_predictions` both do;
``float_format="%.8g"`` does not.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mura_lib.disk import write_text_atomic
from mura_lib.errors import MuraError

REQUIRED_COLUMNS = ("study_id", "body_part", "label", "prob")


class PredictionsError(MuraError):
    """A predictions frame or file cannot be evaluated (missing columns, bad values, labels)."""


def canonical_prob(values: np.ndarray | pd.Series) -> np.ndarray:
    """Return probabilities rounded to float32 and held as float64 (see the module docstring)."""
    return np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)


def check_predictions(predictions: pd.DataFrame, source: str = "predictions frame") -> pd.DataFrame:
    """Validate a predictions frame and return a canonical copy.

    The copy has ``label`` as int (0/1), ``study_id`` and ``body_part`` as str and ``prob`` as
    float32-rounded float64; other columns are kept as they are.

    Args:
        predictions: one row per image.
        source: what to call the input in error messages (a file path when read from disk).

    Raises:
        PredictionsError: a required column is missing, the frame is empty, a label is not 0/1
            or a probability is missing or outside [0, 1]. The message names ``source``.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise PredictionsError(
            f"{source}: missing column(s) {', '.join(missing)}; a predictions file needs "
            f"{', '.join(REQUIRED_COLUMNS)} (one row per image). Re-run the prediction step."
        )
    if len(predictions) == 0:
        raise PredictionsError(f"{source}: no rows to evaluate. Re-run the prediction step.")
    frame = predictions.copy()

    label = pd.to_numeric(frame["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PredictionsError(
            f"{source}: label must be 0 (normal) or 1 (abnormal); row {row} "
            f"(study {frame['study_id'].iloc[row]}) has {frame['label'].iloc[row]!r}."
        )
    frame["label"] = label.astype(np.int64)

    prob = pd.to_numeric(frame["prob"], errors="coerce").to_numpy(dtype=np.float64)
    bad_prob = ~((prob >= 0.0) & (prob <= 1.0))  # also catches NaN
    if bad_prob.any():
        row = int(np.flatnonzero(bad_prob)[0])
        raise PredictionsError(
            f"{source}: prob must be a probability in [0, 1]; row {row} "
            f"(study {frame['study_id'].iloc[row]}) has {frame['prob'].iloc[row]!r}. "
            "Did the model write logits instead of sigmoid outputs?"
        )
    frame["prob"] = canonical_prob(prob)
    frame["study_id"] = frame["study_id"].astype(str)
    frame["body_part"] = frame["body_part"].astype(str)
    return frame


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``predictions.csv`` and return it checked and canonical.

    Raises:
        PredictionsError: the file is missing, unreadable or fails :func:`check_predictions`;
            the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: no such predictions file. Run the prediction step first.")
    try:
        # pandas' default parser is precise enough: canonical_prob absorbs any last-bit error.
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PredictionsError(f"{path}: not a readable predictions CSV ({err}).") from err
    return check_predictions(frame, source=str(path))


def write_predictions(predictions: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a predictions frame as CSV, probabilities as float32 shortest repr.

    Reading the file back with :func:`read_predictions` gives the same canonical frame, so a
    report computed before writing equals one computed from the file. Creates the folder;
    written atomically (a failed write leaves the previous file).
    """
    frame = predictions.copy()
    frame["prob"] = np.asarray(frame["prob"], dtype=np.float64).astype(np.float32)
    return write_text_atomic(path, frame.to_csv(index=False), "predictions")
