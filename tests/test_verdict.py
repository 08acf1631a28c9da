"""The verdict that ends `make reproduce`: committed against this run, figure by figure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mura_lib.verdict import committed_results, judge, render

CPU = {"model_name": "AMD EPYC", "family_model": "25/1", "capability": "AVX2"}


def _write_results(folder: Path, auroc: float = 0.80, kappa: float = 0.48, cpu: dict = CPU):
    """A results/<profile> folder with the model, one variant and a manifest."""

    def metrics(a: float, k: float) -> dict:
        ci = {"auroc": [0.72, 0.88], "kappa": [0.34, 0.62]}
        return {"study": {"overall": {"auroc": a, "kappa": k, "ci": ci}}}

    (folder / "variants" / "ensemble").mkdir(parents=True, exist_ok=True)
    top = metrics(auroc, kappa)
    top["comparison"] = {"variants": {"ensemble": {"folder": "variants/ensemble"}}}
    (folder / "metrics.json").write_text(json.dumps(top))
    (folder / "variants" / "ensemble" / "metrics.json").write_text(json.dumps(metrics(0.81, 0.5)))
    manifest = {"cpu": cpu, "cpu_numerics": {"pinned": True}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _verdict_lines(tmp_path: Path, **run) -> list[str]:
    """The verdict of a run (``run``: its figures) against committed results written before."""
    results = tmp_path / "results" / "sample"
    _write_results(results)
    committed = committed_results(results)  # read before the run replaces them
    shutil.rmtree(results)
    _write_results(results, **run)
    return render(committed, results).splitlines()


def test_identical_results_are_identical_rows(tmp_path):
    lines = _verdict_lines(tmp_path)
    assert "committed" in lines[0] and "not a git checkout" in lines[0]
    rows = [line for line in lines if line.lstrip().startswith(("single", "ensemble"))]
    assert len(rows) == 4 and all(row.endswith("identical") for row in rows)
    assert "every figure identical" in lines[-3]


@pytest.mark.parametrize(
    ("auroc", "expected"),
    [
        (0.85, "+0.0500, inside the committed 95 % CI [0.7200, 0.8800]"),
        (0.70, "-0.1000, OUTSIDE the committed 95 % CI [0.7200, 0.8800]"),
        (0.80 + 3e-7, "+3.0e-07, inside the committed 95 % CI [0.7200, 0.8800]"),
    ],
)
def test_a_difference_says_where_it_lies(tmp_path, auroc, expected):
    lines = _verdict_lines(tmp_path, auroc=auroc)
    (row,) = [line for line in lines if line.lstrip().startswith("single") and "AUROC" in line]
    assert row.endswith(expected)
    assert "1 of 4 figures differ" in lines[-3]


def test_the_cpu_kinds_of_both_runs_are_shown(tmp_path):
    intel = {"model_name": "Intel Xeon", "family_model": "6/143", "capability": "AVX512"}
    lines = _verdict_lines(tmp_path, cpu=intel)
    assert lines[-2] == "  CPU, committed: AMD EPYC (family/model 25/1, AVX2, pinned to AVX2)"
    assert lines[-1] == "  CPU, this run:  Intel Xeon (family/model 6/143, AVX512, pinned to AVX2)"


def test_no_committed_results_is_one_line(tmp_path):
    verdict = render(committed_results(tmp_path / "results" / "new"), tmp_path / "results" / "new")
    assert verdict.count("\n") == 0
    assert verdict.startswith("[reproduce] verdict: no committed results for profile 'new'")


def test_judge_handles_missing_and_undefined_figures():
    assert judge(None, (0.5, None)) == "not in the committed results"
    assert judge((0.5, [0.4, 0.6]), None) == "not in this run"
    assert judge((None, None), (None, None)) == "identical"
    assert judge((None, None), (0.5, None)) == "undefined in one run"


def test_in_a_git_checkout_committed_means_head(tmp_path):
    """Not the files in the tree: a run that replaced them is judged against HEAD."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    results = tmp_path / "results" / "sample"
    _write_results(results)

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", "results")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "results")
    _write_results(results, kappa=0.40)  # this run's, not committed
    committed = committed_results(results)
    lines = render(committed, results).splitlines()
    assert "git HEAD" in lines[0] and "results/sample" in lines[0]
    (row,) = [line for line in lines if line.lstrip().startswith("single") and "kappa" in line]
    assert row.endswith("-0.0800, inside the committed 95 % CI [0.3400, 0.6200]")
    missing = committed_results(tmp_path / "results" / "smoke")
    assert missing.startswith("no committed results for profile 'smoke': nothing in git HEAD ")
