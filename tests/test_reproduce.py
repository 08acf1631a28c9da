"""The notebooks end to end through papermill (smoke profile), stripped sources, failure path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from mura_lib.config import NOTEBOOKS_DIR, PROJ_ROOT, SAMPLE_ROOT
from mura_lib.disk import sha256_file
from mura_lib.errors import ConfigError, MuraError
from mura_lib.reproduce import (
    NOTEBOOKS,
    NotebookFailed,
    load_profile,
    notebook_parameters,
    run_pipeline,
)

needs_sample = pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason="data_sample/ is missing")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke-profile run of the whole pipeline into temporary results/models folders."""
    root = tmp_path_factory.mktemp("reproduce")
    overrides = {"cache_dir": str(root / "cache")}
    results = run_pipeline(
        "smoke",
        overrides=overrides,
        results_root=root / "results",
        models_root=root / "models",
        log_output=False,
    )
    return root, results


@needs_sample
def test_pipeline_writes_every_result(smoke_run):
    root, results = smoke_run
    assert results == root / "results" / "smoke"
    for name in NOTEBOOKS:
        executed = nbformat.read(results / name, as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
        assert (results / name).with_suffix(".html").stat().st_size > 10_000
        assert (results / name).with_suffix(".report.html").is_file()
    figures = {p.name for p in (results / "figures").iterdir()}
    assert {"02_learning_curves.png", "03_roc.png", "03_kappa_per_part.png"} <= figures
    assert any(name.startswith("01_") for name in figures)
    assert (root / "models" / "smoke" / "best.pt").is_file()
    # no staging folder is left behind
    assert not list((root / "results").glob(".staging-*"))


@needs_sample
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


@needs_sample
def test_metrics_json_names_the_published_checkpoint(smoke_run):
    # notebook 03 evaluated the checkpoint in the staging folder, which the swap removes
    root, results = smoke_run
    metrics = json.loads((results / "metrics.json").read_text())
    published = (root / "models" / "smoke" / "best.pt").resolve()
    assert metrics["checkpoint"] == str(published) and published.is_file()


@needs_sample
def test_every_metrics_json_names_published_models_only(smoke_run):
    """The variants' metrics.json (ensemble members, TTA) too: no path into a staging folder."""
    root, results = smoke_run
    files = sorted(results.rglob("metrics.json"))
    # single, single + flip, ensemble, ensemble + flip (keep_top_k 2), study attention and
    # its equal-work control (single fine-tuned)
    assert len(files) == 6
    for path in files:
        assert ".staging-" not in path.read_text(), path
    ensemble = json.loads((results / "variants" / "ensemble" / "metrics.json").read_text())
    for member in ensemble["model"]["members"]:
        assert (root / "models" / "smoke" / "top_k").resolve() in Path(member["path"]).parents
        assert Path(member["path"]).is_file()


@needs_sample
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


@needs_sample
def test_the_study_heads_are_trained_published_and_shown(smoke_run):
    """Notebook 02 fine-tunes the smoke profile's attention head into study/attention/ of the
    published models; notebook 03 draws the attention head's errors with their weights."""
    root, results = smoke_run
    head = root / "models" / "smoke" / "study" / "attention" / "best.pt"
    assert head.is_file()
    summary = json.loads((results / "train_summary.json").read_text())
    assert [row["head"] for row in summary["study_heads"]] == ["image-level", "attention"]
    assert (root / "models" / "smoke" / "study" / "image-level" / "best.pt").is_file()
    variant = json.loads((results / "variants" / "study_attention" / "metrics.json").read_text())
    assert variant["checkpoint"] == str(head.resolve())
    predictions = pd.read_csv(results / "variants" / "study_attention" / "predictions.csv")
    assert np.allclose(predictions.groupby("study_id")["view_weight"].sum(), 1, atol=1e-5)
    assert list((results / "figures").glob("03_attention_*.png"))


@needs_sample
def test_manifest_records_the_run(smoke_run):
    _, results = smoke_run
    manifest = json.loads((results / "manifest.json").read_text())
    assert [t["notebook"] for t in manifest["notebooks"]] == list(NOTEBOOKS)
    assert all(t["seconds"] > 0 for t in manifest["notebooks"])
    assert manifest["parameters"]["profile"] == "smoke"
    assert len(manifest["data"]["sha256"]) == 64
    assert {"torch", "papermill"} <= set(manifest["packages"])
    assert manifest["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()


@needs_sample
def test_failing_notebook_keeps_previous_results(tmp_path):
    previous = tmp_path / "results" / "smoke"
    previous.mkdir(parents=True)
    (previous / "metrics.json").write_text('{"previous": true}')
    # A schedule that can never fire is refused inside notebook 02, after 01 has run.
    overrides = {
        "cache_dir": str(tmp_path / "cache"),
        "plateau_patience": 3,
        "early_stop_patience": 4,
    }
    with pytest.raises(NotebookFailed, match=r"notebook 02_train\.ipynb failed: ConfigError"):
        run_pipeline(
            "smoke",
            overrides=overrides,
            results_root=tmp_path / "results",
            models_root=tmp_path / "models",
            log_output=False,
        )
    assert (previous / "metrics.json").read_text() == '{"previous": true}'
    assert (tmp_path / "results" / ".failed-smoke" / "02_train.ipynb").is_file()
    assert not (tmp_path / "models" / "smoke").exists()


@needs_sample
def test_cli_exits_non_zero_and_names_the_notebook(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mura_lib.reproduce",
            "--profile",
            "smoke",
            "--set",
            "early_stop_patience=1",
            "--set",
            f"cache_dir={tmp_path / 'cache'}",
            "--results-root",
            str(tmp_path / "results"),
            "--models-root",
            str(tmp_path / "models"),
        ],
        capture_output=True,
        text=True,
        cwd=PROJ_ROOT,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "02_train.ipynb failed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_profile_and_missing_data_are_clear():
    with pytest.raises(ConfigError, match="no profile 'nope'.*profiles: .*sample"):
        load_profile("nope")
    with pytest.raises(ConfigError, match="DATA=/path/to/MURA-v1.1"):
        load_profile("mura")
    assert load_profile("mura", data="/data/MURA-v1.1")["data_root"].endswith("MURA-v1.1")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_source_notebooks_are_stripped(name):
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{name} holds outputs: run nbstripout"
            assert cell.get("execution_count") is None, f"{name} holds execution counts"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_have_one_flat_parameters_cell(name):
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        assert " = " in line and "#" in line, f"{name}: not a commented literal: {line!r}"


def test_papermill_sees_every_parameter_of_every_notebook():
    """A comment holding "=" (``GPUS=N``) made papermill skip its line with a warning only:
    the parameter was then "not a parameter of any notebook" and ``make reproduce GPUS=4``
    or a profile naming it was refused."""
    declared = notebook_parameters(NOTEBOOKS_DIR)
    for name in NOTEBOOKS:
        notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
        [cell] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assigned = {line.split(" = ", 1)[0] for line in cell.source.splitlines()}
        assert assigned == declared[name], f"{name}: papermill misses {assigned - declared[name]}"
    every = set().union(*declared.values())
    for profile in ("sample", "smoke", "mura", "paper"):
        assert set(load_profile(profile, data="/data/MURA-v1.1")) <= every, profile
    assert "gpus" in every


def test_a_misspelt_parameter_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"\['epochz'\] of profile 'smoke' are not parameters"):
        run_pipeline(
            "smoke",
            overrides={"epochz": 3},
            results_root=tmp_path / "results",
            models_root=tmp_path / "models",
            log_output=False,
        )
    assert not (tmp_path / "results").exists()


@needs_sample
def test_a_crash_between_the_two_publishing_steps_is_completed_by_the_next_run(
    tmp_path, monkeypatch
):
    """New models must never stay beside old results: the journal finishes the swap."""
    import mura_lib.reproduce as reproduce

    root = {"results_root": tmp_path / "results", "models_root": tmp_path / "models"}
    old_results = root["results_root"] / "smoke"
    old_results.mkdir(parents=True)
    (old_results / "manifest.json").write_text('{"old": true}')
    real_replace = reproduce._replace_dir
    calls = []

    def crash_on_the_second(new, final):
        calls.append(final)
        if len(calls) == 2:
            raise RuntimeError("the machine went down between the two renames")
        real_replace(new, final)

    monkeypatch.setattr(reproduce, "_replace_dir", crash_on_the_second)
    overrides = {"cache_dir": str(tmp_path / "cache"), "compare_variants": False}
    with pytest.raises(RuntimeError, match="went down"):
        run_pipeline("smoke", overrides=overrides, log_output=False, **root)
    monkeypatch.undo()
    journal = root["results_root"] / ".publishing-smoke.json"
    assert journal.is_file() and (root["models_root"] / "smoke" / "best.pt").is_file()
    assert json.loads((old_results / "manifest.json").read_text()) == {"old": True}

    assert reproduce._finish_publishing(journal)  # what the next run does first
    assert not journal.exists()
    manifest = json.loads((root["results_root"] / "smoke" / "manifest.json").read_text())
    models = root["models_root"] / "smoke"
    for name, digest in manifest["models"]["sha256"].items():
        assert sha256_file(models / name) == digest, name  # results and models belong together
    assert "best.pt" in manifest["models"]["sha256"]


def test_a_run_completes_an_interrupted_publication_before_anything_else(tmp_path):
    results_root, models_root = tmp_path / "results", tmp_path / "models"
    staged, final = results_root / ".staging-smoke", results_root / "smoke"
    staged.mkdir(parents=True)
    (staged / "manifest.json").write_text("new")
    journal = results_root / ".publishing-smoke.json"
    journal.write_text(json.dumps([[str(staged), str(final)]]))
    with pytest.raises(MuraError):  # the run itself stops at its wrong data folder
        run_pipeline(
            "smoke",
            overrides={"data_root": str(tmp_path / "nowhere")},
            results_root=results_root,
            models_root=models_root,
            log_output=False,
        )
    assert (final / "manifest.json").read_text() == "new" and not journal.exists()
