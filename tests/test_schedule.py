"""The learning-rate schedule and early stopping cannot defeat each other."""

from __future__ import annotations

import pytest
import torch

from mura_lib.errors import ConfigError
from mura_lib.training.config import TrainConfig
from mura_lib.training.schedule import (
    EarlyStopping,
    check_patiences,
    lr_scheduler,
    metric_mode,
    step_schedule,
)


@pytest.mark.parametrize(
    ("plateau", "early_stop"),
    [(5, 5), (2, 3), (0, 1), (3, 4)],  # (5, 5): the original project's schedule
)
def test_refuses_stopping_before_the_rate_can_drop(plateau, early_stop):
    with pytest.raises(ConfigError) as info:
        check_patiences(plateau, early_stop)
    message = str(info.value)
    assert f"early_stop_patience={early_stop} with plateau_patience={plateau}" in message
    assert "before the learning rate is ever reduced" in message
    assert "original project" in message  # names the defect
    assert f"early_stop_patience >= {plateau + 2}" in message  # and the minimum
    assert "early_stop_patience=0 to disable" in message


@pytest.mark.parametrize(("plateau", "early_stop"), [(5, 7), (2, 4), (0, 2), (2, 10), (5, 0)])
def test_accepts_enough_patience_or_no_early_stopping(plateau, early_stop):
    check_patiences(plateau, early_stop)


@pytest.mark.parametrize(("plateau", "early_stop"), [(-1, 5), (2, -1)])
def test_negative_patience(plateau, early_stop):
    with pytest.raises(ConfigError, match="patiences must be >= 0"):
        check_patiences(plateau, early_stop)


def simulate(metrics: list[float], mode: str, plateau: int, early_stop: int) -> list[float]:
    """Run the pair as fit does (scheduler threshold 0); return the rate of each epoch run."""
    check_patiences(plateau, early_stop)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=0.1, patience=plateau, threshold=0.0
    )
    stopper = EarlyStopping(mode, early_stop)
    rates = []
    for epoch, value in enumerate(metrics):
        rates.append(optimizer.param_groups[0]["lr"])
        stopper.update(value, epoch)
        scheduler.step(value)
        if stopper.should_stop:
            break
    return rates


@pytest.mark.parametrize("plateau", [0, 1, 2, 5])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_on_a_plateau_the_rate_drops_before_training_stops(plateau, mode):
    sign = 1 if mode == "max" else -1
    # improves for 3 epochs, then stays flat (ties are no improvement) for ever
    metrics = [sign * v for v in [0.5, 0.6, 0.7] + [0.7] * 30]
    rates = simulate(metrics, mode, plateau, plateau + 2)
    assert len(rates) < len(metrics)  # early stopping did end the run
    assert min(rates) < 1.0  # and at least one epoch ran at the reduced rate
    assert rates[-1] == pytest.approx(0.1)


def test_the_original_projects_schedule_would_never_have_fired():
    # what check_patiences prevents: with equal patiences the run stops at the full rate
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", 0.5, 5, 0.0)
    stopper = EarlyStopping("min", 5)
    for epoch, value in enumerate([1.0] + [1.0] * 10):
        assert optimizer.param_groups[0]["lr"] == 1.0
        stopper.update(value, epoch)
        scheduler.step(value)
        if stopper.should_stop:
            break
    assert stopper.should_stop and optimizer.param_groups[0]["lr"] == 1.0


@pytest.mark.parametrize(
    ("mode", "values", "best", "best_epoch", "bad"),
    [
        ("max", [0.5, 0.7, 0.7, 0.6], 0.7, 1, 2),
        ("min", [0.5, 0.4, 0.6, 0.3], 0.3, 3, 0),
    ],
)
def test_early_stopping_tracks_the_best(mode, values, best, best_epoch, bad):
    stopper = EarlyStopping(mode, patience=2)
    improved = [stopper.update(v, e) for e, v in enumerate(values)]
    assert improved[0] is True
    assert (stopper.best, stopper.best_epoch, stopper.bad_epochs) == (best, best_epoch, bad)
    assert stopper.should_stop == (bad >= 2)


def test_zero_patience_never_stops():
    stopper = EarlyStopping("max", patience=0)
    for epoch in range(20):
        stopper.update(0.0, epoch)
    assert stopper.bad_epochs == 19 and not stopper.should_stop


def test_early_stopping_state_round_trip():
    stopper = EarlyStopping("max", patience=3)
    for epoch, value in enumerate([0.2, 0.5, 0.4, 0.45]):
        stopper.update(value, epoch)
    state = stopper.state_dict()
    assert state == {"mode": "max", "patience": 3, "best": 0.5, "best_epoch": 1, "bad_epochs": 2}

    restored = EarlyStopping("min", patience=99)  # overwritten by the state
    restored.load_state_dict(state)
    assert restored == stopper
    # and both go on identically
    assert [restored.update(0.3, 4), stopper.update(0.3, 4)] == [False, False]
    assert restored.should_stop and stopper.should_stop


@pytest.mark.parametrize(
    ("metric", "mode"),
    [("study_kappa", "max"), ("study_auroc", "max"), ("study_f1", "max"), ("val_loss", "min")],
)
def test_metric_modes(metric, mode):
    assert metric_mode(metric) == mode


def test_unknown_selection_metric():
    with pytest.raises(ConfigError, match="unknown selection metric 'accuracy': use one of"):
        metric_mode("accuracy")


def test_cosine_ends_at_zero_and_the_plateau_schedule_reads_the_metric() -> None:
    def optimizer() -> torch.optim.Optimizer:
        return torch.optim.Adam(torch.nn.Linear(1, 1).parameters(), lr=0.1)

    cosine_opt = optimizer()
    cosine = lr_scheduler(cosine_opt, TrainConfig(lr=0.1, lr_schedule="cosine", epochs=4))
    rates = []
    for _ in range(4):
        rates.append(cosine_opt.param_groups[0]["lr"])
        cosine_opt.step()  # an epoch's steps (no gradients here: nothing moves)
        step_schedule(cosine, 123.0)  # the metric plays no part
    assert rates[0] == 0.1 and all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert cosine_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)

    plateau_opt = optimizer()
    config = TrainConfig(lr=0.1, select_metric="val_loss", plateau_patience=0)
    plateau = lr_scheduler(plateau_opt, config)
    step_schedule(plateau, 1.0)
    assert plateau_opt.param_groups[0]["lr"] == 0.1
    step_schedule(plateau, 2.0)  # a worse validation loss: the rate drops
    assert plateau_opt.param_groups[0]["lr"] == pytest.approx(0.01)
