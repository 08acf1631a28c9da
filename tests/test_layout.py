"""The house's rules, checked: the core imports no plotting library, `mura evaluate` and
`mura predict` load neither matplotlib nor the training code, and `models/` has no import
cycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mura_lib.config import PROJ_ROOT

pytest_plugins = ["fixtures_training"]  # tiny_tree, trained_run, shared_cache_dir

PACKAGE = PROJ_ROOT / "mura_lib"
CORE = ("data", "models", "inference", "training", "evaluation")
PLOTTING = ("matplotlib", "seaborn")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function, as absolute names."""
    names: set[str] = set()
    package = ".".join(path.relative_to(PROJ_ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", CORE)
def test_the_core_imports_no_plotting_library(layer: str) -> None:
    offenders = {
        str(path.relative_to(PROJ_ROOT)): sorted(
            name for name in imported_modules(path) if name.split(".")[0] in PLOTTING
        )
        for path in sorted((PACKAGE / layer).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_reports_imports_plotting_code() -> None:
    plotting = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] in PLOTTING for name in imported_modules(path))
    )
    assert plotting and all(name.startswith("reports/") for name in plotting), plotting


@pytest.mark.parametrize("layer", ["inference", "evaluation"])
def test_inference_and_evaluation_do_not_import_training(layer: str) -> None:
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        training = [n for n in imported_modules(path) if n.startswith("mura_lib.training")]
        assert training == [], f"{path.relative_to(PROJ_ROOT)} imports {training}"


def test_models_has_no_import_cycle() -> None:
    modules = {p.stem: p for p in (PACKAGE / "models").glob("*.py") if p.stem != "__init__"}
    graph = {
        name: {
            other
            for other in modules
            if other != name
            and any(n.startswith(f"mura_lib.models.{other}") for n in imported_modules(path))
        }
        for name, path in modules.items()
    }

    def reaches(start: str, target: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt}))
            for nxt in graph[start]
        )

    assert [name for name in graph if reaches(name, name)] == []


def _modules_loaded_by(argv: list[str]) -> dict:
    """Run the CLI in a fresh interpreter; report its exit status and which modules it loaded."""
    script = (
        "import json, sys\n"
        "from mura_lib.cli import main\n"
        f"code = main({argv!r})\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'seaborn')"
        " or m.startswith('mura_lib.training') or m.startswith('mura_lib.reports'))\n"
        "print(json.dumps({'code': code, 'loaded': loaded}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJ_ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_evaluate_loads_neither_matplotlib_nor_training(
    trained_run, tiny_tree: Path, shared_cache_dir: Path, tmp_path: Path
) -> None:
    result = _modules_loaded_by(
        [
            "evaluate",
            "--checkpoint",
            str(trained_run[0] / "best.pt"),
            "--data",
            str(tiny_tree),
            "--out",
            str(tmp_path / "eval"),
            "--device",
            "cpu",
            "--n-boot",
            "20",
            "--cache-dir",
            str(shared_cache_dir),
        ]
    )
    assert result == {"code": 0, "loaded": []}
    assert (tmp_path / "eval" / "metrics.json").is_file()


@pytest.mark.slow
def test_predict_with_cams_loads_neither_matplotlib_nor_training(
    trained_run, tiny_tree: Path, tmp_path: Path
) -> None:
    study = next((tiny_tree / "valid").glob("*/*/*"))
    cams = tmp_path / "cams"
    result = _modules_loaded_by(
        ["predict", "--checkpoint", str(trained_run[0] / "best.pt"), str(study), "--cam", str(cams)]
    )
    assert result == {"code": 0, "loaded": []}
    assert list(cams.glob("*_cam.png"))


def test_jet_is_matplotlibs_jet() -> None:
    """The CAM overlay's colour map is written out so that the core needs no matplotlib."""
    from matplotlib import colormaps

    from mura_lib.models.cam import jet

    values = np.concatenate([np.linspace(0, 1, 4097), [0.35, 0.66, 0.89, 1 - 1e-9]])
    np.testing.assert_array_equal(jet(values), colormaps["jet"](values)[..., :3])
    cam = np.random.default_rng(0).random((64, 64), dtype=np.float32)  # as CAMs are: float32
    np.testing.assert_array_equal(jet(cam), colormaps["jet"](cam)[..., :3])
