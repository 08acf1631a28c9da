"""`make reproduce`: run the notebooks in order with papermill and publish their results.

For a profile (``params/<profile>.yaml``) the three notebooks are executed headlessly into a
staging folder (``results/.staging-<profile>``, models in ``models/.staging-<profile>``),
rendered to HTML, and described by a run manifest. Only when every notebook succeeded are the
staging folders swapped in as ``results/<profile>`` and ``models/<profile>``: a failing or
interrupted run never half-overwrites the results of the last good one. The executed copy of
a failed run is kept in ``results/.failed-<profile>`` for inspection.
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

from mura_lib.config import MODELS_DIR, NOTEBOOKS_DIR, PARAMS_DIR, PROJ_ROOT, RESULTS_DIR, run_paths
from mura_lib.disk import sha256_file
from mura_lib.errors import BusyError, ConfigError, MuraError
from mura_lib.locks import exclusive_lock
from mura_lib.provenance import cpu_state, git_state, lock_drift, lock_warning

NOTEBOOKS = ("01_eda.ipynb", "02_train.ipynb", "03_error_analysis.ipynb")
KERNEL = "mura"  # registered in the venv by `make setup`
PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "Pillow", "papermill")


class NotebookFailed(MuraError):
    """A notebook raised; the previous results were left in place."""


def load_profile(profile: str, data: str | None = None, params_dir: Path = PARAMS_DIR) -> dict:
    """The parameters of ``params/<profile>.yaml``, with ``data`` overriding ``data_root``."""
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
    params["profile"] = profile
    if data:
        params["data_root"] = str(Path(data).expanduser().resolve())
    if params.get("data_root", "") is None:
        raise ConfigError(
            f"profile {profile!r} needs the data set: make reproduce PROFILE={profile} "
            "DATA=/path/to/MURA-v1.1 (see README: getting MURA)"
        )
    return params


def data_fingerprint(data_root: str | Path) -> dict:
    """A digest of the data set's index: relative paths, labels and file sizes."""
    from mura_lib.data import read_mura

    frame = read_mura(data_root)
    digest = hashlib.sha256()
    for rel, label, path in zip(frame["rel_path"], frame["label"], frame["path"], strict=True):
        digest.update(f"{rel},{label},{os.path.getsize(path)}\n".encode())
    return {
        "n_images": len(frame),
        "n_studies": int(frame["study_id"].nunique()),
        "sha256": digest.hexdigest(),
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
    with exclusive_lock(
        results_root / f".lock-{profile}",
        f"the reproduce profile {profile!r}",
        "wait for that run to finish or stop it (JupyterLab, another terminal)",
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
    staging_results = results_root / f".staging-{profile}"
    staging_models = models_root / f".staging-{profile}"
    _finish_publishing(_journal(results_root, profile))  # before the staging is touched
    for stale in (staging_results, staging_models):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    paths = run_paths(profile, params.get("data_root", ""))
    data_info = data_fingerprint(paths.data_root)  # also stops early on a wrong data folder
    staging_results.mkdir(parents=True)
    params.update(results_dir=_relative(staging_results), models_dir=_relative(staging_models))

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
            staging_models,
            results_root,
            kernel,
            log_output,
        )
    except KeyboardInterrupt:  # wherever Ctrl-C landed, keep the evidence as a failure does
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
        "data": {"root": _relative(paths.data_root), **data_info},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_state(),
        "packages": {p: importlib.metadata.version(p) for p in PACKAGES},
        "lock_drift": [list(row) for row in lock_drift()],  # [] when installed as locked
    }
    manifest["models"] = {  # the files these results were made with, as published
        "folder": _relative(final_models),
        "sha256": _model_hashes(staging_models),
    }
    (staging_results / "manifest.json").write_text(_to_json(manifest))
    _point_at_published_models(staging_results, staging_models, final_models)
    _publish(
        [(staging_models, final_models), (staging_results, final_results)],
        _journal(results_root, profile),
    )
    print(
        f"[reproduce] {profile}: results in {_relative(final_results)} "
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
    staging_models: Path,
    results_root: Path,
    kernel: str,
    log_output: bool,
) -> list[dict]:
    """Execute the notebooks in order into the staging folder; on failure keep the evidence."""
    import papermill

    final_results = results_root / profile
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
            )
        except papermill.PapermillExecutionError as err:
            if err.ename == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
                _keep_failed(staging_results, staging_models, results_root / f".failed-{profile}")
                raise KeyboardInterrupt from None
            failed = _keep_failed(
                staging_results, staging_models, results_root / f".failed-{profile}"
            )
            raise NotebookFailed(
                f"notebook {name} failed: {err.ename}: {err.evalue}\n"
                f"  the executed copy with the error is in {failed / name}\n"
                f"  {final_results} was left unchanged"
            ) from None
        except BaseException:
            _keep_failed(staging_results, staging_models, results_root / f".failed-{profile}")
            raise
        seconds = time.perf_counter() - tic
        timings.append({"notebook": name, "seconds": round(seconds, 1)})
        _export_html(executed)
        print(f"[reproduce] {profile}: {name} done in {seconds:.0f} s", flush=True)

    return timings


def _to_json(payload: dict) -> str:
    return json.dumps(payload, indent=2) + "\n"


def _export_html(executed: Path) -> None:
    """Write NAME.html (with code) and NAME.report.html (code hidden) beside the notebook."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    full, _ = HTMLExporter().from_notebook_node(nb)
    report, _ = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    ).from_notebook_node(nb)
    executed.with_suffix(".html").write_text(full)
    executed.with_suffix(".report.html").write_text(report)


def _journal(results_root: Path, profile: str) -> Path:
    return results_root / f".publishing-{profile}.json"


def _publish(swaps: list[tuple[Path, Path]], journal: Path) -> None:
    """Swap in models and results as one step.

    The two renames cannot be one system call, so a journal names them before the first and is
    removed after the last. A crash in between leaves the journal, and the next run of the
    profile completes the publication before anything else (:func:`_finish_publishing`):
    new models are never left beside old results.
    """
    tmp = journal.with_name(journal.name + ".tmp")
    tmp.write_text(json.dumps([[str(new), str(final)] for new, final in swaps]))
    tmp.replace(journal)
    for new, final in swaps:
        _replace_dir(new, final)
    journal.unlink()


def _finish_publishing(journal: Path) -> bool:
    """Complete a publication that a crash interrupted; True if there was one."""
    if not journal.is_file():
        return False
    for new, final in json.loads(journal.read_text()):
        _replace_dir(Path(new), Path(final))  # a swap already done is skipped (no ``new``)
    journal.unlink()
    print(f"[reproduce] completed the publication that {journal.name} recorded", flush=True)
    return True


def _model_hashes(models: Path) -> dict[str, str]:
    """SHA-256 of every model file of a run (checkpoints, the ensemble manifest)."""
    files = sorted(p for p in models.rglob("*") if p.suffix in (".pt", ".json"))
    return {str(p.relative_to(models)): sha256_file(p) for p in files}


def _replace_dir(new: Path, final: Path) -> None:
    """Swap ``new`` in as ``final``; the old folder is removed only once the new one is in place."""
    if not new.exists():
        return
    old = final.with_name(f".old-{final.name}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _keep_failed(staging_results: Path, staging_models: Path, failed: Path) -> Path:
    """Move the staged results to ``failed`` (replacing an older failure); drop the staged
    models. Idempotent: a second call, once the staging folder is gone, changes nothing."""
    if staging_results.exists():
        shutil.rmtree(failed, ignore_errors=True)
        staging_results.rename(failed)
    shutil.rmtree(staging_models, ignore_errors=True)
    return failed


def _point_at_published_models(results: Path, staging: Path, final: Path) -> None:
    """Record in every metrics.json of the results the models' paths after the swap, not in
    the staging folder that is about to disappear (notebook 03 evaluated ``<staging>/best.pt``
    and the ensemble's members there)."""
    staged, published = str(staging.resolve()), _relative(final)
    staged_relative = _relative(staging) + "/"

    def repoint(value):
        if isinstance(value, dict):
            return {k: repoint(v) for k, v in value.items()}
        if isinstance(value, list):
            return [repoint(v) for v in value]
        if isinstance(value, str) and Path(value).is_absolute():
            path = Path(value).resolve()
            if path.is_relative_to(staged):
                return str(Path(published) / path.relative_to(staged))
        if isinstance(value, str) and value.startswith(staged_relative):
            return f"{published}/{value[len(staged_relative) :]}"
        return value

    for metrics_path in sorted(results.rglob("metrics.json")):
        metrics = json.loads(metrics_path.read_text())
        # the staging folder is not published yet: no need for an atomic write here
        metrics_path.write_text(json.dumps(repoint(metrics), indent=2, allow_nan=False) + "\n")


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(PROJ_ROOT)) if path.is_relative_to(PROJ_ROOT) else str(path)


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
    try:
        run_pipeline(
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
