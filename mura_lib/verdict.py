"""The verdict that ends `make reproduce`: did this run reproduce the committed results?

For each headline figure (study-level AUROC and kappa of the model and of each variant that
notebook 03 compares), the committed value, this run's, and either "identical" or the
difference and whether it lies inside the committed 95 % bootstrap interval; then the kinds
of CPU of both runs, since a CPU run gives the same bits only on the same numerics
(:mod:`mura_lib.numerics`).

"Committed" is what git's HEAD holds under results/<profile>/ when the results folder is in a
git checkout; otherwise the copy that was in the folder before this run replaced it. The
verdict's header names which.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FIGURES = (("auroc", "AUROC"), ("kappa", "kappa"))  # study level, all body parts
MODEL = "single"  # how metrics.json's comparison names the model itself


@dataclass(frozen=True)
class Committed:
    """The committed results of a profile, read before the run can replace them."""

    source: str  # where they were read, as the verdict's header says it
    files: dict[str, dict]  # metrics.json, manifest.json, variants/*/metrics.json (parsed)


def _git(folder: Path, *args: str) -> str | None:
    """Output of a git command run in ``folder``; None when it fails (no git, no checkout,
    no such file at HEAD)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _in_folder(results: Path) -> Callable[[str], str | None]:
    """read(name): the text of ``results/name`` as it is on disk, or None."""
    return lambda name: (results / name).read_text() if (results / name).is_file() else None


def _reader(results: Path) -> tuple[str, Callable[[str], str | None]]:
    """(source, read) for the committed copy of ``results``: read(name) gives a file's text
    or None."""
    top = _git(results.parent, "rev-parse", "--show-toplevel") if results.parent.is_dir() else None
    if top:
        rel = results.resolve().relative_to(Path(top.strip()).resolve()).as_posix()
        commit = (_git(results.parent, "rev-parse", "--short", "HEAD") or "?").strip()
        return f"git HEAD {commit}, {rel}", lambda name: _git(
            results.parent, "show", f"HEAD:{rel}/{name}"
        )
    return f"{results} as it was before this run (not a git checkout)", _in_folder(results)


def _read_results(read: Callable[[str], str | None]) -> dict[str, dict] | None:
    """The parsed metrics.json, its variants' metrics.json and manifest.json of one run, as
    ``read`` finds them; None without a metrics.json. The committed copy and this run's are
    read alike, from git or from the folder."""
    metrics = read("metrics.json")
    if metrics is None:
        return None
    files = {"metrics.json": json.loads(metrics)}
    for name in [*_variant_files(files["metrics.json"]), "manifest.json"]:
        text = read(name)
        if text is not None:
            files[name] = json.loads(text)
    return files


def committed_results(results: str | Path) -> Committed | str:
    """The committed results of ``results`` (results/<profile>), or the one line saying why
    there are none. Call it before the run publishes its own."""
    results = Path(results)
    source, read = _reader(results)
    try:
        files = _read_results(read)
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        return f"the committed results of {results.name!r} ({source}) are not readable: {err}"
    if files is None:
        return f"no committed results for profile {results.name!r}: nothing in {source}"
    return Committed(source, files)


def _variant_files(metrics: dict) -> dict[str, str]:
    """{metrics file: variant name} of the variants that notebook 03 compares."""
    variants = (metrics.get("comparison") or {}).get("variants") or {}
    return {f"{v['folder']}/metrics.json": name for name, v in variants.items() if "folder" in v}


def headline(files: dict[str, dict]) -> dict[tuple[str, str], tuple[float | None, list | None]]:
    """{(variant, figure): (value, 95 % interval)} of a run's results."""
    sources = {"metrics.json": MODEL, **_variant_files(files.get("metrics.json", {}))}
    figures = {}
    for name, variant in sources.items():
        overall = files.get(name, {}).get("study", {}).get("overall")
        if overall is None:
            continue
        for key, _ in FIGURES:
            figures[(variant, key)] = (overall.get(key), overall.get("ci", {}).get(key))
    return figures


def judge(committed: tuple | None, current: tuple | None) -> str:
    """The verdict on one figure: identical, or the difference and where it lies."""
    if committed is None:
        return "not in the committed results"
    if current is None:
        return "not in this run"
    (old, ci), new = committed, current[0]
    if old == new:
        return "identical"
    if old is None or new is None:
        return "undefined in one run"
    diff = new - old
    shown = f"{diff:+.4f}" if abs(diff) >= 1e-4 else f"{diff:+.1e}"
    if not ci or None in ci:
        return f"{shown} (no committed interval)"
    where = "inside" if ci[0] <= new <= ci[1] else "OUTSIDE"
    return f"{shown}, {where} the committed 95 % CI [{ci[0]:.4f}, {ci[1]:.4f}]"


def _cpu(manifest: dict | None) -> str:
    if not manifest or "cpu" not in manifest:
        return "not recorded"
    cpu = manifest["cpu"]
    pinned = (manifest.get("cpu_numerics") or {}).get("pinned")
    numerics = {True: "pinned to AVX2", False: "not pinned", None: "pinning not recorded"}
    return (
        f"{cpu.get('model_name')} (family/model {cpu.get('family_model')}, "
        f"{cpu.get('capability')}, {numerics[pinned]})"
    )


def _value(figure: tuple | None) -> str:
    return "-" if figure is None or figure[0] is None else f"{figure[0]:.4f}"


def render(committed: Committed | str, results: str | Path) -> str:
    """The verdict on the published ``results`` against ``committed``, as printed."""
    if isinstance(committed, str):
        return f"[reproduce] verdict: {committed}"
    current_files = _read_results(_in_folder(Path(results))) or {}
    old, new = headline(committed.files), headline(current_files)
    keys = list(old) + [k for k in new if k not in old]
    rows = [("variant", "figure", "committed", "this run", "verdict")]
    labels = dict(FIGURES)
    for variant, key in keys:
        figure_old, figure_new = old.get((variant, key)), new.get((variant, key))
        verdict = judge(figure_old, figure_new)
        rows.append((variant, labels[key], _value(figure_old), _value(figure_new), verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"[reproduce] verdict: this run against the committed results, {committed.source}"]
    lines += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    same = sum(row[4] == "identical" for row in rows[1:])
    outside = sum("OUTSIDE" in row[4] for row in rows[1:])
    summary = (
        "every figure identical: the committed results were reproduced"
        if same == len(rows) - 1
        else f"{len(rows) - 1 - same} of {len(rows) - 1} figures differ, {outside} outside "
        "their committed 95 % interval"
    )
    lines.append(f"  {summary}")
    lines.append(f"  CPU, committed: {_cpu(committed.files.get('manifest.json'))}")
    lines.append(f"  CPU, this run:  {_cpu(current_files.get('manifest.json'))}")
    return "\n".join(lines)
