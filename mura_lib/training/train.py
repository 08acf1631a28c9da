"""Train an abnormality classifier on MURA: the whole recipe behind `mura train`.

Protocol (fixing the defects of the project we grew from):

* Model selection uses a patient-grouped validation subset carved from the official train
  split (:func:`mura_lib.data.split_by_patient`). The official valid split is our test set
  and plays no part in training, selection or the decision threshold.
* One selection metric (default: study-level Cohen's kappa at 0.5, the paper's metric) drives
  the checkpoint choice, ReduceLROnPlateau and early stopping, whose patiences are checked so
  that the rate can drop before training may stop.
* The decision threshold is chosen on the validation studies by a stated rule and stored in
  the checkpoint.
* Reproducible and resumable: all randomness derives from (seed, epoch), a checkpoint is
  written after every epoch, and ``resume=True`` continues to the same result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mura_lib.config import GRAY_MEAN, GRAY_STD
from mura_lib.data import read_mura, split_by_patient
from mura_lib.data.augment import AugmentConfig, Augmenter
from mura_lib.data.batches import BatchLoader
from mura_lib.data.cache import build_cache
from mura_lib.errors import ConfigError
from mura_lib.evaluation.metrics import binary_metrics
from mura_lib.evaluation.predictions import write_predictions
from mura_lib.evaluation.studies import study_scores
from mura_lib.evaluation.thresholds import choose_threshold
from mura_lib.models.build import (
    build_model,
    count_parameters,
    resolve_trainable,
)
from mura_lib.models.checkpoint import code_version, load_checkpoint, save_checkpoint
from mura_lib.training.loop import predict_probs, train_one_epoch
from mura_lib.training.losses import image_loss_weights
from mura_lib.training.progress import log_line, resolve_mode
from mura_lib.training.schedule import EarlyStopping, check_patiences, metric_mode

# Settings that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {"epochs", "device", "cache_dir"}


@dataclass
class TrainConfig:
    """Every training parameter, a flat list of literals (what a params file holds)."""

    arch: str = "resnet18"  # any torchvision classification model
    weights: str = "none"  # none | imagenet | path to a checkpoint of ours
    trainable: str = "auto"  # auto (preset if pretrained) | all | comma-separated prefixes
    image_size: int = 128  # side S of the square inputs
    resize: str = "letterbox"  # letterbox (keep aspect ratio) | stretch (original project)
    epochs: int = 20  # maximum number of epochs
    batch_size: int = 32
    lr: float = 1e-4  # Adam learning rate (the paper's and the original project's)
    weight_decay: float = 0.0
    loss_weighting: str = "paper"  # paper (per body part) | class (original) | none
    select_metric: str = "study_kappa"  # study_kappa | study_auroc | study_f1 | val_loss
    plateau_factor: float = 0.1  # the paper divides the rate by 10 on a plateau
    plateau_patience: int = 2  # epochs without improvement before the rate drops
    early_stop_patience: int = 5  # 0 disables; must be >= plateau_patience + 2
    threshold_rule: str = "max_kappa"  # max_kappa | youden | fixed (0.5)
    val_fraction: float = 0.2  # share of official-train studies held out for selection
    hflip: bool = True  # augmentation: random lateral flip
    rotate_degrees: float = 30.0  # the paper: up to 30 degrees
    scale_min: float = 0.9  # random zoom range
    scale_max: float = 1.1
    translate: float = 0.05  # random shift, fraction of the side
    brightness: float = 0.2  # intensity jitter
    contrast: float = 0.2
    seed: int = 0  # one seed fixes split, initialisation, batch order and augmentation
    device: str = "auto"  # auto (cuda, mps, cpu) | cpu | cuda | cuda:1 ...
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA (ignored on CPU)
    skip_bad_images: bool = False  # leave unreadable images out (reported) instead of failing
    cache_dir: str = ""  # "" = the project's cache/ folder

    def validate(self) -> None:
        check_patiences(self.plateau_patience, self.early_stop_patience)
        metric_mode(self.select_metric)
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 16 or self.lr <= 0:
            raise ConfigError("epochs and batch_size must be >= 1, image_size >= 16, lr > 0")

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            hflip=self.hflip,
            rotate_degrees=self.rotate_degrees,
            scale=(self.scale_min, self.scale_max),
            translate=self.translate,
            brightness=self.brightness,
            contrast=self.contrast,
            mean=GRAY_MEAN,
            std=GRAY_STD,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        """The config from a mapping that may hold other names too (a notebook's globals,
        a profile's parameters): every field present is taken, the others keep defaults."""
        return cls(**{f.name: params[f.name] for f in dataclasses.fields(cls) if f.name in params})


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, epoch: int = -1) -> None:
    """Seed torch's global generator (init, dropout) from (seed, epoch)."""
    state = np.random.SeedSequence([seed, epoch + 1]).generate_state(1, np.uint32)
    torch.manual_seed(int(state[0]))


def fit(
    data_root: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: str = "auto",
) -> dict:
    """Train on ``data_root`` and write best.pt, last.pt, history.csv, val_predictions.csv.

    Returns a summary: paths, the best epoch, its validation metrics and the threshold.
    """
    config.validate()
    out_dir = Path(out_dir)
    progress = resolve_mode(progress)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    previous = _previous_run(last_path, config, resume, overwrite)

    frame = split_by_patient(read_mura(data_root), config.val_fraction, config.seed)
    cache_kwargs = dict(
        size=config.image_size,
        resize=config.resize,
        cache_dir=config.cache_dir or None,
        skip_bad=config.skip_bad_images,
        progress=progress == "bar",
    )
    train_cache = build_cache(frame[frame["subset"] == "train"], **cache_kwargs)
    val_cache = build_cache(frame[frame["subset"] == "val"], **cache_kwargs)
    for name, cache in (("train", train_cache), ("val", val_cache)):
        if cache.report.bad or cache.report.warnings:
            log_line(progress, f"{name} images: {cache.report}")

    device = resolve_device(config.device)
    channels_last = config.channels_last and device.type == "cuda"
    weights = {
        name: image_loss_weights(train_cache.frame, cache.frame, config.loss_weighting)
        for name, cache in (("train", train_cache), ("val", val_cache))
    }
    train_loader = BatchLoader.from_cache(
        train_cache,
        config.batch_size,
        device=device,
        shuffle=True,
        seed=config.seed,
        extra={"weight": weights["train"]},
    )
    val_loader = BatchLoader.from_cache(
        val_cache, 2 * config.batch_size, device=device, shuffle=False
    )
    augmenter = Augmenter(config.augment_config(), seed=config.seed)

    seed_everything(config.seed)
    model = build_model(config.arch, config.weights, trainable=config.trainable).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    mode = metric_mode(config.select_metric)
    # threshold=0: "improved" means strictly better, as for early stopping, so the two agree.
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode=mode,
        factor=config.plateau_factor,
        patience=config.plateau_patience,
        threshold=0.0,
    )
    stopper = EarlyStopping(mode, config.early_stop_patience)
    history: list[dict] = []
    start_epoch = 0
    if previous is not None:
        model.load_state_dict(previous["model"])
        optimizer.load_state_dict(previous["optimizer"])
        scheduler.load_state_dict(previous["lr_scheduler"])
        stopper.load_state_dict(previous["early_stopping"])
        history = list(previous["history"])
        start_epoch = previous["epoch"] + 1
        log_line(progress, f"resuming {last_path} after epoch {start_epoch}")

    base = {
        "model_args": {
            "arch": config.arch,
            "in_chans": 1,
            "init_weights": config.weights,
            "trainable": resolve_trainable(config.arch, config.weights, config.trainable),
        },
        "image_size": config.image_size,
        "resize": config.resize,
        "normalization": {"mean": [GRAY_MEAN], "std": [GRAY_STD]},
        "train_args": asdict(config),
        "data_fingerprint": {"train": train_cache.fingerprint, "val": val_cache.fingerprint},
        "code_version": code_version(),
    }
    n_params = count_parameters(model)
    log_line(
        progress,
        f"{config.arch} ({n_params['trainable']:,} of {n_params['total']:,} parameters train) "
        f"on {device}: {len(train_cache.frame)} train / {len(val_cache.frame)} val images",
    )
    finished = previous is not None and previous.get("finished", False)
    for epoch in range(start_epoch, config.epochs):
        if finished:
            break
        seed_everything(config.seed, epoch)
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        amp_kw = dict(amp=config.amp, channels_last=channels_last)
        train_loss = train_one_epoch(
            model, train_loader, augmenter, optimizer, epoch, progress=progress, **amp_kw
        )
        probs = predict_probs(model, val_loader, augmenter, progress=progress, desc="val", **amp_kw)
        val = _validation_metrics(val_cache.frame, probs, weights["val"])
        seconds = time.perf_counter() - started
        value = val[config.select_metric]
        if value is None:  # e.g. AUROC undefined: count as no improvement
            value = -np.inf if mode == "max" else np.inf
        improved = stopper.update(value, epoch)
        scheduler.step(value)
        finished = stopper.should_stop or epoch + 1 == config.epochs
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                **val,
                "lr": lr,
                "seconds": seconds,
                "train_img_per_s": len(train_cache.frame) / seconds,
                "best": improved,
            }
        )
        state = {
            **base,
            "model": model.state_dict(),
            "epoch": epoch,
            "history": history,
            "metrics": val,
        }
        if improved:
            predictions = val_cache.frame.assign(prob=probs)
            studies = study_scores(predictions)
            choice = choose_threshold(studies["label"], studies["prob"], config.threshold_rule)
            save_checkpoint(
                {**state, "threshold": choice.value, "threshold_rule": choice.rule}, best_path
            )
            write_predictions(predictions, out_dir / "val_predictions.csv")
        save_checkpoint(
            {
                **state,
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "early_stopping": stopper.state_dict(),
                "finished": finished,
            },
            last_path,
        )
        _write_history(history, out_dir / "history.csv")
        log_line(progress, _epoch_line(history[-1], config))

    best = load_checkpoint(best_path)
    return {
        "out_dir": str(out_dir),
        "best_checkpoint": str(best_path),
        "best_epoch": best["epoch"] + 1,
        "epochs_run": len(history),
        "metrics": best["metrics"],
        "threshold": best["threshold"],
        "threshold_rule": best["threshold_rule"],
        "history": pd.DataFrame(history),
    }


def _previous_run(
    last_path: Path, config: TrainConfig, resume: bool, overwrite: bool
) -> dict | None:
    """The interrupted run to continue, None for a fresh start; refuses to clobber a run."""
    if not last_path.exists():
        if resume:
            raise ConfigError(f"nothing to resume: {last_path} does not exist")
        return None
    if overwrite and not resume:
        return None
    if not resume:
        raise ConfigError(
            f"{last_path.parent} already holds a training run: pass --resume to continue it, "
            "--overwrite to start again, or choose another --out folder"
        )
    previous = load_checkpoint(last_path)
    old = previous.get("train_args", {})
    changed = sorted(
        k for k, v in asdict(config).items() if k not in _RESUMABLE_CHANGES and old.get(k) != v
    )
    if changed:
        raise ConfigError(
            f"cannot resume {last_path}: parameters differ from the interrupted run: "
            + ", ".join(f"{k} {old.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        )
    return previous


def _validation_metrics(frame: pd.DataFrame, probs: np.ndarray, weights: np.ndarray) -> dict:
    """Validation loss (same weighting as training) and study metrics at the paper's 0.5."""
    y = frame["label"].to_numpy()
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    loss = float(np.mean(weights * -(y * np.log(p) + (1 - y) * np.log(1 - p))))
    studies = study_scores(frame.assign(prob=probs))
    m = binary_metrics(studies["label"].to_numpy(), studies["prob"].to_numpy(), 0.5)
    return {
        "val_loss": loss,
        "study_kappa": m["kappa"],
        "study_auroc": m["auroc"],
        "study_f1": m["f1"],
    }


def _write_history(history: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pd.DataFrame(history).to_csv(tmp, index=False)
    tmp.replace(path)


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"


def _epoch_line(row: dict, config: TrainConfig) -> str:
    return (
        f"epoch {row['epoch']:>3}/{config.epochs}  train_loss {row['train_loss']:.4f}  "
        f"val_loss {row['val_loss']:.4f}  kappa {_fmt(row['study_kappa'])}  "
        f"auroc {_fmt(row['study_auroc'])}  lr {row['lr']:.1e}  "
        f"{row['seconds']:.0f}s ({row['train_img_per_s']:.0f} img/s)"
        + ("  *best" if row["best"] else "")
    )
