"""Per-image loss weights and the training criteria (weighted BCE, focal loss), by name.

Both weighting schemes come from STUDY counts of the training subset (the label belongs to the
study, and counting images would over-weight studies with many views):

* ``"paper"`` (default): the MURA paper's per-body-part weights. For an image of part T, the
  abnormal term is weighted |N_T| / (|A_T| + |N_T|) and the normal term |A_T| / (|A_T| + |N_T|).
* ``"class"``: the original project's per-class weights, total / count of the class.
* ``"none"``: unweighted.

The criterion is named by TrainConfig's ``loss``, one of :data:`LOSSES`: a function of
(logits, labels, per-row weights) that returns the mean loss. It is built once per run and
serves both the training loop and the validation loss that selects checkpoints, so the two
always agree. Criteria compute in the dtype of the logits they are given: the loop gives
float32 whatever the autocast dtype, validation float64.

* ``"bce"`` (default): the mean over the batch of ``weight * BCE(logit, label)``. For
  ``"class"`` weights this differs from PyTorch's weighted CrossEntropyLoss (which divides by
  the sum of weights) only by a per-batch scale, which Adam is insensitive to.
* ``"focal"``: the focal loss of Lin et al. 2017 (gamma 2), with the same per-row weights.

torch is imported inside each criterion rather than at the top: TrainConfig checks ``loss``
against the names of :data:`LOSSES`, and the config must not load torch (the command line
builds and checks it first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from mura_lib.data.class_weights import inverse_frequency_weights, paper_part_weights
from mura_lib.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor

    # (logits, labels, per-row weights) -> the mean loss, a scalar tensor
    Criterion = Callable[[Tensor, Tensor, Tensor], Tensor]

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


def weighted_bce(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Mean of ``weights * BCE``; with loss_weighting=paper, the MURA paper's loss."""
    from torch.nn.functional import binary_cross_entropy_with_logits

    terms = binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return (weights.to(logits.dtype) * terms).mean()


def focal(logits: Tensor, labels: Tensor, weights: Tensor, gamma: float = 2.0) -> Tensor:
    """Mean of ``weights * (1 - p_t) ** gamma * BCE``, p_t the probability of the true label.

    Lin et al. 2017: images the model already gets right count less, the hard ones more;
    gamma=0 gives :func:`weighted_bce`. The per-row weights take the place of Lin et al.'s
    alpha (a per-class weight).
    """
    from torch.nn.functional import binary_cross_entropy_with_logits

    terms = binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    p_true = (-terms).exp()  # BCE = -log p_t
    return (weights.to(logits.dtype) * (1 - p_true) ** gamma * terms).mean()


# The training losses by name (TrainConfig's ``loss``, `mura train --loss`): adding one here
# is all it takes. A variant is a partial, e.g. "focal1": partial(focal, gamma=1.0).
LOSSES: dict[str, Criterion] = {
    "bce": weighted_bce,
    "focal": focal,
}
