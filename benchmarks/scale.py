"""How the cost of each stage grows with the number of MURA-sized films.

    python benchmarks/scale.py --sizes 5000,10000 --json
    python benchmarks/scale.py --sizes 1000,2000,4000,8000 --json

For each size N a tree of N synthetic films of MURA's size (long side 512 px, MURA's spread of
aspect ratios, about 20 % RGB; ``mura_lib.synthetic.write_benchmark_images``) is generated once
on all cores under benchmarks/data/ (git-ignored) and reused. Then each stage runs in a fresh
process, timed, with its peak resident memory (``wait4``'s ``ru_maxrss``):

* ``generate``: writing the tree (first run only; later runs report the stored time);
* ``read_mura``: indexing the tree (walk; the benchmark trees are train-only);
* ``cache_256``, ``cache_320``: decoding and letterboxing every film once (all cores);
* ``train_resnet18_256``, ``train_densenet169_320``: ``--steps`` training steps of ``fit``'s
  loop (BatchLoader over the memory-mapped cache, Augmenter, Adam, weighted BCE) after one
  warm-up step; ``img_per_s`` and the estimate of an epoch of MURA's 36,808 images;
* ``evaluate``: a ResNet18 at 256 px over every film plus the study-level report with
  ``--n-boot`` bootstrap resamples (the films' studies as a stand-in for the valid split).

The last line of the output is one JSON object::

    {"stages": {STAGE: {N: {"seconds": ..., "peak_rss_mb": ..., ...}}}, "machine": {...}}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MURA_TRAIN_IMAGES = 36_808
STAGES = (
    "read_mura",
    "cache_256",
    "cache_320",
    "train_resnet18_256",
    "train_densenet169_320",
    "evaluate",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


DATA_DIR = ROOT / "benchmarks" / "data"  # where benchmarks/loader.py keeps its trees too


def tree(n: int) -> tuple[Path, float]:
    """The tree of n films and the seconds its generation took; generated once, in a child
    process, so that this (measuring) process stays small: a child's peak RSS counts the
    memory of the process it was forked from."""
    folder = DATA_DIR / f"synthetic-{n}-seed0"
    if not (folder / "COMPLETE").exists():
        log(f"generating {n} MURA-sized films into {folder} (once, all cores)")
        code = "import sys; sys.path.insert(0, 'benchmarks'); import loader; "
        code += f"loader.benchmark_tree({n}, seed=0)"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return folder / "MURA-v1.1", float((folder / "COMPLETE").read_text().split()[0])


TABLE1_DIR = DATA_DIR / "table1-full-seed0"


def table1_tree() -> tuple[Path, float]:
    """MURA's Table 1 (40,005 films, 14,656 studies) in MURA-sized films, and the seconds its
    generation took: made once on all cores (``--profile table1 --full-size``) and reused."""
    if not (TABLE1_DIR / "COMPLETE").exists():
        log(f"generating MURA's Table 1 in MURA-sized films into {TABLE1_DIR} (once, all cores)")
        started = time.perf_counter()
        argv = [sys.executable, "-m", "mura_lib.synthetic", "--profile", "table1"]
        argv += ["--full-size", "--n-jobs", "-1", "--overwrite", "--out", str(TABLE1_DIR)]
        subprocess.run(argv, cwd=ROOT, check=True)  # atomic: no half-written tree is reused
        (TABLE1_DIR / "COMPLETE").write_text(f"{time.perf_counter() - started:.1f} s\n")
    return TABLE1_DIR / "MURA-v1.1", float((TABLE1_DIR / "COMPLETE").read_text().split()[0])


def frame_of(root: Path):
    from mura_lib.data.mura import scan_mura

    frame = scan_mura(root, source="walk").frame
    return frame[frame["split"] == "train"].reset_index(drop=True)


def cache_of(root: Path, size: int, cache_dir: Path):
    from mura_lib.data.cache import build_cache

    return build_cache(frame_of(root), size=size, cache_dir=cache_dir, progress=False)


def stage_train(root: Path, arch: str, size: int, cache_dir: Path, steps: int) -> dict:
    import numpy as np
    import torch

    from mura_lib.data.augment import AugmentConfig, Augmenter
    from mura_lib.data.batches import BatchLoader
    from mura_lib.models.build import build_model
    from mura_lib.training.loop import train_one_epoch

    cache = cache_of(root, size, cache_dir)  # built by the cache stage: opened, not decoded
    batch = 8
    n_rows = batch * (steps + 1)
    images = cache.images[:n_rows]  # a slice of the memory map: no copy
    labels = cache.frame["label"].to_numpy()[:n_rows].astype(np.float32)
    weight = np.ones(n_rows)

    def loader(rows: slice) -> BatchLoader:
        extra = {"weight": weight[rows]}
        return BatchLoader(images[rows], labels[rows], batch, extra=extra, drop_last=True)

    model = build_model(arch, "none", trainable="all")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    augmenter = Augmenter(AugmentConfig(rotate_degrees=30.0), seed=0)
    train_one_epoch(model, loader(slice(0, batch)), augmenter, optimizer, 0)  # warm-up
    started = time.perf_counter()
    train_one_epoch(model, loader(slice(batch, n_rows)), augmenter, optimizer, 1)
    rate = steps * batch / (time.perf_counter() - started)
    return {
        "steps": steps,
        "batch": batch,
        "img_per_s": round(rate, 2),
        "epoch_estimate_s": round(MURA_TRAIN_IMAGES / rate),
    }


def stage_evaluate(root: Path, cache_dir: Path, n_boot: int) -> dict:
    import torch

    from mura_lib.config import GRAY_MEAN, GRAY_STD
    from mura_lib.evaluation.report import evaluation_report
    from mura_lib.inference.ensemble import load_source
    from mura_lib.inference.members import predict_rows
    from mura_lib.models.build import build_model
    from mura_lib.models.checkpoint import save_checkpoint

    torch.manual_seed(0)  # an untrained ResNet18: evaluation costs the same whatever it learnt
    checkpoint = save_checkpoint(
        {
            "model": build_model("resnet18", "none", trainable="all").state_dict(),
            "model_args": {"arch": "resnet18", "in_chans": 1},
            "image_size": 256,
            "resize": "letterbox",
            "normalization": {"mean": [GRAY_MEAN], "std": [GRAY_STD]},
            "threshold": 0.5,
            "threshold_rule": "fixed",
        },
        cache_dir / "resnet18-untrained.pt",
    )
    rows = frame_of(root)
    started = time.perf_counter()
    predicted = predict_rows(
        load_source(checkpoint), rows, device="cpu", cache_dir=str(cache_dir), progress="none"
    )
    predict_s = time.perf_counter() - started
    report = evaluation_report(predicted.frame.assign(prob=predicted.mean), 0.5, n_boot=n_boot)
    return {
        "predict_s": round(predict_s, 2),
        "report_s": round(time.perf_counter() - started - predict_s, 2),
        "n_boot": n_boot,
        "n_studies": report["n_studies"],
    }


def run_stage(stage: str, n: int, args: argparse.Namespace) -> dict:
    """One stage in this process (the child side of :func:`measure`), timed from its start."""
    started = time.perf_counter()
    result = _stage(stage, n, Path(args.root), args)
    return {**result, "seconds": round(time.perf_counter() - started, 2)}


def _stage(stage: str, n: int, root: Path, args: argparse.Namespace) -> dict:
    cache_dir = Path(args.work) / f"cache-{n}"
    if stage == "read_mura":
        return {"images": len(frame_of(root))}
    if stage.startswith("cache_"):
        cache = cache_of(root, int(stage.split("_")[1]), cache_dir)
        return {"rebuilt": cache.report.rebuilt, "bytes": int(cache.images.nbytes)}
    if stage.startswith("train_"):
        _, arch, size = stage.split("_")
        return stage_train(root, arch, int(size), cache_dir, args.steps)
    if stage == "evaluate":
        return stage_evaluate(root, cache_dir, args.n_boot)
    raise SystemExit(f"unknown stage {stage}")


def measure(stage: str, n: int, root: Path, args: argparse.Namespace) -> dict:
    """Run a stage in a fresh process: its time (imports excluded: ``seconds``; the whole
    process: ``process_s``), its peak RSS, and what it reports."""
    argv = [sys.executable, __file__, "--stage", stage, "--n", str(n), "--work", args.work]
    argv += ["--root", str(root), "--steps", str(args.steps), "--n-boot", str(args.n_boot)]
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"stage {stage} at N={n} failed (status {status})")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(
        process_s=round(seconds, 2),
        peak_rss_mb=round(usage.ru_maxrss / 1024),  # kilobytes on Linux
        seconds_per_1000_images=round(1000 * result["seconds"] / n, 3),
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000", help="comma-separated N")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--steps", type=int, default=4, help="timed training steps (batch 8)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / "data" / "scale"))
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # the child side
        print(json.dumps(run_stage(args.stage, args.n, args)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    stages: dict[str, dict[int, dict]] = {"generate": {}}
    for n in sizes:
        started = time.perf_counter()
        root, generated = tree(n)
        reused = time.perf_counter() - started < generated / 2
        stages["generate"][n] = {
            "seconds": generated,  # as measured when the tree was made (all cores)
            "img_per_s": round(n / generated, 1),
            "reused": reused,
        }
        shutil.rmtree(Path(args.work) / f"cache-{n}", ignore_errors=True)  # cold cache builds
        for stage in args.stages.split(","):
            log(f"N={n}: {stage}")
            stages.setdefault(stage, {})[n] = measure(stage, n, root, args)
    result = {
        "stages": stages,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    if not args.json:
        for stage, by_n in stages.items():
            log(f"{stage}: " + ", ".join(f"{n}: {r['seconds']} s" for n, r in by_n.items()))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
