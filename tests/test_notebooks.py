"""The three notebooks end to end through `make reproduce`'s pipeline (smoke profile).

Every test here only reads what one run wrote, so they share one run (minutes on a CPU). The
tests of what the pipeline does around the notebooks (failures, Ctrl-C, publishing) use
stand-in notebooks instead: tests/test_reproduce.py, tests/test_interrupts.py.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from mura_lib.config import SAMPLE_ROOT
from mura_lib.publication import publication_problem
from mura_lib.reproduce import NOTEBOOKS, run_pipeline

pytestmark = pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="data_sample/ is missing")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, request) -> tuple[Path, Path]:
    """(root, results) of one smoke-profile run into temporary results/models folders.

    Under pytest-xdist every worker has its own session; the workers share one run through a
    lock in the folder above theirs: the first to come runs it, the others wait and read it.
    """
    base = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # an xdist worker: the parent is shared
        base = base.parent
    root = base / "smoke-run"
    with open(base / "smoke-run.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not (root / "done").is_file():
            shutil.rmtree(root, ignore_errors=True)
            run_pipeline(
                "smoke",
                overrides={"cache_dir": str(root / "cache")},
                results_root=root / "results",
                models_root=root / "models",
                log_output=False,
            )
            (root / "done").touch()
    return root, root / "results" / "smoke"


def first_run(root: Path) -> Path:
    """The smoke profile trains two runs (seeds 0 and 1); the first is notebook 03's reference."""
    return root / "models" / "smoke" / "runs" / "seed0"


def test_pipeline_writes_every_result(smoke_run):
    root, results = smoke_run
    for name in NOTEBOOKS:
        executed = nbformat.read(results / name, as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
        # papermill's record names the notebooks as published: the same in every clone
        assert executed.metadata.papermill.input_path == f"notebooks/{name}"
        assert executed.metadata.papermill.output_path == str((results / name).resolve())
        outputs = json.dumps([c.get("outputs", []) for c in executed.cells])
        assert ".staging-" not in outputs, f"{name} shows a staging path"
        assert (results / name).with_suffix(".html").stat().st_size > 10_000
        assert (results / name).with_suffix(".report.html").is_file()
    figures = {p.name for p in (results / "figures").iterdir()}
    assert {"02_learning_curves.png", "03_roc.png", "03_kappa_per_part.png"} <= figures
    assert any(name.startswith("01_") for name in figures)
    assert (first_run(root) / "best.pt").is_file()
    # no staging folder is left behind
    assert not list((root / "results").glob(".staging-*"))
    assert not list((root / "models").glob(".staging-*"))


def test_metrics_json_has_the_evaluate_schema(smoke_run):
    _, results = smoke_run
    metrics = json.loads((results / "metrics.json").read_text())
    assert 0.0 <= metrics["threshold"] <= 1.0
    for block in (metrics["study"]["overall"], metrics["image"]["overall"]):
        for key in ("kappa", "auroc", "f1", "accuracy", "sensitivity", "specificity", "n"):
            assert key in block
    assert set(metrics["study"]["by_body_part"]) <= {
        "ELBOW",
        "FINGER",
        "FOREARM",
        "HAND",
        "HUMERUS",
        "SHOULDER",
        "WRIST",
    }


def test_metrics_json_names_the_published_checkpoint(smoke_run):
    # notebook 03 evaluated the checkpoint in the staging folder, which publishing renames
    root, results = smoke_run
    metrics = json.loads((results / "metrics.json").read_text())
    published = (first_run(root) / "best.pt").resolve()
    assert metrics["checkpoint"] == str(published) and published.is_file()


def test_every_metrics_json_names_published_models_only(smoke_run):
    """The variants' metrics.json (ensemble members, TTA) too: no path into a staging folder."""
    root, results = smoke_run
    files = sorted(results.rglob("metrics.json"))
    # single, single + flip, ensemble, ensemble + flip (keep_top_k 2), study attention and
    # its equal-work control (single fine-tuned), all runs, and the second run
    assert len(files) == 8
    for path in files:
        assert ".staging-" not in path.read_text(), path
    ensemble = json.loads((results / "variants" / "ensemble" / "metrics.json").read_text())
    for member in ensemble["model"]["members"]:
        assert (first_run(root) / "top_k").resolve() in Path(member["path"]).parents
        assert Path(member["path"]).is_file()


def test_the_published_results_belong_with_the_published_models(smoke_run):
    _, results = smoke_run
    assert publication_problem(results) is None
    manifest = json.loads((results / "manifest.json").read_text())
    assert {
        "runs/seed0/best.pt",
        "runs/seed0/ensemble.json",
        "runs/seed0/study/attention/best.pt",
        "runs/seed1/best.pt",
        "runs_ensemble.json",
    } <= set(manifest["models"]["sha256"])


def test_metrics_json_holds_the_paired_comparison(smoke_run):
    _, results = smoke_run
    comparison = json.loads((results / "metrics.json").read_text())["comparison"]
    assert comparison["reference"] == "single"
    assert set(comparison["variants"]) == {
        "single + flip",
        "ensemble",
        "ensemble + flip",
        "single fine-tuned",
        "study attention",
        "all runs",
    }
    for name, variant in comparison["variants"].items():
        assert (results / variant["folder"] / "predictions.csv").is_file()
        overall = variant["result"]["study"]["overall"]
        assert {"a", "b", "diff", "ci"} <= set(overall["kappa"]), name
        assert "delong_p" in overall["auroc"], name
    assert (results / "figures" / "03_paired_differences.png").is_file()
    # the head is judged against its equal-work control too
    against = json.loads((results / "metrics.json").read_text())["study_heads_vs_control"]
    assert against["reference"] == "single fine-tuned"
    assert list(against["variants"]) == ["study attention"]
    assert (results / "figures" / "03_paired_differences_control.png").is_file()


def test_the_study_heads_are_trained_published_and_shown(smoke_run):
    """Notebook 02 fine-tunes the smoke profile's attention head into study/attention/ of the
    published models; notebook 03 draws the attention head's errors with their weights."""
    root, results = smoke_run
    head = first_run(root) / "study" / "attention" / "best.pt"
    assert head.is_file()
    summary = json.loads((results / "train_summary.json").read_text())
    assert [row["head"] for row in summary["study_heads"]] == ["image-level", "attention"]
    assert (first_run(root) / "study" / "image-level" / "best.pt").is_file()
    variant = json.loads((results / "variants" / "study_attention" / "metrics.json").read_text())
    assert variant["checkpoint"] == str(head.resolve())
    predictions = pd.read_csv(results / "variants" / "study_attention" / "predictions.csv")
    assert np.allclose(predictions.groupby("study_id")["view_weight"].sum(), 1, atol=1e-5)
    assert list((results / "figures").glob("03_attention_*.png"))


def test_the_runs_are_trained_evaluated_and_summarised(smoke_run):
    """Two runs (seeds 0 and 1): each trained into runs/<name>/, each evaluated on the test
    split, their spread in metrics.json's runs block, their ensemble paired with the first."""
    root, results = smoke_run
    models = root / "models" / "smoke"
    summary = json.loads((results / "train_summary.json").read_text())
    assert [row["run"] for row in summary["runs"]] == ["seed0", "seed1"]
    for name, seed in (("seed0", 0), ("seed1", 1)):
        ckpt = torch.load(models / "runs" / name / "best.pt", weights_only=True)
        assert ckpt["train_args"]["seed"] == seed
    ensemble = json.loads((models / "runs_ensemble.json").read_text())
    assert [m["path"] for m in ensemble["members"]] == ["runs/seed0/best.pt", "runs/seed1/best.pt"]
    assert ensemble["threshold"] is not None  # chosen on the runs' held-out predictions

    metrics = json.loads((results / "metrics.json").read_text())
    runs = metrics["runs"]
    assert runs["n_runs"] == 2 and runs["reference"] == "seed0"
    assert runs["per_run"]["seed0"]["folder"] == "."
    second = json.loads((results / runs["per_run"]["seed1"]["folder"] / "metrics.json").read_text())
    assert second["checkpoint"] == str((models / "runs" / "seed1" / "best.pt").resolve())
    aurocs = [metrics["study"]["overall"]["auroc"], second["study"]["overall"]["auroc"]]
    assert [runs["per_run"][n]["study_auroc"] for n in ("seed0", "seed1")] == aurocs
    spread = runs["summary"]["study_auroc"]
    assert spread["mean"] == pytest.approx(np.mean(aurocs))
    assert spread["sd"] == pytest.approx(np.std(aurocs, ddof=1))
    assert (spread["min"], spread["max"]) == (min(aurocs), max(aurocs))
    all_runs = json.loads((results / "variants" / "all_runs" / "metrics.json").read_text())
    assert runs["ensemble"]["study_auroc"] == all_runs["study"]["overall"]["auroc"]
    assert len(all_runs["model"]["members"]) == 2


def test_manifest_records_the_run(smoke_run):
    _, results = smoke_run
    manifest = json.loads((results / "manifest.json").read_text())
    assert [t["notebook"] for t in manifest["notebooks"]] == list(NOTEBOOKS)
    assert all(t["seconds"] > 0 for t in manifest["notebooks"])
    assert manifest["parameters"]["profile"] == "smoke"
    assert len(manifest["data"]["sha256"]) == 64
    assert {"torch", "papermill"} <= set(manifest["packages"])
    assert manifest["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
