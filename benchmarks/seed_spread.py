"""How much the sample's headline moves with the seed alone: the spread over 5 seeds.

For each seed, the profile's image-level model is trained exactly as notebook 02 trains it
(``TrainConfig.from_params`` of the profile, the seed replaced) and evaluated on the official
valid split as notebook 03 does (``evaluate_checkpoint``, no bootstrap: only the point values
are compared). The study AUROC and kappa of each seed, their mean, standard deviation and
range go to ``--json``. Pass ``--set key=value`` to try a recipe change on every seed (for
example ``--set lr_schedule=cosine``).

The CPU numerics are pinned as in `make reproduce` (:mod:`mura_lib.numerics`), so the number of
threads does not change a run: on a 2-core machine two recipes can run side by side with
``OMP_NUM_THREADS=1`` each.

    python benchmarks/seed_spread.py --profile sample --seeds 0 1 2 3 4 \
        --json benchmarks/measured/seed_spread.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from mura_lib.numerics import cpu_numerics, pin

pin("cpu")  # before torch is imported, as the pipeline's entry points do

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mura_lib.config import SAMPLE_ROOT, from_root  # noqa: E402
from mura_lib.inference.evaluate import evaluate_checkpoint  # noqa: E402
from mura_lib.provenance import cpu_state  # noqa: E402
from mura_lib.reproduce import _parse_override, load_profile  # noqa: E402
from mura_lib.training.config import TrainConfig  # noqa: E402
from mura_lib.training.train import fit  # noqa: E402


def one_seed(params: dict, seed: int, work: Path) -> dict:
    data_root = from_root(params["data_root"]) if params.get("data_root") else SAMPLE_ROOT
    config = TrainConfig.from_params({**params, "seed": seed})
    config.validate()
    started = time.perf_counter()
    summary = fit(data_root, work / "model", config, progress="none")
    report = evaluate_checkpoint(
        work / "model" / "best.pt", data_root, work / "eval", split="valid", n_boot=0
    )
    study = report["study"]["overall"]
    return {
        "seed": seed,
        "study_auroc": study["auroc"],
        "study_kappa": study["kappa"],
        "best_epoch": summary["best_epoch"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "range": float(v.max() - v.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="sample")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    params = load_profile(args.profile)
    params.update(dict(_parse_override(text) for text in args.set))
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="seed-spread-") as tmp:
            runs.append(one_seed(params, seed, Path(tmp)))
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "profile": args.profile,
        "overrides": args.set,
        "runs": runs,
        "study_auroc": spread([r["study_auroc"] for r in runs]),
        "study_kappa": spread([r["study_kappa"] for r in runs]),
        "cpu": cpu_state(),
        "cpu_numerics": cpu_numerics(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    print(json.dumps({k: result[k] for k in ("study_auroc", "study_kappa")}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
