"""Live logs of a training run: TensorBoard scalars in the run's folder, one step per epoch.

``tensorboard --logdir models/`` follows every run below that folder while it trains. The
scalars are history.csv's numbers (the step is its ``epoch`` column), written just before the
epoch's last.pt, so a run resumed from last.pt finds each of its finished epochs logged. The
writer of a run (and of each resumption) starts with ``purge_step`` at the first epoch it
trains: TensorBoard then drops what an interrupted epoch or an earlier attempt left at that
step or later, and no step appears twice. ``--overwrite`` deletes the old event files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

EVENT_FILES = "events.out.tfevents.*"  # SummaryWriter's file names, as a glob

# history.csv column -> TensorBoard tag (TensorBoard groups tags by what precedes the slash)
SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "study_kappa": "val/study_kappa",
    "study_auroc": "val/study_auroc",
    "study_f1": "val/study_f1",
    "lr": "schedule/lr",
    "seconds": "speed/epoch_seconds",
    "train_img_per_s": "speed/train_img_per_s",
}


def _after_the_last_session(run_dir: Path) -> None:
    """Wait, if need be, until this session's event file sorts after every earlier one.

    TensorBoard reads a folder's event files in name order, and a name starts with the second
    the file was made: a resumption made in the same second as the session before it could
    sort first, and that session's ``purge_step`` would then drop the resumption's epochs.
    """
    stamps = [p.name.split(".")[3] for p in run_dir.glob(EVENT_FILES)]
    latest = max((int(s) for s in stamps if s.isdigit()), default=None)
    if latest is not None and time.time() < latest + 1:
        time.sleep(latest + 1 - time.time())


@contextmanager
def epoch_scalars(
    run_dir: Path, first_epoch: int, enabled: bool = True
) -> Iterator[Callable[[dict], None]]:
    """A function that logs one row of the history (an undefined metric, None, is left out).

    ``first_epoch`` (0-based) is the first epoch this process trains. Not ``enabled`` (a rank
    other than 0 under torchrun), the function does nothing and TensorBoard is not imported.
    The writer is closed however the block ends.
    """
    if not enabled:
        yield lambda row: None
        return
    from torch.utils.tensorboard import SummaryWriter  # only a training run pays the import

    _after_the_last_session(run_dir)
    writer = SummaryWriter(log_dir=str(run_dir), purge_step=first_epoch + 1)

    def log(row: dict) -> None:
        for column, tag in SCALARS.items():
            if row[column] is not None:
                writer.add_scalar(tag, row[column], row["epoch"])
        writer.flush()  # on disk before last.pt counts the epoch as done

    try:
        yield log
    finally:
        writer.close()
