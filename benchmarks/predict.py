"""Latency of `mura predict` for one study, warm and as a whole process.

    python benchmarks/predict.py --checkpoint models/sample/best.pt --json

What is measured (seconds):

* ``warm_s``: median over ``--repeats`` calls of
  :func:`mura_lib.inference.predict.predict_paths` on one study folder in a process that has
  already imported torch and predicted once. Each call does all a ``predict`` command does
  after start-up: read the checkpoint, build the model, decode and letterbox the views, one
  forward pass under ``torch.inference_mode()``.
* ``process_s``: median wall time of ``python -m mura_lib predict --checkpoint CKPT STUDY``
  as a fresh process (interpreter start, imports, the same work, one JSON line printed).

The study is the first one with ``--views`` views of the sample's valid split (official
valid), unless ``--study`` names a folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mura_lib.config import PROJ_ROOT, SAMPLE_ROOT
from mura_lib.data.mura import read_mura
from mura_lib.inference.predict import predict_paths


def find_study(n_views: int) -> Path:
    """The first valid-split study of the bundled sample with exactly ``n_views`` views."""
    frame = read_mura(SAMPLE_ROOT)
    valid = frame[frame["split"] == "valid"]
    views = valid.groupby("study_id", sort=True)["path"].agg(list)
    matches = views[views.map(len) == n_views]
    if matches.empty:
        raise SystemExit(f"the sample's valid split has no study with {n_views} views")
    return Path(matches.iloc[0][0]).parent


def time_warm(checkpoint: Path, study: Path, repeats: int) -> list[float]:
    predict_paths(checkpoint, [study], device="cpu")  # imports, allocator and caches warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_paths(checkpoint, [study], device="cpu")
        times.append(time.perf_counter() - start)
    return times


def time_process(checkpoint: Path, study: Path, repeats: int) -> list[float]:
    command = [sys.executable, "-m", "mura_lib", "predict", "--checkpoint", str(checkpoint)]
    command += ["--device", "cpu", str(study)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=PROJ_ROOT)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=PROJ_ROOT / "models/sample/best.pt")
    parser.add_argument("--study", type=Path, help="a study folder (default: from the sample)")
    parser.add_argument("--views", type=int, default=3, help="views of the sample study")
    parser.add_argument("--repeats", type=int, default=20, help="warm calls to time")
    parser.add_argument("--process-repeats", type=int, default=5, help="processes to time")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"no checkpoint at {args.checkpoint}: run `make reproduce` first")
    study = args.study or find_study(args.views)
    warm = time_warm(args.checkpoint, study, args.repeats)
    process = time_process(args.checkpoint, study, args.process_repeats)
    result = {
        "study": str(study.relative_to(PROJ_ROOT) if study.is_relative_to(PROJ_ROOT) else study),
        "n_views": len(list(study.glob("*.png"))),
        "threads": torch.get_num_threads(),
        "warm_s": round(statistics.median(warm), 4),
        "warm_min_s": round(min(warm), 4),
        "process_s": round(statistics.median(process), 3),
        "process_min_s": round(min(process), 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
