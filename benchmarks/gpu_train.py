"""Training throughput on one GPU: the model alone versus the model fed by the data pipeline.

    python benchmarks/gpu_train.py --arch resnet18 --size 256 --json
    python benchmarks/gpu_train.py --arch densenet169 --size 320 --batch-size 32 --compile --json

Both sides run the same training steps of ``build_model(arch)`` (1 input channel, 1 logit,
Adam, the project's weighted BCE, bf16 autocast and channels_last on CUDA, as ``fit`` does):

* ``model_only_img_per_s``: on one pre-made, normalised batch already on the GPU;
* ``pipeline_img_per_s``: each step fed by ``BatchLoader`` (the uint8 array resident on the
  GPU, a new permutation per epoch) and ``Augmenter`` (the training default), the
  path ``fit`` takes. The images are a random uint8 array of MURA's training-set shape share:
  decoding is the cache's job (benchmarks/loader.py times it), not the training loop's.
* ``ratio`` = pipeline / model-only (the goal: at least 0.9), and ``epoch_estimate_s``: MURA's
  36,808 training images at the pipeline rate.

Model-only and pipeline rounds alternate, so a change of load hits both alike; ``--compile``
wraps the model in ``torch.compile`` (warm-up steps, which compile, are not timed). On a CPU
the same code runs (slowly), which the test suite uses to check the script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mura_lib.data.augment import Augmenter, normalize  # noqa: E402
from mura_lib.data.batches import BatchLoader  # noqa: E402
from mura_lib.inference.engine import autocast, to_model_input  # noqa: E402
from mura_lib.models.build import build_model  # noqa: E402
from mura_lib.training.config import TrainConfig  # noqa: E402
from mura_lib.training.losses import weighted_bce  # noqa: E402

MURA_TRAIN_IMAGES = 36_808


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(args.arch, "none", trainable="all").to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if args.compile else model
    rng = np.random.default_rng(0)
    # Whole batches only: the timing counts batch_size images a step, and a smaller last
    # batch would make torch.compile compile a second graph.
    n = args.images - args.images % args.batch_size
    images = rng.integers(0, 256, (n, args.size, args.size), dtype=np.uint8)
    labels = rng.integers(0, 2, n).astype(np.float32)
    weight = np.ones(n)
    loader = BatchLoader(images, labels, args.batch_size, device=device, weights=weight)
    augmenter = Augmenter(TrainConfig().augmentations(), seed=0)

    def step(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
        with autocast(device, True):
            logits = forward(to_model_input(x, cuda)).squeeze(1)
        loss = weighted_bce(logits.float(), y, w)  # float32, as in training
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    fixed = next(iter(loader.epoch(0)))
    fixed_x = normalize(fixed.images)

    def batches():
        epoch = 0
        while True:
            yield from loader.epoch(epoch)
            epoch += 1

    stream = batches()

    def model_only(n: int) -> None:
        for _ in range(n):
            step(fixed_x, fixed.labels, fixed.weights)

    def pipeline(n: int) -> None:
        for _ in range(n):
            batch = next(stream)
            step(augmenter(batch.images), batch.labels, batch.weights)

    for warm in (model_only, pipeline):
        warm(args.warmup)
    sync(device)
    timings: dict[str, list[float]] = {"model_only": [], "pipeline": []}
    for _ in range(args.rounds):
        for name, work in (("model_only", model_only), ("pipeline", pipeline)):
            sync(device)
            start = time.perf_counter()
            work(args.steps)
            sync(device)
            timings[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
    model_rate = float(np.median(timings["model_only"]))
    pipeline_rate = float(np.median(timings["pipeline"]))
    return {
        "arch": args.arch,
        "size": args.size,
        "batch_size": args.batch_size,
        "compile": bool(args.compile),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "model_only_img_per_s": round(model_rate, 1),
        "pipeline_img_per_s": round(pipeline_rate, 1),
        "ratio": round(pipeline_rate / model_rate, 3),
        "epoch_estimate_s": round(MURA_TRAIN_IMAGES / pipeline_rate, 1),
        "loader_residency": loader.residency,
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=4096, help="rows of the uint8 array")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per side")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
