"""Per-image loss weights and the weighted binary cross-entropy.

Both weighting schemes come from STUDY counts of the training subset (the label belongs to the
study, and counting images would over-weight studies with many views):

* ``"paper"`` (default): the MURA paper's per-body-part weights. For an image of part T, the
  abnormal term is weighted |N_T| / (|A_T| + |N_T|) and the normal term |A_T| / (|A_T| + |N_T|).
* ``"class"``: the original project's per-class weights, total / count of the class.
* ``"none"``: unweighted.

The loss is the mean over the batch of ``weight * BCE(logit, label)``. For ``"class"`` this
differs from PyTorch's weighted CrossEntropyLoss (which divides by the sum of weights) only by
a per-batch scale, which Adam is insensitive to.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mura_lib.data.class_weights import inverse_frequency_weights, paper_part_weights
from mura_lib.errors import ConfigError

LossWeighting = Literal["paper", "class", "none"]


def image_loss_weights(
    train_frame: pd.DataFrame, frame: pd.DataFrame, scheme: LossWeighting
) -> np.ndarray:
    """Weight of each row of ``frame`` under ``scheme``, with weights fitted on ``train_frame``."""
    labels = frame["label"].to_numpy()
    if scheme == "none":
        return np.ones(len(frame), dtype=np.float32)
    if scheme == "class":
        w = inverse_frequency_weights(train_frame, unit="study")
        return np.where(labels == 1, w[1], w[0]).astype(np.float32)
    if scheme == "paper":
        table = paper_part_weights(train_frame)
        missing = sorted(set(frame["body_part"]) - set(table.index))
        if missing:
            raise ConfigError(
                f"no training studies of {missing}: the paper's loss weights need every part "
                "that is trained on (or use loss_weighting='class')"
            )
        w_abn = frame["body_part"].map(table["w_abnormal"]).to_numpy()
        w_norm = frame["body_part"].map(table["w_normal"]).to_numpy()
        return np.where(labels == 1, w_abn, w_norm).astype(np.float32)
    raise ConfigError(f"unknown loss weighting {scheme!r}: use paper, class or none")


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``weights * BCE``, computed in float32 whatever the autocast dtype."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return (weights.float() * losses).mean()
