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

import contextlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from mura_lib.config import GRAY_MEAN, GRAY_STD, from_root
from mura_lib.data import scan_mura
from mura_lib.data.augment import Augmenter
from mura_lib.data.batches import BatchLoader
from mura_lib.data.cache import build_cache
from mura_lib.data.labels import TREE_LABELS
from mura_lib.data.origin import training_data
from mura_lib.data.splits import split_of_run
from mura_lib.disk import write_text_atomic
from mura_lib.errors import ConfigError
from mura_lib.evaluation.metrics import binary_metrics
from mura_lib.evaluation.predictions import write_predictions
from mura_lib.evaluation.studies import study_scores
from mura_lib.evaluation.thresholds import choose_threshold
from mura_lib.inference.engine import predict
from mura_lib.locks import exclusive_lock
from mura_lib.models.backbones import check_output, source_record
from mura_lib.models.build import (
    backbone_of,
    build_study_model,
    count_parameters,
    resolve_trainable,
)
from mura_lib.models.checkpoint import load_checkpoint, save_checkpoint
from mura_lib.numerics import cpu_numerics
from mura_lib.progress import log_line, resolve_mode
from mura_lib.provenance import code_version
from mura_lib.training.config import RESUMABLE_CHANGES, TrainConfig
from mura_lib.training.determinism import deterministic_algorithms
from mura_lib.training.distributed import (
    Distributed,
    barrier,
    gather_rows,
    init_distributed,
    mean_over_ranks,
    shutdown,
    wrap_for_ddp,
)
from mura_lib.training.live_log import EVENT_FILES, epoch_scalars
from mura_lib.training.loop import train_one_epoch
from mura_lib.training.losses import LOSSES, image_loss_weights
from mura_lib.training.schedule import EarlyStopping, lr_scheduler, metric_mode, step_schedule
from mura_lib.training.top_k import (
    MANIFEST_NAME,
    TOP_K_DIR,
    TopK,
    sidecar_name,
    write_run_ensemble,
)
from mura_lib.training.top_k import prune as prune_top_k

if TYPE_CHECKING:
    from mura_lib.training.losses import Criterion

LOCK_NAME = ".lock"  # one training run at a time in a folder (see mura_lib.locks)


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
    """Train on ``data_root`` and write best.pt, last.pt, history.csv, val_predictions.csv,
    TensorBoard event files (:mod:`~mura_lib.training.live_log`) and, with ``keep_top_k``,
    top_k/ and ensemble.json.

    Returns a summary: paths, the best epoch, its validation metrics and the threshold, the
    ensemble's manifest and epochs.
    """
    config.validate()
    out_dir = Path(out_dir)
    # Before the run's first CUDA call: cuBLAS reads its workspace setting when CUDA starts.
    with deterministic_algorithms(config.deterministic):
        ctx, device = init_distributed(config.device)  # one process unless torchrun started more
        try:
            if ctx.enabled and config.batch_size % ctx.world_size:
                raise ConfigError(
                    f"batch_size {config.batch_size} is the global batch and must be a multiple "
                    f"of the {ctx.world_size} processes (each takes an equal share)"
                )
            # Rank 0 alone writes to the folder, so it alone holds its lock.
            lock = (
                exclusive_lock(
                    out_dir / LOCK_NAME,
                    f"the training folder {out_dir}",
                    "wait for that run to finish, stop it, or train into another --out folder",
                )
                if ctx.is_main
                else contextlib.nullcontext()
            )
            # on_exit closes what _fit opens (the TensorBoard writer) on every way out, Ctrl-C too.
            with lock, contextlib.ExitStack() as on_exit:
                mode = resolve_mode(progress) if ctx.is_main else "none"
                return _fit(
                    data_root, out_dir, config, resume, overwrite, mode, ctx, device, on_exit
                )
        finally:
            shutdown(ctx)


def _fit(
    data_root: str | Path,
    out_dir: Path,
    config: TrainConfig,
    resume: bool,
    overwrite: bool,
    progress: str,
    ctx: Distributed,
    device: torch.device,
    on_exit: contextlib.ExitStack,
) -> dict:
    """fit() once the folder's lock is held; under torchrun, on every rank."""
    main = ctx.is_main

    def log(text: str) -> None:
        if main:
            log_line(progress, text)

    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    # Every rank checks the folder alike (and refuses alike); only rank 0 removes an old run.
    previous = _previous_run(last_path, config, resume, overwrite, writer=main)
    barrier(ctx)

    # The labels of every use below (split, class weights, validation); a relative folder is
    # taken from the project root, as the other paths of a params file.
    index = scan_mura(data_root, labels=from_root(config.labels) if config.labels else None)
    if index.relabelling is not None:
        log(f"labels from {index.labels['source']}: studies changed {index.labels['changed']}")
    frame = split_of_run(index.frame, asdict(config))
    cache_kwargs = dict(
        size=config.image_size,
        resize=config.resize,
        cache_dir=config.cache_dir or None,
        skip_bad=config.skip_bad_images,
        progress=progress == "bar",
    )
    # Rank 0 decodes every image once; the others wait, then open the same trusted files.
    if not main:
        barrier(ctx)
    train_cache = build_cache(frame[frame["subset"] == "train"], **cache_kwargs)
    val_cache = build_cache(frame[frame["subset"] == "val"], **cache_kwargs)
    if main:
        barrier(ctx)
    for name, cache in (("train", train_cache), ("val", val_cache)):
        if cache.report.bad or cache.report.warnings:
            log(f"{name} images: {cache.report}")

    shard = dict(rank=ctx.rank, world_size=ctx.world_size)
    channels_last = config.channels_last and device.type == "cuda"
    weights = {
        name: image_loss_weights(train_cache.frame, cache.frame, config.loss_weighting)
        for name, cache in (("train", train_cache), ("val", val_cache))
    }
    # One criterion, for the training loss and for the validation loss that ranks checkpoints.
    criterion = LOSSES[config.loss]
    # Whole studies for a study-level model (at most study_max_views views a batch and
    # process), single images otherwise (batch_size: the global batch, shared by the ranks).
    study_level = config.study_head != "none"
    cap = config.study_max_views if study_level else config.batch_size // ctx.world_size
    train_loader = BatchLoader.from_cache(
        train_cache,
        cap,
        by_study=study_level,
        device=device,
        shuffle=True,
        seed=config.seed,
        weights=weights["train"],
        **shard,
    )
    val_loader = BatchLoader.from_cache(
        val_cache, 2 * cap, by_study=study_level, device=device, shuffle=False, **shard
    )
    augmenter = Augmenter(config.augmentations(), seed=config.seed, **shard)

    seed_everything(config.seed)
    model = build_study_model(
        config.arch, config.weights, config.study_head, trainable=config.trainable
    ).to(device)
    check_output(backbone_of(model), config.arch, config.image_size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trained = wrap_for_ddp(model, ctx, device, config.sync_batchnorm, log)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    mode = metric_mode(config.select_metric)
    scheduler = lr_scheduler(optimizer, config)
    stopper = EarlyStopping(mode, config.early_stop_patience)
    top_k = TopK(config.keep_top_k, "min" if config.top_k_by == "val_loss" else mode)
    history: list[dict] = []
    start_epoch = 0
    if previous is not None:
        model.load_state_dict(previous["model"])
        optimizer.load_state_dict(previous["optimizer"])
        scheduler.load_state_dict(previous["lr_scheduler"])
        stopper.load_state_dict(previous["early_stopping"])
        top_k.load_state_dict(previous.get("top_k", {}))
        history = list(previous["history"])
        start_epoch = previous["epoch"] + 1
        log(f"resuming {last_path} after epoch {start_epoch}")

    base = {
        "model_args": {
            "arch": config.arch,
            **source_record(config.arch),  # what evaluate and predict rebuild it from
            "in_chans": 1,
            "init_weights": config.weights,
            "trainable": resolve_trainable(config.arch, config.weights, config.trainable),
            "study_head": config.study_head,
        },
        "image_size": config.image_size,
        "resize": config.resize,
        "normalization": {"mean": [GRAY_MEAN], "std": [GRAY_STD]},
        "train_args": asdict(config),
        "data_fingerprint": {"train": train_cache.fingerprint, "val": val_cache.fingerprint},
        "code_version": code_version(),
        # what a rerun must match to give the same bits (mura_lib.numerics, determinism)
        "numerics": {"cpu": cpu_numerics(), "deterministic": config.deterministic},
        # synthetic, mura-v1.1 or other: `mura predict` warns about a model of synthetic films
        "training_data": training_data(index),
        "labels": index.labels,  # {"source": "tree"} or the label folder, its files' SHA-256
    }
    n_params = count_parameters(model)
    processes = f" x {ctx.world_size} processes" if ctx.enabled else ""
    log(
        f"{config.arch} ({n_params['trainable']:,} of {n_params['total']:,} parameters train) "
        f"on {device}{processes}: {len(train_cache.frame)} train / {len(val_cache.frame)} val "
        "images"
    )
    # Only early stopping ends a run for good: a run that reached its old epoch limit goes on
    # when resumed with a larger ``epochs`` (a resumable change).
    finished = previous is not None and stopper.should_stop
    log_scalars = on_exit.enter_context(
        epoch_scalars(out_dir, start_epoch, enabled=main and not finished)
    )
    for epoch in range(start_epoch, config.epochs):
        if finished:
            break
        seed_everything(config.seed, epoch)
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        amp_kw = dict(amp=config.amp, channels_last=channels_last)
        train_loss = train_one_epoch(
            trained,
            train_loader,
            augmenter,
            optimizer,
            epoch,
            criterion=criterion,
            progress=progress,
            **amp_kw,
        )
        train_loss = mean_over_ranks(ctx, train_loss)
        # Validation: each rank its shard, the plain model (no gradient sync), then all rows
        # on every rank, so that every rank takes the same decisions below.
        probs, view_weights = _validate(model, val_loader, augmenter, ctx, progress, amp_kw)
        val = _validation_metrics(val_cache.frame, probs, weights["val"], criterion, study_level)
        seconds = time.perf_counter() - started
        value = val[config.select_metric]
        if value is None:  # e.g. AUROC undefined: count as no improvement
            value = -np.inf if mode == "max" else np.inf
        improved = stopper.update(value, epoch)
        step_schedule(scheduler, value)
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
        predictions = val_cache.frame.assign(prob=probs)
        if view_weights is not None:
            predictions = predictions.assign(view_weight=view_weights)
        rank_score = val["val_loss"] if config.top_k_by == "val_loss" else val[config.select_metric]
        enters, _ = top_k.offer(epoch, rank_score)
        if improved or enters:
            studies = study_scores(predictions)
            choice = choose_threshold(studies["label"], studies["prob"], config.threshold_rule)
            calibrated = {**state, "threshold": choice.value, "threshold_rule": choice.rule}
        if not main:
            continue  # rank 0 alone writes; the others hold the same state
        if improved:
            save_checkpoint({**calibrated, "val_predictions": "val_predictions.csv"}, best_path)
            write_predictions(predictions, out_dir / "val_predictions.csv")
        if enters:
            member = out_dir / top_k.members_file(epoch)
            write_predictions(predictions, sidecar_name(str(member)))
            save_checkpoint({**calibrated, "val_predictions": sidecar_name(member.name)}, member)
            write_run_ensemble(out_dir, top_k, config.top_k_by, config.threshold_rule)
        log_scalars(history[-1])
        save_checkpoint(
            {
                **state,
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "early_stopping": stopper.state_dict(),
                "top_k": top_k.state_dict(),
                "finished": finished,
            },
            last_path,
        )
        prune_top_k(out_dir, top_k)  # only now: last.pt no longer names what is deleted
        _write_history(history, out_dir / "history.csv")
        log(_epoch_line(history[-1], config))

    barrier(ctx)  # rank 0's last writes are done before anyone reads best.pt
    return run_summary(out_dir, pd.DataFrame(history))


def run_summary(out_dir: str | Path, history: pd.DataFrame | None = None) -> dict:
    """The summary :func:`fit` returns, read from a finished run's folder: best.pt,
    ensemble.json (with ``keep_top_k``) and history.csv unless ``history`` is given. This is
    also how a run that torchrun made in other processes is read back."""
    out_dir = Path(out_dir)
    best = load_checkpoint(out_dir / "best.pt")
    ensemble = out_dir / MANIFEST_NAME
    manifest = json.loads(ensemble.read_text()) if ensemble.is_file() else None
    if history is None:
        history = pd.read_csv(out_dir / "history.csv")
    return {
        "out_dir": str(out_dir),
        "best_checkpoint": str(out_dir / "best.pt"),
        "best_epoch": best["epoch"] + 1,
        "epochs_run": len(history),
        "metrics": best["metrics"],
        "threshold": best["threshold"],
        "threshold_rule": best["threshold_rule"],
        "numerics": best.get("numerics"),  # None in a checkpoint older than the record
        "labels": best.get("labels", TREE_LABELS),  # runs from before label folders: the tree's
        "ensemble": str(ensemble) if manifest else None,
        "ensemble_epochs": manifest["chosen_by"]["epochs"] if manifest else [],
        "history": history,
    }


def _previous_run(
    last_path: Path, config: TrainConfig, resume: bool, overwrite: bool, writer: bool = True
) -> dict | None:
    """The interrupted run to continue, None for a fresh start; refuses to clobber a run.

    ``overwrite`` starts again, the old run's files deleted by the ``writer`` only (rank 0
    under torchrun: the other ranks start afresh without touching the folder).
    """
    if overwrite and not resume and not writer:
        return None
    if not last_path.exists():
        if resume:
            raise ConfigError(f"nothing to resume: {last_path} does not exist")
        return None
    if overwrite and not resume:
        # Remove the old run now, so an interrupted first epoch cannot be "resumed" into it.
        for name in ("last.pt", "best.pt", "history.csv", "val_predictions.csv", MANIFEST_NAME):
            (last_path.parent / name).unlink(missing_ok=True)
        shutil.rmtree(last_path.parent / TOP_K_DIR, ignore_errors=True)
        for events in last_path.parent.glob(EVENT_FILES):
            events.unlink()
        return None
    if not resume:
        raise ConfigError(
            f"{last_path.parent} already holds a training run: pass --resume to continue it, "
            "--overwrite to start again, or choose another --out folder"
        )
    previous = load_checkpoint(last_path)
    # A run written before a parameter existed ran with that parameter's default.
    old = {**asdict(TrainConfig()), **previous.get("train_args", {})}
    # The cosine schedule reaches 0 at the run's first ``epochs``: more epochs would climb again.
    resumable = RESUMABLE_CHANGES - ({"epochs"} if config.lr_schedule == "cosine" else set())
    changed = sorted(k for k, v in asdict(config).items() if k not in resumable and old.get(k) != v)
    if changed:
        raise ConfigError(
            f"cannot resume {last_path}: parameters differ from the interrupted run: "
            + ", ".join(f"{k} {old.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        )
    return previous


def _validate(
    model: torch.nn.Module,
    loader: BatchLoader,
    augmenter: Augmenter,
    ctx: Distributed,
    progress: str,
    amp_kw: dict,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Every validation row's probability on every rank, and for a study-level model each
    row's view weight (None for an image-level one).

    Each rank predicts its shard with the plain model (no gradient sync) and the shards are
    gathered, so that every rank takes the same decisions.
    """
    probs, view_weights = predict(model, loader, augmenter, progress=progress, desc="val", **amp_kw)
    rows, n = loader.rows(), len(loader.images)
    probs = gather_rows(ctx, rows, probs[rows], n)
    if not loader.grouped:
        return probs, None
    return probs, gather_rows(ctx, rows, view_weights[rows], n)


def _validation_metrics(
    frame: pd.DataFrame,
    probs: np.ndarray,
    weights: np.ndarray,
    criterion: Criterion,
    study_level: bool = False,
) -> dict:
    """Validation loss (the training criterion and weighting) and study metrics at the
    paper's 0.5.

    The loss is over images, or over studies for a study-level model (its training loss).
    Validation yields probabilities, not logits (the inference code it shares with evaluation
    returns what thresholds, study scores and val_predictions.csv use), so the criterion gets
    the logits of the probabilities clipped to [1e-7, 1 - 1e-7], in float64: sigmoid(logit(p))
    is p to float64 precision, so the BCE is that of the probabilities themselves, and a
    confidently wrong image costs at most -log(1e-7) ~ 16.
    """
    keep = np.ones(len(frame), dtype=bool)
    if study_level:  # one term per study: that of its first view (all views share it)
        keep = ~frame["study_id"].duplicated().to_numpy()
    p = torch.from_numpy(np.clip(probs[keep].astype(np.float64), 1e-7, 1 - 1e-7))
    labels = torch.from_numpy(frame["label"].to_numpy()[keep])
    loss = criterion(torch.logit(p), labels, torch.from_numpy(weights[keep]))
    studies = study_scores(frame.assign(prob=probs))
    m = binary_metrics(studies["label"].to_numpy(), studies["prob"].to_numpy(), 0.5)
    return {
        "val_loss": float(loss),
        "study_kappa": m["kappa"],
        "study_auroc": m["auroc"],
        "study_f1": m["f1"],
    }


def _write_history(history: list[dict], path: Path) -> None:
    write_text_atomic(path, pd.DataFrame(history).to_csv(index=False), "the training history")


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
