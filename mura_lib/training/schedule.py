"""Learning-rate schedule and early stopping that cannot defeat each other.

The project we grew from used ReduceLROnPlateau(patience 5) and early stopping (patience 5) on
the same signal, so training always stopped before the rate could drop. Here both watch the
selection metric and :func:`check_patiences` refuses any combination in which stopping can come
before the first reduction has had an epoch to act.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from mura_lib.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from mura_lib.training.config import TrainConfig

# Metrics the selection can use, and whether larger is better.
SELECTION_METRICS = {
    "study_kappa": "max",
    "study_auroc": "max",
    "study_f1": "max",
    "val_loss": "min",
}


def metric_mode(metric: str) -> str:
    """``"max"`` or ``"min"`` for a selection metric name."""
    if metric not in SELECTION_METRICS:
        raise ConfigError(
            f"unknown selection metric {metric!r}: use one of {list(SELECTION_METRICS)}"
        )
    return SELECTION_METRICS[metric]


def check_patiences(plateau_patience: int, early_stop_patience: int) -> None:
    """Refuse a schedule whose learning-rate reduction can never fire before early stopping.

    ReduceLROnPlateau lowers the rate after ``plateau_patience + 1`` epochs without improvement;
    early stopping ends training after ``early_stop_patience`` such epochs. For at least one
    epoch to run at the reduced rate before stopping is possible, early stopping needs a
    patience of at least ``plateau_patience + 2``. ``early_stop_patience = 0`` disables it.
    """
    if plateau_patience < 0 or early_stop_patience < 0:
        raise ConfigError("patiences must be >= 0")
    if early_stop_patience and early_stop_patience < plateau_patience + 2:
        raise ConfigError(
            f"early_stop_patience={early_stop_patience} with plateau_patience={plateau_patience}: "
            "training would stop before the learning rate is ever reduced (the defect of the "
            f"original project). Use early_stop_patience >= {plateau_patience + 2}, or "
            "early_stop_patience=0 to disable early stopping."
        )


@dataclass
class EarlyStopping:
    """Tracks the best value of the selection metric; ``should_stop`` after ``patience`` misses."""

    mode: str
    patience: int
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value``; return True when it is a new best."""
        improved = self.best is None or (
            value > self.best if self.mode == "max" else value < self.best
        )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def lr_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """The run's learning-rate schedule, stepped once an epoch (:func:`step_schedule`).

    ``plateau`` is the paper's: the rate drops by ``plateau_factor`` when the selection metric
    has not improved for ``plateau_patience`` epochs. ``cosine`` lowers it smoothly to 0 at
    ``epochs`` (fixed when the run starts): the last epochs take small steps, so the model a
    run ends with depends less on the noise of the last few batches and validations.
    """
    import torch

    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    # threshold=0: "improved" means strictly better, as for early stopping, so the two agree.
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode=metric_mode(config.select_metric),
        factor=config.plateau_factor,
        patience=config.plateau_patience,
        threshold=0.0,
    )


def step_schedule(scheduler, value: float) -> None:
    """End an epoch whose selection metric was ``value`` (only the plateau schedule reads it)."""
    import torch

    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(value)
    else:
        scheduler.step()
