"""benchmarks/scale.py's own bookkeeping: the films it warms and checks in the page cache are
exactly the tree's films, and a warmed tree reads as resident."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from mura_lib.config import PROJ_ROOT, SAMPLE_ROOT
from mura_lib.data import read_mura


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale", PROJ_ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_film_paths_are_the_films_read_mura_indexes(scale) -> None:
    paths = scale.film_paths(SAMPLE_ROOT)
    assert sorted(map(str, paths)) == sorted(read_mura(SAMPLE_ROOT)["path"].astype(str))
    assert all(path.is_file() for path in paths)


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_a_warmed_tree_is_in_the_page_cache(scale) -> None:
    films = scale.film_paths(SAMPLE_ROOT)
    assert scale.warm_films(films) >= 0
    assert scale.page_cache_share(films) == pytest.approx(1.0, abs=0.05)


def test_without_fincore_the_share_is_unknown(scale, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert scale.page_cache_share(scale.film_paths(SAMPLE_ROOT)) is None
