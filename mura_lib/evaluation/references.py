"""Published figures our results are shown beside, with where each comes from.

None of them is directly comparable with a run on the official valid split: the MURA paper's
numbers are on the hidden test set (207 studies), and the original project's were measured on
the split it also used for early stopping and checkpoint choice (optimistic). On the bundled
synthetic sample, no published figure is comparable at all.
"""

from __future__ import annotations

import pandas as pd

from mura_lib.evaluation.metrics import metrics_from_confusion

# MURA paper (Rajpurkar et al. 2017), study level, hidden test set.
PAPER_TEST_KAPPA = {"overall": 0.705, "FINGER": 0.389, "WRIST": 0.931}
PAPER_TEST = {"kappa": 0.705, "auroc": 0.929, "sensitivity": 0.815, "specificity": 0.887}
# Public re-implementations on the official valid split (study kappa, MURA.md).
REIMPLEMENTATIONS_VALID_KAPPA = (0.60, 0.65)

# The original notebook project: image level, official valid split used for model selection.
ORIGINAL_PROJECT_CONFUSION = {"tn": 1418, "fp": 249, "fn": 389, "tp": 1141}


def original_project_metrics() -> dict:
    """The original project's image-level metrics, recomputed from its confusion matrix."""
    c = ORIGINAL_PROJECT_CONFUSION
    m = metrics_from_confusion(c["tn"], c["fp"], c["fn"], c["tp"])
    return {k: float(m[k]) for k in ("kappa", "f1", "accuracy", "sensitivity", "specificity")}


def comparison_table(report: dict, label: str = "this run") -> pd.DataFrame:
    """Our overall study- and image-level metrics next to the paper's and the original project's.

    The ``evaluated_on`` column says why the rows are not directly comparable.
    """
    study, image = report["study"]["overall"], report["image"]["overall"]
    orig = original_project_metrics()
    rows = [
        {
            "source": f"{label} (study)",
            "evaluated_on": "official valid, untouched by selection",
            **{k: study[k] for k in ("kappa", "auroc", "f1", "sensitivity", "specificity")},
        },
        {
            "source": f"{label} (image)",
            "evaluated_on": "official valid, untouched by selection",
            **{k: image[k] for k in ("kappa", "auroc", "f1", "sensitivity", "specificity")},
        },
        {
            "source": "MURA paper, DenseNet-169 (study)",
            "evaluated_on": "hidden test set, 207 studies",
            **PAPER_TEST,
            "f1": None,
        },
        {
            "source": "original project, ResNet18 (image)",
            "evaluated_on": "official valid, also its selection set (optimistic)",
            **orig,
            "auroc": None,
        },
    ]
    return pd.DataFrame(rows).set_index("source")
