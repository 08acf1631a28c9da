"""Notebook 03's comparison: the single checkpoint, the ensemble, each with flip TTA, the
study-level heads fine-tuned from the single checkpoint (with their equal-work control, the
single checkpoint fine-tuned the same way as an image-level model), and, for a profile of
several runs, the ensemble of all runs; and the evaluation of every run for their spread.

Every variant is evaluated on the same test studies as the single checkpoint (the reference)
by :func:`mura_lib.inference.evaluate.evaluate_checkpoint`, into a folder of its own, and
compared with it by :func:`mura_lib.evaluation.compare.compare_evaluations`: paired bootstrap
intervals of the difference in study kappa and AUROC, and DeLong's test, overall and per part.
The heads are compared with the control too: that difference is what reading the views
together adds once the extra epochs are accounted for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mura_lib.evaluation.compare import compare_evaluations
from mura_lib.evaluation.runs import runs_block
from mura_lib.inference.evaluate import evaluate_checkpoint, write_json

REFERENCE = "single"
FINE_TUNED = "single fine-tuned"  # the study heads' equal-work control
ALL_RUNS = "all runs"  # the ensemble of every run's chosen checkpoint


def variants(
    checkpoint: Path,
    ensemble: Path | None,
    study: dict[str, Path] | None = None,
    control: Path | None = None,
    runs_ensemble: Path | None = None,
) -> dict[str, tuple[Path, str]]:
    """{name: (checkpoint or manifest, TTA)}; an ensemble's only when its manifest exists,
    and a study-level head (``study``: {head: checkpoint}) or the heads' equal-work
    ``control`` only when its checkpoint does."""
    found = {REFERENCE: (checkpoint, "none"), "single + flip": (checkpoint, "flip")}
    if ensemble is not None and ensemble.is_file():
        found["ensemble"] = (ensemble, "none")
        found["ensemble + flip"] = (ensemble, "flip")
    if runs_ensemble is not None and runs_ensemble.is_file():
        found[ALL_RUNS] = (runs_ensemble, "none")
    if control is not None and control.is_file():
        found[FINE_TUNED] = (control, "none")
    for head, path in (study or {}).items():
        if path.is_file():
            found[f"study {head}"] = (path, "none")
    return found


def folder_name(name: str) -> str:
    return name.replace(" + ", "_").replace(" ", "_")


def evaluate_variants(
    models: dict[str, tuple[Path, str]],
    data_root: Path,
    results_dir: Path,
    **evaluate_kwargs,
) -> dict[str, Path]:
    """Evaluate every variant but the reference (already in ``results_dir``) into
    ``results_dir/variants/<name>``; return {name: evaluation folder}, reference included."""
    folders = {REFERENCE: results_dir}
    for name, (source, tta) in models.items():
        if name == REFERENCE:
            continue
        folders[name] = results_dir / "variants" / folder_name(name)
        evaluate_checkpoint(source, data_root, folders[name], tta=tta, **evaluate_kwargs)
    return folders


def evaluate_runs(
    run_models: dict[str, Path],
    data_root: Path,
    results_dir: Path,
    **evaluate_kwargs,
) -> dict[str, Path]:
    """Evaluate every run's best.pt but the first's (the reference, already in
    ``results_dir``) into ``results_dir/runs/<name>``; return {run: evaluation folder}."""
    folders = {}
    for i, (name, models) in enumerate(run_models.items()):
        folders[name] = results_dir if i == 0 else results_dir / "runs" / name
        if i:
            evaluate_checkpoint(models / "best.pt", data_root, folders[name], **evaluate_kwargs)
    return folders


def record_runs(metrics_path: Path, folders: dict[str, Path], ensemble: Path | None) -> dict:
    """Add the ``runs`` block (:func:`mura_lib.evaluation.runs.runs_block`) to the reference
    run's metrics.json (atomically); return it."""
    return _record(metrics_path, "runs", runs_block(folders, metrics_path.parent, ensemble))


def compare_variants(
    folders: dict[str, Path],
    *,
    n_boot: int,
    seed: int,
    reference: str = REFERENCE,
    names: list[str] | None = None,
) -> dict[str, dict]:
    """{name: paired comparison with ``reference``} for each of ``names`` (default: every
    variant but the reference)."""
    names = [n for n in folders if n != reference] if names is None else names
    return {
        name: compare_evaluations(
            folders[reference], folders[name], n_boot=n_boot, seed=seed, names=(reference, name)
        )
        for name in names
    }


def study_heads_against_control(folders: dict[str, Path]) -> list[str]:
    """The study-level variants to compare with the equal-work control ([] without it)."""
    if FINE_TUNED not in folders:
        return []
    return [name for name in folders if name.startswith("study ")]


def _interval(ci: list[float] | None, signed: bool = True) -> str:
    if ci is None:
        return "n/a"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def variants_table(folders: dict[str, Path], comparisons: dict[str, dict]) -> pd.DataFrame:
    """One row per variant: study kappa and AUROC with their CIs, the threshold, and the
    paired difference from the reference with its interval and DeLong's p."""
    rows = []
    for name, folder in folders.items():
        report = json.loads((folder / "metrics.json").read_text())
        study = report["study"]["overall"]
        row = {
            "model": name,
            "members": len(report["model"]["members"]),
            "tta": report["tta"],
            "threshold": report["threshold"],
            "kappa": study["kappa"],
            "kappa_ci": _interval(study["ci"].get("kappa"), signed=False),
            "auroc": study["auroc"],
            "auroc_ci": _interval(study["ci"].get("auroc"), signed=False),
        }
        paired = comparisons.get(name, {}).get("study", {}).get("overall")
        if paired is not None:
            row |= {
                "kappa_diff": paired["kappa"]["diff"],
                "kappa_diff_ci": _interval(paired["kappa"]["ci"]),
                "auroc_diff": paired["auroc"]["diff"],
                "auroc_diff_ci": _interval(paired["auroc"]["ci"]),
                "delong_p": paired["auroc"]["delong_p"],
            }
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def per_part_differences(comparisons: dict[str, dict], metric: str = "auroc") -> pd.DataFrame:
    """The paired difference in ``metric`` from the reference with its interval, as text
    ("+0.009 [-0.009, +0.032]"), one row per body part (then overall), one column per variant."""
    table: dict[str, dict[str, str]] = {}
    for name, result in comparisons.items():
        for part, block in [
            *result["study"]["by_body_part"].items(),
            ("overall", result["study"]["overall"]),
        ]:
            diff = block[metric]["diff"]
            shown = "n/a" if diff is None else f"{diff:+.3f} {_interval(block[metric]['ci'])}"
            table.setdefault(part, {})[name] = shown
    return pd.DataFrame.from_dict(table, orient="index")


def significant(comparisons: dict[str, dict]) -> dict[str, dict[str, bool]]:
    """{variant: {metric: whether the overall paired interval excludes 0}}."""
    out = {}
    for name, result in comparisons.items():
        overall = result["study"]["overall"]
        out[name] = {
            metric: overall[metric]["ci"] is not None
            and (overall[metric]["ci"][0] > 0 or overall[metric]["ci"][1] < 0)
            for metric in ("kappa", "auroc")
        }
    return out


def record_comparison(
    metrics_path: Path,
    folders: dict[str, Path],
    comparisons: dict[str, dict],
    *,
    reference: str = REFERENCE,
    key: str = "comparison",
) -> dict:
    """Add the comparison block (under ``key``) to the reference checkpoint's metrics.json
    (atomically); return it."""
    block = {
        "reference": reference,
        "method": "paired bootstrap of the difference (same resampled patients); McNemar's "
        "exact test; DeLong's test",
        "variants": {
            name: {
                "folder": str(folders[name].relative_to(metrics_path.parent)),
                "result": result,
            }
            for name, result in comparisons.items()
        },
    }
    return _record(metrics_path, key, block)


def _record(metrics_path: Path, key: str, block: dict) -> dict:
    """Add ``block`` under ``key`` to the metrics.json at ``metrics_path``, atomically."""
    metrics = json.loads(metrics_path.read_text())
    metrics[key] = block
    write_json(metrics, metrics_path)
    return block
