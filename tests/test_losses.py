"""Loss weights (paper, class, none) from study counts, and the named criteria (BCE, focal)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mura_lib.errors import ConfigError
from mura_lib.training.losses import LOSSES, focal, image_loss_weights, weighted_bce


def frame_of(rows: list[tuple[str, str, int, int]]) -> pd.DataFrame:
    """(study_id, body_part, label, n_views) -> one row per image."""
    images = [
        {"study_id": sid, "body_part": part, "label": label, "view": v}
        for sid, part, label, n_views in rows
        for v in range(1, n_views + 1)
    ]
    return pd.DataFrame(images)


# ELBOW: 3 normal studies, 1 abnormal (with 4 views: image counts must not matter).
# HAND: 1 normal, 2 abnormal. Overall: 4 normal and 3 abnormal studies.
TRAIN = frame_of(
    [
        ("e1", "ELBOW", 0, 1),
        ("e2", "ELBOW", 0, 2),
        ("e3", "ELBOW", 0, 1),
        ("e4", "ELBOW", 1, 4),
        ("h1", "HAND", 0, 1),
        ("h2", "HAND", 1, 3),
        ("h3", "HAND", 1, 1),
    ]
)
# rows to weigh (e.g. the validation subset): one of each part and label
ROWS = frame_of(
    [("v1", "ELBOW", 1, 1), ("v2", "ELBOW", 0, 1), ("v3", "HAND", 1, 1), ("v4", "HAND", 0, 1)]
)


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        # paper: abnormal term |N_T| / (|A_T| + |N_T|), normal term |A_T| / (|A_T| + |N_T|)
        ("paper", [3 / 4, 1 / 4, 1 / 3, 2 / 3]),
        # original project: total / count of the class, counted in studies
        ("class", [7 / 3, 7 / 4, 7 / 3, 7 / 4]),
        ("none", [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_weights_against_hand_computed_values(scheme, expected):
    weights = image_loss_weights(TRAIN, ROWS, scheme)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_weights_follow_the_training_rows_not_the_weighed_ones():
    # the weighed rows are counted for nothing: the same row gets the same weight anywhere
    one = image_loss_weights(TRAIN, ROWS.iloc[:1], "paper")
    np.testing.assert_allclose(one, [3 / 4], rtol=1e-6)


def test_unknown_scheme():
    with pytest.raises(ConfigError) as info:
        image_loss_weights(TRAIN, ROWS, "focal")
    assert str(info.value) == "unknown loss weighting 'focal': use paper, class or none"


def test_paper_weights_need_every_part_in_training():
    rows = frame_of([("w1", "WRIST", 1, 1)])
    with pytest.raises(ConfigError, match=r"no training studies of \['WRIST'\].*'class'"):
        image_loss_weights(TRAIN, rows, "paper")


def test_weighted_bce_against_the_formula():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    labels = torch.tensor([1, 0, 0, 1])
    weights = torch.tensor([0.75, 0.25, 2.0, 1.0])

    def sigmoid(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    terms = [
        -w * (y * math.log(sigmoid(z)) + (1 - y) * math.log(1 - sigmoid(z)))
        for z, y, w in zip(logits.tolist(), labels.tolist(), weights.tolist(), strict=True)
    ]
    loss = weighted_bce(logits, labels, weights)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_criteria_compute_in_the_dtype_of_the_logits(name, dtype):
    # the loop hands them float32 logits, validation float64 (labels int, weights float32)
    logits = torch.tensor([2.0, -1.0, 0.3], dtype=dtype)
    loss = LOSSES[name](logits, torch.tensor([1, 0, 0]), torch.ones(3))
    assert loss.dtype == dtype and loss.dim() == 0


def test_weighted_bce_gradient_flows_to_the_logits():
    logits = torch.zeros(3, requires_grad=True)
    weighted_bce(logits, torch.tensor([1, 0, 1]), torch.tensor([1.0, 2.0, 0.0])).backward()
    # d/dz of w * BCE at z=0 is w * (sigmoid(0) - y) / n
    torch.testing.assert_close(logits.grad, torch.tensor([-0.5, 1.0, 0.0]) / 3)


def test_focal_against_the_formula():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 1])
    weights = torch.tensor([0.75, 0.25, 2.0, 1.0])

    def term(z: float, y: int, w: float) -> float:
        p_true = 1 / (1 + math.exp(-z)) if y else 1 / (1 + math.exp(z))
        return -w * (1 - p_true) ** 2 * math.log(p_true)  # Lin et al. 2017, gamma 2

    rows = zip(logits.tolist(), labels.tolist(), weights.tolist(), strict=True)
    terms = [term(*row) for row in rows]
    loss = focal(logits, labels, weights)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_focal_with_gamma_zero_is_the_weighted_bce():
    logits, labels, weights = (
        torch.linspace(-3, 3, 8),
        torch.tensor([0, 1] * 4),
        torch.linspace(0.5, 2, 8),
    )
    torch.testing.assert_close(
        focal(logits, labels, weights, 0.0), weighted_bce(logits, labels, weights)
    )


def test_focal_counts_an_easy_image_less_than_the_bce_does():
    easy, hard = torch.tensor([4.0]), torch.tensor([-1.0])  # both abnormal
    label, weight = torch.tensor([1]), torch.ones(1)
    ratio_easy = focal(easy, label, weight) / weighted_bce(easy, label, weight)
    ratio_hard = focal(hard, label, weight) / weighted_bce(hard, label, weight)
    assert ratio_easy < 0.001 and ratio_hard > 0.5


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_criterion_gives_the_logits_a_gradient(name):
    logits = torch.tensor([1.0, -0.5, 0.2], requires_grad=True)
    LOSSES[name](logits, torch.tensor([0, 1, 1]), torch.tensor([1.0, 2.0, 0.5])).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad != 0).all()
