"""Study-level heads fine-tuned from the image-level run: what notebook 02 trains after it.

Each head (``mean``, ``max``, ``attention``) starts from the image-level run's ``best.pt``
(its backbone; the attention layers start fresh) and trains end to end on study targets for
a few epochs at a lower rate, into ``<models>/study/<head>/``. Starting from the chosen
image-level checkpoint rather than from scratch isolates what the head adds, and the extra
cost is a few epochs per head instead of a second full training.

Those few epochs are extra training, though: a head that beats the checkpoint it started
from may owe it to the epochs, not to reading the views together. So whenever heads are
trained, the image-level model is fine-tuned the same way too (same start, epochs, rate,
layers and selection; image batches instead of study batches) into
``<models>/study/image-level/``: the equal-work control that notebook 03 also compares each
head with.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from mura_lib.errors import ConfigError
from mura_lib.models.build import resolve_trainable
from mura_lib.models.study import STUDY_HEADS
from mura_lib.training.config import TrainConfig
from mura_lib.training.launch import fit_on

STUDY_DIR = "study"
CONTROL = "image-level"  # the folder (and summary key) of the equal-work control


def parse_heads(heads: str) -> list[str]:
    """``"mean,max,attention"`` -> the heads in that order; ``""`` -> none."""
    names = [h.strip() for h in heads.split(",") if h.strip()]
    unknown = [h for h in names if h not in STUDY_HEADS or h == "none"]
    if unknown:
        raise ConfigError(
            f"study_heads={heads!r}: {', '.join(unknown)} is not a study-level head; "
            f"use a comma-separated subset of {', '.join(STUDY_HEADS[1:])} (or empty for none)"
        )
    return names


def study_model_dir(models_dir: str | Path, head: str) -> Path:
    return Path(models_dir) / STUDY_DIR / head


def study_checkpoints(models_dir: str | Path) -> dict[str, Path]:
    """{head: its best.pt} for every head trained into ``models_dir``."""
    found = {head: study_model_dir(models_dir, head) / "best.pt" for head in STUDY_HEADS[1:]}
    return {head: path for head, path in found.items() if path.is_file()}


def control_checkpoint(models_dir: str | Path) -> Path | None:
    """The equal-work control's best.pt (the image-level model fine-tuned like the heads),
    or None when no heads were trained into ``models_dir``."""
    path = Path(models_dir) / STUDY_DIR / CONTROL / "best.pt"
    return path if path.is_file() else None


def study_head_config(
    config: TrainConfig, start: Path, head: str, epochs: int, lr: float
) -> TrainConfig:
    """The image-level run's config with the head, its starting checkpoint, epochs and rate.

    The same layers train as in the image-level run (its ``trainable`` resolved against its
    own weights: a path would select the fine-tuning preset instead), and no top-k ensemble
    is kept: the heads are compared one checkpoint each.
    """
    if epochs < 1 or lr <= 0:
        raise ConfigError(f"study_epochs={epochs}, study_lr={lr}: need epochs >= 1 and lr > 0")
    prefixes = resolve_trainable(config.arch, config.weights, config.trainable)
    return replace(
        config,
        study_head=head,
        weights=str(start),
        trainable="all" if prefixes is None else ",".join(prefixes),
        epochs=epochs,
        lr=lr,
        keep_top_k=0,
    )


def fit_study_heads(
    data_root: str | Path,
    models_dir: str | Path,
    config: TrainConfig,
    heads: list[str],
    *,
    epochs: int,
    lr: float,
    gpus: int = 0,
    resume: bool = False,
) -> dict[str, dict]:
    """Fine-tune the equal-work control (summary key :data:`CONTROL`), then each head, from
    ``models_dir/best.pt``; return {name: fit summary}, or {} when ``heads`` is empty.

    With ``resume`` a run whose folder holds one continues it, and one not started yet
    starts; otherwise every run starts again (its old run removed).
    """
    if not heads:
        return {}
    start = Path(models_dir) / "best.pt"
    if not start.is_file():
        raise ConfigError(f"no image-level checkpoint to start the study heads from: {start}")
    summaries = {}
    for name, head in [(CONTROL, "none"), *((h, h) for h in heads)]:
        out = study_model_dir(models_dir, name)
        run_config = study_head_config(config, start, head, epochs, lr)
        again = resume and (out / "last.pt").is_file()
        summaries[name] = fit_on(
            gpus, data_root, out, run_config, resume=again, overwrite=not again
        )
    return summaries


def study_heads_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per run (the control, then the heads): chosen epoch, validation metrics,
    threshold and training seconds."""
    rows = {
        head: {
            "best_epoch": s["best_epoch"],
            "epochs_run": s["epochs_run"],
            **{f"val_{k.removeprefix('val_')}": v for k, v in s["metrics"].items()},
            "threshold": s["threshold"],
            "train_seconds": round(float(s["history"]["seconds"].sum()), 1),
        }
        for head, s in summaries.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("head")
