"""The full-size rehearsal: every stage of the pipeline on MURA's Table 1 in MURA-sized films,
and how its cost grows with the number of films.

    python benchmarks/scale.py --sizes 5000,10000 --json             # the quick run
    python benchmarks/scale.py --sizes 5000,10000,20000,40005 --json  # up to all of Table 1

The data: ``python -m mura_lib.synthetic --profile table1 --full-size`` writes MURA's exact
counts (40,005 films, 14,656 studies, 11,967 patients; 36,808 train and 3,197 valid films) with
MURA's film sizes (long side 512 px, each part's spread of aspect ratios, about 20 % RGB). A
size N below 40,005 is a subset of whole patients of that tree, each split keeping its share
(``subset_of_studies``: 5,000 films = 4,600 train + 400 valid); its films are the same studies'
films in the full tree, so the sizes differ in amount of work only. Trees are made once under
benchmarks/data/ (git-ignored) and reused: a subset is hard-linked out of the full tree when
that exists, and generated on all cores otherwise (the same films either way).

Each stage runs in a fresh process, timed, with its peak resident memory (``wait4``'s
``ru_maxrss``, which covers the process and the children it waited for: joblib workers, a
notebook's kernel):

* ``read_mura``: indexing the tree from its official CSVs, both splits;
* ``cache_256``, ``cache_320``: decoding and letterboxing every film once (all cores), into
  the caches the pipeline uses: notebook 02's train and val subsets (patient-grouped 20 % of
  official train) and notebook 03's test split (official valid);
* ``train_resnet18_256`` (batch 32, the ``mura`` profile) and ``train_densenet169_320``
  (batch 8, the ``paper`` profile): a loader over the whole train subset's memory-mapped cache
  (shuffled, augmented, per-part weighted BCE, Adam), one warm-up step, then ``--steps`` timed
  steps; ``img_per_s`` and the estimate of an epoch of MURA's 36,808 training films;
* ``evaluate``: ``evaluate_checkpoint`` of an untrained ResNet18 at 256 px (its cost is that of a
  trained one) on the test split, ``--n-boot`` bootstrap resamples;
* ``notebook_01``, ``notebook_03``: the notebooks through papermill with the project's kernel,
  as ``make reproduce`` runs them. Notebook 03 evaluates the same untrained checkpoint (as
  ``models_dir/best.pt``) without the variant comparison; the validation predictions that its
  triage table calibrates on are a stand-in (seeded uniform probabilities over the val subset)
  because making real ones is notebook 02's work, not 03's.

The caches are built cold by the cache stages; the later stages open them (as a rerun of the
pipeline does). The films themselves may or may not be in the operating system's page cache
when a stage starts, and a stage that reads them (``read_mura``'s folder listings, the cache
builds, notebook 01's PNG headers) costs several times more when they come from the disk: each
stage therefore reports ``films_in_page_cache``, the share of a fixed sample of the films'
bytes that the page cache held when it started (``fincore``; null where that is missing).
``--warm`` reads every film once before each stage, so that the figures are of the pipeline's
own work, as a second pass over the same tree finds it. The last line of the output is one
JSON object::

    {"stages": {STAGE: {N: {"seconds": ..., "peak_rss_mb": ..., ...}}}, "machine": {...}}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MURA_TRAIN_IMAGES = 36_808
TABLE1_IMAGES = 40_005
STAGES = (
    "read_mura",
    "cache_256",
    "cache_320",
    "train_resnet18_256",
    "train_densenet169_320",
    "evaluate",
    "notebook_01",
    "notebook_03",
)
TRAIN_BATCH = {"resnet18": 32, "densenet169": 8}  # the mura and paper profiles
VAL_FRACTION, SEED = 0.2, 0  # the notebooks' defaults

DATA_DIR = ROOT / "benchmarks" / "data"  # where benchmarks/loader.py keeps its trees too
TABLE1_DIR = DATA_DIR / "table1-full-seed0"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table1_tree() -> tuple[Path, float]:
    """MURA's Table 1 (40,005 films, 14,656 studies) in MURA-sized films, and the seconds its
    generation took: made once on all cores (``--profile table1 --full-size``) and reused."""
    if not (TABLE1_DIR / "COMPLETE").exists():
        log(f"generating MURA's Table 1 in MURA-sized films into {TABLE1_DIR} (once, all cores)")
        _generate(TABLE1_DIR, [])
    return TABLE1_DIR / "MURA-v1.1", float((TABLE1_DIR / "COMPLETE").read_text().split()[0])


def _generate(folder: Path, extra: list[str]) -> None:
    started = time.perf_counter()
    argv = [sys.executable, "-m", "mura_lib.synthetic", "--profile", "table1", "--full-size"]
    argv += ["--n-jobs", "-1", "--overwrite", "--out", str(folder), *extra]
    subprocess.run(argv, cwd=ROOT, check=True)  # atomic: no half-written tree is reused
    (folder / "COMPLETE").write_text(f"{time.perf_counter() - started:.1f} s generated\n")


def sized_tree(n: int) -> tuple[Path, dict]:
    """The tree of ``n`` films (all of Table 1 for n >= 40,005) and how it was made."""
    if n >= TABLE1_IMAGES:
        root, seconds = table1_tree()
        return root, {"seconds": seconds, "made": "generated"}
    folder = DATA_DIR / f"table1-{n}-seed0"
    if not (folder / "COMPLETE").exists():
        if (TABLE1_DIR / "COMPLETE").exists():
            log(f"linking {n} films of the Table-1 tree into {folder} (once)")
            link_subset(TABLE1_DIR, folder, n)
        else:
            log(f"generating {n} films of Table 1 into {folder} (once, all cores)")
            _generate(folder, ["--n-images", str(n)])
    seconds, made = (folder / "COMPLETE").read_text().split()[::2]
    return folder / "MURA-v1.1", {"seconds": float(seconds), "made": made}


def link_subset(full: Path, folder: Path, n: int) -> None:
    """Hard-link the films of ``subset_of_studies(n)`` out of the full tree and write its
    CSVs and truth sidecar (the full files' lines, filtered); atomic like the generator."""
    from mura_lib.synthetic.profiles import get_profile, plan_studies, subset_of_studies
    from mura_lib.synthetic.tree import study_dir

    started = time.perf_counter()
    specs = plan_studies(get_profile("table1", None, True), SEED)
    studies = {study_dir(s) for s in subset_of_studies(specs, n, SEED)}
    shutil.rmtree(folder, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for study in studies:
        (tmp / study).mkdir(parents=True)
        for film in (full / study).iterdir():
            os.link(film, tmp / study / film.name)

    def keep(line: str) -> bool:
        path = line.split(",", 1)[0]
        return path.rsplit("/", 1)[0] + "/" in studies or path in studies

    for rel in [
        *(p.relative_to(full) for p in (full / "MURA-v1.1").glob("*.csv")),
        Path("synthetic_truth.csv"),
    ]:
        lines = (full / rel).read_text().splitlines(keepends=True)
        header = lines[:1] if rel.name == "synthetic_truth.csv" else []  # the CSVs have none
        (tmp / rel).write_text("".join(header + [ln for ln in lines[len(header) :] if keep(ln)]))
    (tmp / "COMPLETE").write_text(f"{time.perf_counter() - started:.1f} s linked\n")
    tmp.rename(folder)


def untrained_checkpoint(cache_dir: Path) -> Path:
    """An untrained ResNet18 at 256 px with a fixed 0.5 threshold: evaluation costs the same
    whatever the weights learnt."""
    import torch

    from mura_lib.config import GRAY_MEAN, GRAY_STD
    from mura_lib.models.build import build_model
    from mura_lib.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(
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


def split_frame(root: Path):
    from mura_lib.data import read_mura, split_by_patient

    return split_by_patient(read_mura(root), VAL_FRACTION, SEED)


def pipeline_caches(root: Path, size: int, cache_dir: Path) -> dict:
    """{part: ImageCache} of notebook 02's train and val subsets and notebook 03's test split."""
    from mura_lib.data.cache import build_cache

    frame = split_frame(root)
    return {
        part: build_cache(rows, size=size, cache_dir=cache_dir, progress=False)
        for part, rows in frame.groupby("subset", sort=False)
    }


class FirstSteps:
    """The first ``steps`` batches of a loader's epoch: a timed stretch of a real epoch."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps = loader, steps
        self.device, self.grouped = loader.device, loader.grouped

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int):
        return islice(self.loader.epoch(epoch), self.steps)


def stage_train(root: Path, arch: str, size: int, cache_dir: Path, steps: int) -> dict:
    import numpy as np
    import torch

    from mura_lib.data.augment import Augmenter
    from mura_lib.data.batches import BatchLoader
    from mura_lib.models.build import build_model
    from mura_lib.training.config import TrainConfig
    from mura_lib.training.loop import train_one_epoch
    from mura_lib.training.losses import image_loss_weights, weighted_bce

    train = pipeline_caches(root, size, cache_dir)["train"]  # built by its stage: opened
    batch = TRAIN_BATCH[arch]
    labels = train.frame["label"].to_numpy(np.float32)
    weight = image_loss_weights(train.frame, train.frame, "paper")
    loader = BatchLoader(train.images, labels, batch, weights=weight, shuffle=True)
    model = build_model(arch, "none", trainable="all")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    augmenter = Augmenter(TrainConfig().augmentations(), seed=0)
    train_one_epoch(
        model, FirstSteps(loader, 1), augmenter, optimizer, 0, criterion=weighted_bce
    )  # warm-up
    started = time.perf_counter()
    train_one_epoch(
        model, FirstSteps(loader, steps), augmenter, optimizer, 1, criterion=weighted_bce
    )
    rate = steps * batch / (time.perf_counter() - started)
    return {
        "train_images": len(labels),
        "steps": steps,
        "batch": batch,
        "img_per_s": round(rate, 2),
        "epoch_estimate_s": round(MURA_TRAIN_IMAGES / rate),
    }


def stage_evaluate(root: Path, cache_dir: Path, n_boot: int, work: Path) -> dict:
    from mura_lib.inference.evaluate import evaluate_checkpoint

    checkpoint = untrained_checkpoint(cache_dir)
    report = evaluate_checkpoint(
        checkpoint,
        root,
        work / "evaluate",
        n_boot=n_boot,
        device="cpu",
        cache_dir=str(cache_dir),
        progress="none",
    )
    return {
        "images": report["image"]["overall"]["n"],
        "n_boot": n_boot,
        "studies": report["study"]["overall"]["n"],
    }


def stage_notebook(name: str, root: Path, cache_dir: Path, n_boot: int, work: Path) -> dict:
    import numpy as np
    import papermill

    from mura_lib.evaluation.predictions import write_predictions
    from mura_lib.reproduce import KERNEL

    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    models = out / "models"
    models.mkdir(parents=True)
    params = {
        "profile": "mura",
        "data_root": str(root),
        "results_dir": str(out / "results"),
        "models_dir": str(models),
        "cache_dir": str(cache_dir),
        "seed": SEED,
    }
    if name == "notebook_03":
        shutil.copy(untrained_checkpoint(cache_dir), models / "best.pt")
        val = split_frame(root).query("subset == 'val'")
        stand_in = np.random.default_rng(SEED).uniform(size=len(val)).astype(np.float32)
        write_predictions(val.assign(prob=stand_in), models / "val_predictions.csv")
        params |= {"n_boot": n_boot, "compare_variants": False, "device": "cpu"}
    notebook = {"notebook_01": "01_eda.ipynb", "notebook_03": "03_error_analysis.ipynb"}[name]
    started = time.perf_counter()
    papermill.execute_notebook(
        ROOT / "notebooks" / notebook,
        out / notebook,
        parameters=params,
        kernel_name=KERNEL,
        progress_bar=False,
        cwd=str(ROOT / "notebooks"),
    )
    seconds = round(time.perf_counter() - started, 2)
    frame = split_frame(root)  # the films it worked through: every film (01), the test split (03)
    images = len(frame) if name == "notebook_01" else int((frame["subset"] == "test").sum())
    return {"notebook_s": seconds, "images": images}


def film_paths(root: Path) -> list[Path]:
    """Every film of a tree, as its official CSVs list them (both splits): parsed without
    listing a folder, so that looking does not warm what ``read_mura`` is timed on."""
    from mura_lib.data.mura_csv import read_image_csv
    from mura_lib.data.mura_layout import image_csv_name

    paths = []
    for split in ("train", "valid"):
        records, _ = read_image_csv(root / image_csv_name(split), split)
        paths += [root.parent / record.rel_path for record in records]
    return paths


def page_cache_share(paths: list[Path], sample: int = 400) -> float | None:
    """The share of the bytes of a fixed, evenly spaced sample of ``paths`` (a tree's films)
    that the page cache holds now (util-linux ``fincore``; None where it is missing)."""
    chosen = [str(p) for p in paths[:: max(1, len(paths) // sample)]]
    try:
        out = subprocess.run(
            ["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", *chosen],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    resident = size = 0
    for line in out.splitlines():
        res, total = (int(v) for v in line.split())
        resident, size = resident + min(res, total), size + total
    return round(resident / size, 3) if size else None


def warm_films(paths: list[Path]) -> float:
    """Read every film once (into the page cache) and return the seconds it took."""
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as film:
            while film.read(1 << 20):
                pass
    return round(time.perf_counter() - started, 2)


def run_stage(stage: str, n: int, args: argparse.Namespace) -> dict:
    """One stage in this process (the child side of :func:`measure`), timed from its start."""
    started = time.perf_counter()
    result = _stage(stage, Path(args.root), args)
    return {**result, "seconds": round(time.perf_counter() - started, 2)}


def _stage(stage: str, root: Path, args: argparse.Namespace) -> dict:
    work = Path(args.work) / f"n{args.n}"
    cache_dir = work / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if stage == "read_mura":
        from mura_lib.data import read_mura

        frame = read_mura(root)
        return {"images": len(frame), "studies": int(frame["study_id"].nunique())}
    if stage.startswith("cache_"):
        caches = pipeline_caches(root, int(stage.split("_")[1]), cache_dir)
        return {
            "images": sum(len(c.frame) for c in caches.values()),
            "rebuilt": all(c.report.rebuilt for c in caches.values()),
            "bytes": sum(int(c.images.nbytes) for c in caches.values()),
        }
    if stage.startswith("train_"):
        _, arch, size = stage.split("_")
        return stage_train(root, arch, int(size), cache_dir, args.steps)
    if stage == "evaluate":
        return stage_evaluate(root, cache_dir, args.n_boot, work)
    if stage.startswith("notebook_"):
        return stage_notebook(stage, root, cache_dir, args.n_boot, work)
    raise SystemExit(f"unknown stage {stage}")


def measure(stage: str, n: int, root: Path, films: list[Path], args: argparse.Namespace) -> dict:
    """Run a stage in a fresh process: its time (imports excluded: ``seconds``; the whole
    process: ``process_s``), its peak RSS, and what it reports."""
    argv = [sys.executable, __file__, "--stage", stage, "--n", str(n), "--work", args.work]
    argv += ["--root", str(root), "--steps", str(args.steps), "--n-boot", str(args.n_boot)]
    warmed = {"warm_films_s": warm_films(films)} if args.warm else {}
    in_page_cache = page_cache_share(films)
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"stage {stage} at N={n} failed (status {status})")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(process_s=round(seconds, 2), peak_rss_mb=round(usage.ru_maxrss / 1024))
    result.update(films_in_page_cache=in_page_cache, **warmed)
    if "images" in result:  # the films this stage worked through
        result["seconds_per_1000_images"] = round(1000 * result["seconds"] / result["images"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000", help="comma-separated N (<= 40005)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--work", default=str(DATA_DIR / "scale"))
    parser.add_argument(
        "--warm", action="store_true", help="read every film before each stage (page cache)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # the child side
        print(json.dumps(run_stage(args.stage, args.n, args)))
        return 0
    from mura_lib.provenance import cpu_state

    sizes = [min(int(s), TABLE1_IMAGES) for s in args.sizes.split(",")]
    stages: dict[str, dict[int, dict]] = {"tree": {}}
    load_start = [round(x, 2) for x in os.getloadavg()]
    for n in sizes:
        root, made = sized_tree(n)
        stages["tree"][n] = made  # as measured when the tree was made
        shutil.rmtree(Path(args.work) / f"n{n}", ignore_errors=True)  # cold cache builds
        films = film_paths(root)  # once per tree: what --warm reads and fincore samples
        for stage in args.stages.split(","):
            log(f"N={n}: {stage}")
            stages.setdefault(stage, {})[n] = measure(stage, n, root, films, args)
            log(f"  {json.dumps(stages[stage][n])}")
    result = {
        "stages": stages,
        "warm": args.warm,  # every film read before each stage
        "machine": {
            "cpu": cpu_state(),  # model, family/model, torch's vector capability
            "cores": os.cpu_count(),
            "load_avg_start": load_start,
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
