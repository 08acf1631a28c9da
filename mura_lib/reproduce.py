"""`make reproduce`: run the notebooks in order with papermill and publish their results.

For a profile (``params/<profile>.yaml``) the three notebooks are executed headlessly into a
staging folder (``results/.staging-<profile>``, models in ``models/.staging-<profile>``),
rendered to HTML, and described by a run manifest that names every model file with its SHA-256.
Only when every notebook succeeded are the staging folders renamed into place, models first,
then results: a failing or interrupted run never half-overwrites the results of the last good
one, and its executed copy is kept in ``results/.failed-<profile>`` for inspection. A crash
between the two renames leaves new models beside the old results' manifest: the next run says
so before it replaces both, and :func:`~mura_lib.publication.check_publication` (for whatever
reads published results) refuses them in one line that says what to do.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import yaml
from traitlets.config import Config

from mura_lib.config import (
    MODELS_DIR,
    NOTEBOOKS_DIR,
    PARAMS_DIR,
    RESULTS_DIR,
    STAGING_PREFIX,
    project_relative,
    published_path,
    run_paths,
)
from mura_lib.disk import sha256_file, write_text_atomic
from mura_lib.errors import BusyError, ConfigError, MuraError
from mura_lib.locks import exclusive_lock
from mura_lib.numerics import cpu_numerics, pinned_cpu_numerics
from mura_lib.provenance import cpu_state, git_state, lock_drift, lock_warning
from mura_lib.publication import publication_problem
from mura_lib.verdict import committed_results, render

NOTEBOOKS = ("01_eda.ipynb", "02_train.ipynb", "03_error_analysis.ipynb")
KERNEL = "mura"  # registered in the venv by `make setup`
PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "Pillow", "papermill")


class NotebookFailed(MuraError):
    """A notebook raised; the previous results were left in place."""


def load_profile(profile: str, data: str | None = None, params_dir: Path = PARAMS_DIR) -> dict:
    """The parameters of ``params/<profile>.yaml``, with ``data`` overriding ``data_root``.

    ``extends: <other profile>`` takes the other profile's parameters and changes those named
    beside it (one level: the other profile extends none).
    """
    params = _read_profile(profile, params_dir)
    base = params.pop("extends", None)
    if base is not None:
        inherited = _read_profile(str(base), params_dir)
        if "extends" in inherited:
            raise ConfigError(
                f"profile {profile!r} extends {base!r}, which extends another profile: "
                "name its parameters instead"
            )
        params = {**inherited, **params}
    params["profile"] = profile
    if data:
        params["data_root"] = str(Path(data).expanduser().resolve())
    if params.get("data_root", "") is None:
        raise ConfigError(
            f"profile {profile!r} needs the data set: make reproduce PROFILE={profile} "
            "DATA=/path/to/MURA-v1.1 (see README: Running on the real MURA)"
        )
    return params


def _read_profile(profile: str, params_dir: Path) -> dict:
    path = params_dir / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in params_dir.glob("*.yaml"))
        raise ConfigError(f"no profile {profile!r}: {path} does not exist; profiles: {known}")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must be a mapping of parameter names to values")
    return params


def data_fingerprint(data_root: str | Path, labels: Path | None = None) -> dict:
    """A digest of the data set's index: relative paths, labels (those of the ``labels``
    folder when given, recorded as such) and file sizes."""
    from mura_lib.data import scan_mura

    index = scan_mura(data_root, labels=labels)
    frame = index.frame
    digest = hashlib.sha256()
    for rel, label, path in zip(frame["rel_path"], frame["label"], frame["path"], strict=True):
        digest.update(f"{rel},{label},{os.path.getsize(path)}\n".encode())
    return {
        "n_images": len(frame),
        "n_studies": int(frame["study_id"].nunique()),
        "sha256": digest.hexdigest(),
        "labels": index.labels,
    }


def run_pipeline(
    profile: str = "sample",
    data: str | None = None,
    *,
    overrides: dict | None = None,
    results_root: Path = RESULTS_DIR,
    models_root: Path = MODELS_DIR,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    params_dir: Path = PARAMS_DIR,
    kernel: str = KERNEL,
    log_output: bool = True,
) -> Path:
    """Execute the notebooks for ``profile`` and publish results/<profile>; return its path.

    One run of a profile at a time: the profile's lock is held from the removal of a stale
    staging folder to the publication, so only its holder ever removes one.
    """
    params = {**load_profile(profile, data, params_dir), **(overrides or {})}
    drift = lock_warning()
    if drift:
        print(f"[reproduce] warning: {drift}", file=sys.stderr, flush=True)
    declared = notebook_parameters(notebooks_dir)
    unknown = sorted(set(params) - set().union(*declared.values()))
    if unknown:
        raise ConfigError(
            f"parameter(s) {unknown} of profile {profile!r} are not parameters of any notebook "
            "(a typo?); each notebook's parameters cell lists the names it takes"
        )
    # The CPU numerics are pinned for the whole run (unless it is a GPU run): the notebooks'
    # kernels inherit this process's environment.
    with (
        exclusive_lock(
            results_root / f".lock-{profile}",
            f"the reproduce profile {profile!r}",
            "wait for that run to finish or stop it (JupyterLab, another terminal)",
        ),
        pinned_cpu_numerics(str(params.get("device", "auto"))),
    ):
        return _run_locked(
            profile, params, declared, results_root, models_root, notebooks_dir, kernel, log_output
        )


def _run_locked(
    profile: str,
    params: dict,
    declared: dict[str, set[str]],
    results_root: Path,
    models_root: Path,
    notebooks_dir: Path,
    kernel: str,
    log_output: bool,
) -> Path:
    """run_pipeline() once the profile's lock is held."""
    final_results, final_models = results_root / profile, models_root / profile
    staging_results = results_root / f"{STAGING_PREFIX}{profile}"
    staging_models = models_root / f"{STAGING_PREFIX}{profile}"
    _recover_replaced([final_models, final_results])
    problem = publication_problem(final_results)
    if problem:
        print(f"[reproduce] note: {problem}; this run replaces both", flush=True)
    for stale in (staging_results, staging_models):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    paths = run_paths(profile, params.get("data_root", ""), labels=params.get("labels", ""))
    # also stops early on a wrong data or label folder
    data_info = data_fingerprint(paths.data_root, paths.labels)
    staging_results.mkdir(parents=True)
    params.update(
        results_dir=project_relative(staging_results), models_dir=project_relative(staging_models)
    )

    # One line per epoch in papermill's log, no bars (the kernels inherit this environment).
    previous_progress = os.environ.get("MURA_PROGRESS")
    os.environ["MURA_PROGRESS"] = "log"
    started = datetime.now(timezone.utc)
    try:
        timings = _run_notebooks(
            profile,
            params,
            declared,
            notebooks_dir,
            staging_results,
            results_root,
            kernel,
            log_output,
        )
    except BaseException:  # a failed notebook, or Ctrl-C wherever it landed: keep the evidence
        _keep_failed(staging_results, staging_models, results_root / f".failed-{profile}")
        raise
    finally:
        if previous_progress is None:
            os.environ.pop("MURA_PROGRESS", None)
        else:
            os.environ["MURA_PROGRESS"] = previous_progress

    manifest = {
        "profile": profile,
        "git": git_state(),
        "started_utc": started.isoformat(timespec="seconds"),
        "total_seconds": round(sum(t["seconds"] for t in timings), 1),
        "notebooks": timings,
        "parameters": {k: v for k, v in params.items() if k not in ("results_dir", "models_dir")},
        "data": {"root": project_relative(paths.data_root), **data_info},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_state(),
        "cpu_numerics": cpu_numerics(),  # what the notebooks' kernels inherited
        "packages": {p: importlib.metadata.version(p) for p in PACKAGES},
        "lock_drift": [list(row) for row in lock_drift()],  # [] when installed as locked
        "models": {  # the files these results were made with, as published
            "folder": project_relative(final_models),
            "sha256": _model_hashes(staging_models),
        },
    }
    text = json.dumps(manifest, indent=2) + "\n"
    write_text_atomic(staging_results / "manifest.json", text, "the run manifest")
    _publish([(staging_models, final_models), (staging_results, final_results)])
    print(
        f"[reproduce] {profile}: results in {project_relative(final_results)} "
        f"({manifest['total_seconds']:.0f} s)",
        flush=True,
    )
    return final_results


def notebook_parameters(notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, set[str]]:
    """The names each notebook's ``parameters`` cell declares."""
    import papermill

    return {name: set(papermill.inspect_notebook(notebooks_dir / name)) for name in NOTEBOOKS}


def _run_notebooks(
    profile: str,
    params: dict,
    declared: dict[str, set[str]],
    notebooks_dir: Path,
    staging_results: Path,
    results_root: Path,
    kernel: str,
    log_output: bool,
) -> list[dict]:
    """Execute the notebooks in order into the staging folder (the caller keeps it on failure)."""
    import papermill

    failed, final_results = results_root / f".failed-{profile}", results_root / profile
    timings = []
    for name in NOTEBOOKS:
        print(f"[reproduce] {profile}: running {name}", flush=True)
        tic = time.perf_counter()
        executed = staging_results / name
        try:
            papermill.execute_notebook(
                notebooks_dir / name,
                executed,
                parameters={k: v for k, v in params.items() if k in declared[name]},
                kernel_name=kernel,
                # cell prints (one line per epoch) go straight to our console
                stdout_file=sys.stdout if log_output else None,
                stderr_file=sys.stderr if log_output else None,
                progress_bar=False,
                cwd=str(notebooks_dir),
                config=_kernel_config(),
            )
        except papermill.PapermillExecutionError as err:
            if err.ename == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
                raise KeyboardInterrupt from None
            raise NotebookFailed(
                f"notebook {name} failed: {err.ename}: {err.evalue}\n"
                f"  the executed copy with the error is in {failed / name}\n"
                f"  {final_results} was left unchanged"
            ) from None
        seconds = time.perf_counter() - tic
        timings.append({"notebook": name, "seconds": round(seconds, 1)})
        _finish(executed)
        print(f"[reproduce] {profile}: {name} done in {seconds:.0f} s", flush=True)

    return timings


def _kernel_config() -> Config:
    """The kernels' transport: CurveZMQ-encrypted where pyzmq has it, which is also what
    spares each notebook ipykernel's warning about plain-text TCP."""
    import zmq

    if not zmq.has("curve"):
        return Config()
    return Config({"KernelManager": {"transport_encryption": "auto"}})


def _finish(executed: Path) -> None:
    """Name the notebook's paths in papermill's record as they are published, relative to the
    project (the same in every clone), and write NAME.html (with code) and NAME.report.html
    (code hidden) beside it."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    record = nb.metadata.papermill
    record.input_path = project_relative(record.input_path)
    record.output_path = published_path(record.output_path)
    nbformat.write(nb, executed)
    full, _ = HTMLExporter().from_notebook_node(nb)
    report, _ = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    ).from_notebook_node(nb)
    executed.with_suffix(".html").write_text(full)
    executed.with_suffix(".report.html").write_text(report)


def _publish(swaps: list[tuple[Path, Path]]) -> None:
    """Rename each staged folder into place, in order (models, then results); the folders
    they replace are removed only once all are in place, so that nothing slow runs between
    the renames. A crash between two swaps is what :func:`publication_problem` detects; one
    within a swap, :func:`_recover_replaced` mends at the start of the next run."""
    for new, final in swaps:
        if final.exists():
            final.rename(_replaced(final))
        new.rename(final)
    for _, final in swaps:
        shutil.rmtree(_replaced(final), ignore_errors=True)


def _replaced(final: Path) -> Path:
    return final.with_name(f".old-{final.name}")


def _recover_replaced(finals: list[Path]) -> None:
    """A folder that publishing moved aside and a crash left behind: put back when its
    replacement was never renamed in (the last published folder rather than none), removed
    otherwise."""
    for final in finals:
        if _replaced(final).is_dir() and not final.exists():
            _replaced(final).rename(final)
        shutil.rmtree(_replaced(final), ignore_errors=True)


def _model_hashes(models: Path) -> dict[str, str]:
    """SHA-256 of every model file of a run (checkpoints, the ensemble manifest)."""
    files = sorted(p for p in models.rglob("*") if p.suffix in (".pt", ".json"))
    return {str(p.relative_to(models)): sha256_file(p) for p in files}


def _keep_failed(staging_results: Path, staging_models: Path, failed: Path) -> None:
    """Move the staged results to ``failed`` (replacing an older failure); drop the staged
    models."""
    if staging_results.exists():
        shutil.rmtree(failed, ignore_errors=True)
        staging_results.rename(failed)
    shutil.rmtree(staging_models, ignore_errors=True)


def _parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mura_lib.reproduce", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--profile", default="sample", help="params/<profile>.yaml")
    parser.add_argument("--data", help="the MURA-v1.1 folder (or its parent) for this run")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_parse_override,
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter of the profile (repeatable)",
    )
    parser.add_argument("--results-root", type=Path, default=RESULTS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--models-root", type=Path, default=MODELS_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Read before the run replaces them (when results/ is not in a git checkout).
    committed = committed_results(args.results_root / args.profile)
    try:
        results = run_pipeline(
            args.profile,
            args.data,
            overrides=dict(args.overrides),
            results_root=args.results_root,
            models_root=args.models_root,
        )
    except BusyError as err:  # like the command line's user errors: status 2
        print(f"[reproduce] error: {err}", file=sys.stderr)
        return 2
    except MuraError as err:
        print(f"[reproduce] error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        failed = args.results_root / f".failed-{args.profile}"
        kept = f"; the partial run is in {failed}" if failed.exists() else ""
        print(
            f"[reproduce] interrupted: results/{args.profile} was left unchanged{kept}",
            file=sys.stderr,
        )
        return 130
    print(render(committed, results), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
