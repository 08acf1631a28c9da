"""`make reproduce` around the notebooks: profiles, parameters, failures, publishing.

The notebooks themselves run end to end in tests/test_notebooks.py. Here they are replaced by
stand-ins (``stand_in_notebooks``: the real parameters cells, one trivial cell each) or the
whole execution by a function that writes a staged run, so that each guarantee of the
pipeline costs a kernel start at most.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import nbformat
import pytest

from mura_lib import reproduce
from mura_lib.config import (
    MODELS_DIR,
    NOTEBOOKS_DIR,
    PARAMS_DIR,
    RESULTS_DIR,
    from_root,
    published_path,
)
from mura_lib.disk import sha256_file
from mura_lib.errors import ConfigError, MuraError
from mura_lib.evaluation.compare import read_evaluation
from mura_lib.publication import check_publication, publication_problem
from mura_lib.reproduce import NOTEBOOKS, load_profile, notebook_parameters, run_pipeline


def test_unknown_profile_and_missing_data_are_clear():
    with pytest.raises(ConfigError, match="no profile 'nope'.*profiles: .*sample"):
        load_profile("nope")
    with pytest.raises(ConfigError, match="DATA=/path/to/MURA-v1.1"):
        load_profile("mura")
    assert load_profile("mura", data="/data/MURA-v1.1")["data_root"].endswith("MURA-v1.1")


def test_a_profile_extends_another(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 24\nlr: 0.002\n")
    (tmp_path / "runs.yaml").write_text("extends: base\nseeds: [0, 1, 2]\nlr: 0.001\n")
    (tmp_path / "deep.yaml").write_text("extends: runs\n")
    params = load_profile("runs", params_dir=tmp_path)
    assert params == {"epochs": 24, "lr": 0.001, "seeds": [0, 1, 2], "profile": "runs"}
    with pytest.raises(ConfigError, match="'runs', which extends another profile"):
        load_profile("deep", params_dir=tmp_path)
    assert load_profile("sample-runs")["seeds"] == [0, 1, 2]
    assert load_profile("sample-runs")["epochs"] == load_profile("sample")["epochs"]


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
    for profile in (p.stem for p in PARAMS_DIR.glob("*.yaml")):
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


def test_a_failing_notebook_is_one_line_and_keeps_the_previous_results(
    tmp_path, mura_tree, stand_in_notebooks, monkeypatch, capsys
):
    previous = tmp_path / "results" / "smoke"
    previous.mkdir(parents=True)
    (previous / "metrics.json").write_text('{"previous": true}')
    refuse = (
        "from mura_lib.errors import ConfigError\nraise ConfigError('a schedule that never fires')"
    )
    notebooks = stand_in_notebooks(train=refuse)
    monkeypatch.setattr(
        reproduce, "run_pipeline", functools.partial(run_pipeline, notebooks_dir=notebooks)
    )
    argv = ["--profile", "smoke", "--set", f"data_root={mura_tree}"]
    argv += ["--results-root", str(tmp_path / "results"), "--models-root", str(tmp_path / "models")]
    assert reproduce.main(argv) == 1
    err = capsys.readouterr().err
    assert "[reproduce] error: notebook 02_train.ipynb failed: ConfigError: a schedule" in err
    assert "Traceback" not in err
    assert (previous / "metrics.json").read_text() == '{"previous": true}'
    assert (tmp_path / "results" / ".failed-smoke" / "02_train.ipynb").is_file()
    assert not (tmp_path / "models" / "smoke").exists()
    assert not list((tmp_path / "models").glob(".staging-*"))


def staged_run(seed: int):
    """A stand-in for the notebooks' execution: it writes what they would into the staging
    folders (a model, a metrics.json naming it) without starting a kernel."""

    def run_notebooks(profile, params, declared, notebooks_dir, results, *args):
        models = from_root(params["models_dir"])  # where notebook 02 writes them
        models.mkdir(parents=True)
        (models / "best.pt").write_text(f"weights of seed {seed}")
        (results / "metrics.json").write_text(
            json.dumps({"checkpoint": published_path(models / "best.pt")})
        )
        return [{"notebook": name, "seconds": 0.1} for name in NOTEBOOKS]

    return run_notebooks


def test_publishing_renames_the_staged_run_into_place(tmp_path, mura_tree, monkeypatch):
    roots = {"results_root": tmp_path / "results", "models_root": tmp_path / "models"}
    monkeypatch.setattr(reproduce, "_run_notebooks", staged_run(seed=1))
    results = run_pipeline("smoke", overrides={"data_root": str(mura_tree)}, **roots)
    models = tmp_path / "models" / "smoke"
    assert results == tmp_path / "results" / "smoke"
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["checkpoint"] == str((models / "best.pt").resolve())  # named as published
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["models"]["sha256"] == {"best.pt": sha256_file(models / "best.pt")}
    assert publication_problem(results) is None
    leftovers = [p.name for root in roots.values() for p in root.iterdir() if p.name[0] == "."]
    assert leftovers == [".lock-smoke"]  # no staging folder, no replaced folder


@pytest.mark.parametrize(
    "crash_when_renaming",
    ["smoke", ".staging-smoke"],
    ids=["between-models-and-results", "within-the-results-swap"],
)
def test_a_crash_while_publishing_is_detected_and_mended(
    tmp_path, mura_tree, monkeypatch, capsys, crash_when_renaming
):
    """Models are published first, then the results whose manifest names them. A crash in
    between leaves new models beside old results, which every reader of the results detects;
    one within the results' swap (old results moved aside, new ones not yet in) is undone by
    the next run. That run says so, and replaces both."""
    roots = {"results_root": tmp_path / "results", "models_root": tmp_path / "models"}
    overrides = {"data_root": str(mura_tree)}
    monkeypatch.setattr(reproduce, "_run_notebooks", staged_run(seed=1))
    results = run_pipeline("smoke", overrides=overrides, **roots)
    old_manifest = (results / "manifest.json").read_text()

    real_rename = Path.rename

    def crash(self, target):
        if self.parent == roots["results_root"] and self.name == crash_when_renaming:
            raise RuntimeError("the machine went down while publishing")
        return real_rename(self, target)

    monkeypatch.setattr(reproduce, "_run_notebooks", staged_run(seed=2))
    monkeypatch.setattr(Path, "rename", crash)
    with pytest.raises(RuntimeError, match="went down"):
        run_pipeline("smoke", overrides=overrides, **roots)
    monkeypatch.setattr(Path, "rename", real_rename)
    models = tmp_path / "models" / "smoke"
    assert (models / "best.pt").read_text() == "weights of seed 2"  # the new models
    if crash_when_renaming == "smoke":  # ... beside the old results
        assert (results / "manifest.json").read_text() == old_manifest
        with pytest.raises(MuraError) as info:
            check_publication(results)
        message = str(info.value)
        assert (
            f"{results} were not made with the models in {models} (best.pt is changed)" in message
        )
        assert message.endswith("run `make reproduce PROFILE=smoke` to make both again")
        assert "\n" not in message
    else:  # ... and the old results moved aside
        assert not results.exists()

    capsys.readouterr()
    monkeypatch.setattr(reproduce, "_run_notebooks", staged_run(seed=3))
    run_pipeline("smoke", overrides=overrides, **roots)
    out = capsys.readouterr().out
    assert "(best.pt is changed): a run stopped while publishing them" in out
    assert "this run replaces both" in out
    check_publication(results)
    assert (models / "best.pt").read_text() == "weights of seed 3"
    assert sorted(p.name for p in tmp_path.joinpath("results").iterdir()) == [
        ".lock-smoke",
        "smoke",
    ]


def test_results_without_their_models_or_manifest_are_not_judged(tmp_path):
    results = tmp_path / "results" / "sample"
    results.mkdir(parents=True)
    assert publication_problem(results) is None  # notebooks run by hand: no run manifest
    manifest = {"models": {"folder": str(tmp_path / "models" / "sample"), "sha256": {"a.pt": ""}}}
    (results / "manifest.json").write_text(json.dumps(manifest))
    assert publication_problem(results) is None  # a fresh clone: models/ is not committed
    (results / "manifest.json").write_text("{")
    assert publication_problem(results) == (
        f"{results / 'manifest.json'} is not a run manifest of `make reproduce`"
    )


def test_compare_refuses_results_whose_models_changed(tmp_path):
    models, results = tmp_path / "models" / "sample", tmp_path / "results" / "sample"
    models.mkdir(parents=True)
    results.mkdir(parents=True)
    (models / "best.pt").write_bytes(b"retrained")
    manifest = {"models": {"folder": str(models), "sha256": {"best.pt": "0" * 64}}}
    (results / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MuraError, match=r"best.pt is changed\): .*make reproduce PROFILE=sample"):
        read_evaluation(results)


def test_results_name_files_where_they_are_published():
    staged = MODELS_DIR / ".staging-sample" / "top_k" / "epoch-003.pt"
    assert published_path(staged) == "models/sample/top_k/epoch-003.pt"  # no absolute path
    assert published_path("/data/MURA-v1.1/valid") == "/data/MURA-v1.1/valid"


# an absolute path of two or more folders, where a word or a quoted string may start
_ABSOLUTE_PATH = re.compile(r"""(?:^|[\s"'(=])(/(?:[\w.-]+/)+[\w.-]*)""", re.MULTILINE)


def _texts(node):
    """Every string of a parsed JSON document, images (base64 PNG) and a notebook's cell
    sources (its text, e.g. the example ``/path/to/MURA-v1.1``) left out."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not key.startswith("image/") and key != "source":
                yield from _texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _texts(value)
    elif isinstance(node, str):
        yield node


def test_the_committed_results_hold_no_path_of_the_clone_that_made_them():
    """They are committed and compared across clones: every path in them is relative to the
    project (metrics.json, manifests, CSVs and the executed notebooks alike)."""
    committed = [p for p in RESULTS_DIR.glob("*/**/*") if p.suffix in {".json", ".ipynb", ".csv"}]
    assert any(p.name == "metrics.json" for p in committed)
    for path in committed:
        text = path.read_text()
        texts = _texts(json.loads(text)) if path.suffix != ".csv" else [text]
        found = [m for t in texts for m in _ABSOLUTE_PATH.findall(t)]
        assert not found, f"{path.relative_to(RESULTS_DIR)}: {found[:3]}"


def test_a_run_logs_no_kernel_warning_pins_its_kernels_and_ends_with_a_verdict(
    tmp_path, mura_tree, stand_in_notebooks, monkeypatch, capfd
):
    """The kernels start encrypted (ipykernel's plain-TCP warning is no news for a reader),
    inherit the pinned CPU numerics, and a profile never committed gets a one-line verdict."""
    from mura_lib import numerics

    show = "import os; print('MKL_CBWR', os.environ.get('MKL_CBWR'))"
    publish = "from mura_lib.config import from_root; from_root(models_dir).mkdir(parents=True)"
    notebooks = stand_in_notebooks(eda=show, train=publish)
    monkeypatch.setattr(
        reproduce, "run_pipeline", functools.partial(run_pipeline, notebooks_dir=notebooks)
    )
    argv = ["--profile", "smoke", "--set", f"data_root={mura_tree}", "--set", "device=cpu"]
    argv += ["--results-root", str(tmp_path / "results"), "--models-root", str(tmp_path / "models")]
    assert reproduce.main(argv) == 0
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err
    pinned = numerics.cpu_has_avx2() and numerics.SWITCH not in reproduce.os.environ
    if pinned:
        expected = reproduce.os.environ.get("MKL_CBWR", numerics.PINNED["MKL_CBWR"])
        assert f"MKL_CBWR {expected}" in out
    manifest = json.loads((tmp_path / "results" / "smoke" / "manifest.json").read_text())
    assert set(manifest["cpu_numerics"]) == {"pinned", *numerics.PINNED}
    assert out.rstrip().splitlines()[-1] == (
        "[reproduce] verdict: no committed results for profile 'smoke': nothing in "
        f"{tmp_path / 'results' / 'smoke'} as it was before this run (not a git checkout)"
    )
