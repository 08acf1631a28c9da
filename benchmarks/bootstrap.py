"""The cost of metrics.json's bootstrap on a test split of MURA's size.

    python benchmarks/bootstrap.py --n-boot 1000 --repeats 3 --json

The predictions are MURA's official valid split as planned by the synthetic generator
(``table1_profile``): 1,199 studies, 3,197 images and 783 patients, a patient's studies spread
over one or more body parts as in MURA, with seeded probabilities (no model, no films). Timed,
each the best of ``--repeats`` runs, alternating so that a change of load on a shared machine
hits every variant alike:

* ``report_patient``: ``evaluation_report`` as ``mura evaluate`` runs it (patients resampled);
* ``report_study``: the same report of the same predictions without their ``patient_id``
  column, which resamples studies: the same work with the old unit;
* ``ci_study_by_study``, ``ci_study_by_patient``: ``bootstrap_ci`` of the study-level metrics,
  studies or patients resampled;
* ``ci_image_by_study``, ``ci_image_by_patient``: the same for the image-level metrics;
* ``ci_study_by_patient_calibrated``: ``ci_study_by_patient`` with the calibration metrics on
  the same resamples (Brier, ECE and 1,000 logistic recalibrations), as every study-level block
  of metrics.json has them.

The last line of the output is one JSON object {"timings_s": {...}, "sizes": {...},
"machine": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mura_lib.evaluation.bootstrap import bootstrap_ci  # noqa: E402
from mura_lib.evaluation.report import evaluation_report  # noqa: E402
from mura_lib.evaluation.studies import study_scores  # noqa: E402
from mura_lib.synthetic.profiles import plan_studies, table1_profile  # noqa: E402

THRESHOLD = 0.5


def valid_predictions(seed: int = 0) -> pd.DataFrame:
    """One row per image of MURA's valid split as the generator plans it, seeded scores."""
    rng = np.random.default_rng(seed)
    rows = []
    for spec in plan_studies(table1_profile(), seed):
        if spec.split != "valid":
            continue
        study_id = f"valid/{spec.part}/patient{spec.patient:05d}/study{spec.study}"
        for view in range(1, spec.n_views + 1):
            prob = float(np.clip(rng.normal(0.35 + 0.3 * spec.label, 0.2), 0.0, 1.0))
            rows.append((study_id, spec.part, spec.patient, view, spec.label, prob))
    columns = ["study_id", "body_part", "patient_id", "view", "label", "prob"]
    return pd.DataFrame(rows, columns=columns)


def timed(task) -> float:
    start = time.perf_counter()
    task()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()

    images = valid_predictions()
    studies = study_scores(images)
    y, p = studies["label"].to_numpy(), studies["prob"].to_numpy()
    yi, pi = images["label"].to_numpy(), images["prob"].to_numpy()
    n = args.n_boot
    tasks = {
        "report_patient": lambda: evaluation_report(images, THRESHOLD, n_boot=n),
        "report_study": lambda: evaluation_report(
            images.drop(columns="patient_id"), THRESHOLD, n_boot=n
        ),
        "ci_study_by_study": lambda: bootstrap_ci(y, p, THRESHOLD, None, n),
        "ci_study_by_patient": lambda: bootstrap_ci(
            y, p, THRESHOLD, studies["patient_id"].to_numpy(), n
        ),
        "ci_image_by_study": lambda: bootstrap_ci(
            yi, pi, THRESHOLD, images["study_id"].to_numpy(), n
        ),
        "ci_image_by_patient": lambda: bootstrap_ci(
            yi, pi, THRESHOLD, images["patient_id"].to_numpy(), n
        ),
        "ci_study_by_patient_calibrated": lambda: bootstrap_ci(
            y, p, THRESHOLD, studies["patient_id"].to_numpy(), n, calibration=True
        ),
    }
    best = {name: float("inf") for name in tasks}
    for _ in range(args.repeats):
        for name, task in tasks.items():
            best[name] = min(best[name], timed(task))
    report = evaluation_report(images, THRESHOLD, n_boot=0)
    result = {
        "timings_s": {k: round(v, 3) for k, v in best.items()},
        "n_boot": n,
        "repeats": args.repeats,
        "sizes": {
            "images": len(images),
            "studies": len(studies),
            "patients": int(images["patient_id"].nunique()),
            "body_parts": int(images["body_part"].nunique()),
        },
        "bootstrap_unit": report["bootstrap"]["unit"],
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }
    for name, seconds in result["timings_s"].items():
        print(f"{name:22s} {seconds:8.3f} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
