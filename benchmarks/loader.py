"""Benchmark the image pipeline against the loader of the project we grew from.

One run, the same images, the same output size S and the same augmentation family on both
sides, then one JSON line::

    python benchmarks/loader.py --images 600 --device cpu --json
    python benchmarks/loader.py --images 600 --device cuda --json
    python benchmarks/loader.py --scaling 1000,2000,4000 --json     # cache build time vs N

What is measured (img/s unless said otherwise):

* ``seed_loader_img_per_s``: the original loader, reproduced faithfully: a Dataset that opens
  each PNG with PIL per item (RGB), Resize((S, S)), RandomHorizontalFlip, RandomRotation(15),
  ColorJitter(0.2, 0.2), RandomResizedCrop(S, scale=(0.85, 1)), ToTensor, Normalize(ImageNet);
  DataLoader(batch_size=32, shuffle=True, num_workers=0); batches moved to the device.
* ``loader_img_per_s``: this project's path: cache already built, BatchLoader on the device,
  Augmenter with :func:`original_project_augmentations` (flip, rotation 15, zoom/shift of the
  same range as the crop, brightness/contrast 0.2), normalised float batches on the device.
* ``model_only_train_img_per_s``: ResNet18 training steps (1 input channel, 1 logit, Adam,
  BCE) on one pre-made batch already on the device; warm-up steps excluded.
* ``pipeline_train_img_per_s``: the same steps fed by the loader and the augmentation.
  Model-only and pipeline steps alternate in rounds so that a load change on a shared machine
  hits both alike; on CUDA both use bf16 autocast and channels_last.
* ``cache_build_img_per_s`` (a cold build into an empty folder, worker start included) and
  ``cache_bytes_per_image``.

Images: ``--images N`` synthetic MURA-sized PNGs (``mura_lib.synthetic.write_benchmark_images``),
generated once under benchmarks/data/ (git-ignored) and reused; ``--root`` uses an existing
MURA-v1.1 tree instead (its first N training images).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from mura_lib.config import IMAGENET_MEAN, IMAGENET_STD
from mura_lib.data.augment import (
    Augmenter,
    Brightness,
    Contrast,
    HFlip,
    Rotate,
    Scale,
    Transform,
    Translate,
)
from mura_lib.data.batches import BatchLoader
from mura_lib.data.cache import ImageCache, build_cache

DATA_DIR = Path(__file__).resolve().parent / "data"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- images


def benchmark_tree(n_images: int, seed: int) -> Path:
    """The MURA-v1.1 folder of n synthetic images, generated once and reused."""
    from mura_lib.synthetic import write_benchmark_images

    folder = DATA_DIR / f"synthetic-{n_images}-seed{seed}"
    if (folder / "COMPLETE").exists():
        return folder / "MURA-v1.1"
    tmp = DATA_DIR / f".tmp-{os.getpid()}-{folder.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"generating {n_images} synthetic images into {folder} (once)")
    started = time.perf_counter()
    write_benchmark_images(tmp, n_images, seed=seed)
    (tmp / "COMPLETE").write_text(f"{time.perf_counter() - started:.1f} s\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # a half-written tree is never reused
    return folder / "MURA-v1.1"


def image_frame(root: Path, n_images: int) -> pd.DataFrame:
    """The first n training rows of the tree's index frame.

    The folders are walked (``source="walk"``): the benchmark tree is train-only and its valid
    CSVs are empty, which the CSV reader refuses; for a consistent tree both give one frame.
    """
    from mura_lib.data.mura import scan_mura

    frame = scan_mura(root, source="walk").frame
    frame = frame[frame["split"] == "train"].reset_index(drop=True)
    if len(frame) < n_images:
        raise SystemExit(f"{root} holds {len(frame)} training images, fewer than {n_images}")
    return frame.iloc[:n_images].reset_index(drop=True)


# --------------------------------------------------------------------------- loaders


def seed_loader(frame: pd.DataFrame, size: int, batch_size: int) -> torch.utils.data.DataLoader:
    """The original project's loader, transform for transform."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(15),
            transforms.ColorJitter(brightness=0.2, contrast=0.2),
            transforms.RandomResizedCrop(size, scale=(0.85, 1.0)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )

    class SeedDataset(torch.utils.data.Dataset):
        def __init__(self, paths: list[str], labels: list[int]) -> None:
            self.paths, self.labels = paths, labels

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            image = Image.open(self.paths[i]).convert("RGB")
            return transform(image), self.labels[i]

    dataset = SeedDataset(frame["path"].tolist(), frame["label"].tolist())
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_seed_loader(
    frame: pd.DataFrame, size: int, batch_size: int, device: torch.device
) -> float:
    loader = seed_loader(frame, size, batch_size)
    sync(device)
    started = time.perf_counter()
    n = 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        n += len(images)
    sync(device)
    return n / (time.perf_counter() - started)


def original_project_augmentations() -> list[Transform]:
    """The augmentation family of the project we grew from, in this project's transforms.

    Its RandomResizedCrop(scale=(0.85, 1.0)), after the rotation, cropped 85-100 % of the area
    and resized it back: an isotropic zoom of 1 to 1/sqrt(0.85) = 1.085 with the crop anywhere
    inside the image, i.e. a shift of up to (1 - 1/1.085) / 2 = 4 % of the side.
    """
    geometric = [HFlip(), Rotate(15.0), Translate(0.04), Scale(1.0, 1.085)]
    return [*geometric, Brightness(0.2), Contrast(0.2)]


def endless_batches(loader: BatchLoader, augmenter: Augmenter) -> Iterator[tuple]:
    """Augmented (x, y) batches on the device, epoch after epoch."""
    epoch = 0
    while True:
        augmenter.set_epoch(epoch)
        for batch in loader.epoch(epoch):
            yield augmenter(batch.images), batch.labels
        epoch += 1


def time_loader(
    loader: BatchLoader, augmenter: Augmenter, device: torch.device, min_images: int
) -> dict[str, float]:
    """Throughput of batches alone and of augmented batches, over at least min_images."""
    out = {}
    for name, augmented in (("loader_no_augment_img_per_s", False), ("loader_img_per_s", True)):
        next(iter(loader.epoch(0)))  # page the memmap in; first-call overheads
        sync(device)
        n, started = 0, time.perf_counter()
        epoch = 0
        while n < min_images:
            for batch in loader.epoch(epoch):
                x = augmenter(batch.images) if augmented else batch.images
                n += len(x)
            epoch += 1
        sync(device)
        out[name] = n / (time.perf_counter() - started)
    return out


# --------------------------------------------------------------------------- training step


def make_model(device: torch.device, channels_last: bool) -> nn.Module:
    """ResNet18 with one input channel and one logit, as the project trains it."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=1)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def make_step(
    model: nn.Module, device: torch.device, amp: bool, channels_last: bool
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = nn.BCEWithLogitsLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = criterion(model(x).squeeze(1).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_training(
    step: Callable,
    fixed: tuple[torch.Tensor, torch.Tensor],
    stream: Iterator[tuple],
    device: torch.device,
    warmup: int,
    steps_per_round: int,
    rounds: int,
) -> dict[str, object]:
    """Alternate rounds of model-only and pipeline steps; rates over all timed steps."""
    for _ in range(warmup):
        step(*fixed)
        step(*next(stream))
    sync(device)
    seconds = {"model_only": 0.0, "pipeline": 0.0}
    per_round: dict[str, list[float]] = {"model_only": [], "pipeline": []}
    batch = len(fixed[0])
    for r in range(rounds):
        # ABBA order: neither kind always runs first in its round while the load drifts.
        kinds = ("model_only", "pipeline") if r % 2 == 0 else ("pipeline", "model_only")
        for kind in kinds:
            started = time.perf_counter()
            for _ in range(steps_per_round):
                if kind == "model_only":
                    step(*fixed)
                else:
                    step(*next(stream))
            sync(device)
            elapsed = time.perf_counter() - started
            seconds[kind] += elapsed
            per_round[kind].append(round(steps_per_round * batch / elapsed, 2))
    images = rounds * steps_per_round * batch
    return {
        "model_only_train_img_per_s": images / seconds["model_only"],
        "pipeline_train_img_per_s": images / seconds["pipeline"],
        "model_only_rounds_img_per_s": per_round["model_only"],
        "pipeline_rounds_img_per_s": per_round["pipeline"],
        "train_steps_timed": rounds * steps_per_round,
    }


# --------------------------------------------------------------------------- runs


def machine_info(device: torch.device) -> dict[str, object]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def timed_build(frame: pd.DataFrame, size: int, cache_dir: Path) -> tuple[ImageCache, float]:
    shutil.rmtree(cache_dir, ignore_errors=True)
    started = time.perf_counter()
    cache = build_cache(frame, size=size, cache_dir=cache_dir, progress=False)
    return cache, time.perf_counter() - started


def run_benchmark(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    root = Path(args.root) if args.root else benchmark_tree(args.images, args.seed)
    frame = image_frame(root, args.images)
    result: dict[str, object] = {
        **machine_info(device),
        "n_images": len(frame),
        "S": args.size,
        "batch_size": args.batch_size,
        "images_root": str(root),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    cuda = device.type == "cuda"

    log("building the cache (cold)")
    cache, build_s = timed_build(frame, args.size, DATA_DIR / "cache-benchmark")
    result["cache_build_s"] = round(build_s, 2)
    result["cache_build_img_per_s"] = len(cache) / build_s
    result["cache_bytes_per_image"] = cache.path.stat().st_size / len(cache)

    log("seed loader: one pass over the images")
    torch.manual_seed(args.seed)
    result["seed_loader_img_per_s"] = time_seed_loader(frame, args.size, args.batch_size, device)

    loader = BatchLoader.from_cache(cache, args.batch_size, device=device, seed=args.seed)
    result["loader_residency"] = loader.residency
    augmenter = Augmenter(original_project_augmentations(), seed=args.seed)
    log("this project's loader: cached batches + augmentation")
    result.update(time_loader(loader, augmenter, device, min_images=max(2000, 2 * len(cache))))

    log("training steps: model only vs fed by the pipeline")
    channels_last = cuda if args.channels_last == "auto" else args.channels_last == "on"
    model = make_model(device, channels_last)
    step = make_step(model, device, amp=cuda, channels_last=channels_last)
    first = next(iter(loader.epoch(0)))
    fixed = (augmenter(first.images), first.labels)
    # CPU: a step takes seconds, so one step per round and several rounds (an even number,
    # for the ABBA order); CUDA: steps are milliseconds.
    steps = args.steps or (50 if cuda else 1)
    rounds = args.rounds or 4
    result.update(
        time_training(
            step,
            fixed,
            endless_batches(loader, augmenter),
            device,
            warmup=10 if cuda else 1,
            steps_per_round=steps,
            rounds=rounds,
        )
    )
    result.update({"amp_bf16": cuda, "channels_last": channels_last})

    seed, ours = result["seed_loader_img_per_s"], result["loader_img_per_s"]
    model_only, pipeline = result["model_only_train_img_per_s"], result["pipeline_train_img_per_s"]
    result["loader_speedup_vs_seed"] = ours / seed
    result["pipeline_over_model_only"] = pipeline / model_only
    if args.epoch_images:
        result["epoch_images"] = args.epoch_images
        result["epoch_estimate_s"] = args.epoch_images / pipeline
        result["epoch_estimate_seed_loader_only_s"] = args.epoch_images / seed
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    shutil.rmtree(DATA_DIR / "cache-benchmark", ignore_errors=True)
    return result


def run_scaling(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    sizes = sorted(int(n) for n in args.scaling.split(","))
    root = Path(args.root) if args.root else benchmark_tree(sizes[-1], args.seed)
    frame = image_frame(root, sizes[-1])
    result: dict[str, object] = {
        **machine_info(device),
        "S": args.size,
        "images_root": str(root),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }
    # Start the worker pool first, so every point measures throughput, not process start-up.
    timed_build(frame.iloc[: 4 * (os.cpu_count() or 1)], args.size, DATA_DIR / "cache-scaling")
    points = []
    for n in sizes:
        log(f"cache build of {n} images")
        cache, seconds = timed_build(frame.iloc[:n], args.size, DATA_DIR / "cache-scaling")
        points.append(
            {
                "n_images": n,
                "build_s": round(seconds, 2),
                "img_per_s": round(n / seconds, 1),
                "bytes": cache.path.stat().st_size,
            }
        )
    shutil.rmtree(DATA_DIR / "cache-scaling", ignore_errors=True)
    result["scaling"] = points
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="number of images")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--size", type=int, default=256, help="side S of the model input")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", help="an existing MURA-v1.1 tree instead of synthetic images")
    parser.add_argument(
        "--epoch-images",
        type=int,
        default=36808,
        help="estimate the time of an epoch of this many images (0: skip)",
    )
    parser.add_argument("--scaling", help="comma-separated N: report cache build time vs N")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of model-only/pipeline")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: on for CUDA only",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device")
    started = time.perf_counter()
    result = run_scaling(args, device) if args.scaling else run_benchmark(args, device)
    result["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    rounded = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    if args.json:
        print(json.dumps(rounded))
    else:
        for key, value in rounded.items():
            print(f"{key:32s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
