"""The image cache: reuse, rebuild on change, atomic writes, interrupted builds, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura_lib import config
from mura_lib.data import cache as cache_mod
from mura_lib.data.cache import build_cache
from mura_lib.data.images import load_image
from mura_lib.errors import ImageReadError

S = 16


def make_frame(folder: Path, n: int = 6) -> pd.DataFrame:
    """n small PNGs of varied shapes; image i is a uniform gray of value 10 * (i + 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"MURA-v1.1/train/XR_HAND/patient{i + 1:05d}/study1_negative/image1.png"
        path = folder / f"image{i}.png"
        Image.new("L", (40, 20 + 5 * i), 10 * (i + 1)).save(path)
        rows.append(
            {
                "path": str(path),
                "rel_path": rel,
                "split": "train",
                "body_part": "HAND",
                "patient_id": i + 1,
                "study": 1,
                "view": 1,
                "label": i % 2,
                "study_id": f"train/HAND/patient{i + 1:05d}/study1",
            }
        )
    return pd.DataFrame(rows)


def gray_level(image: np.ndarray) -> int:
    return int(image[S // 2, S // 2])  # the centre is always inside the letterboxed content


def cache_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir())


@pytest.fixture
def frame(tmp_path: Path) -> pd.DataFrame:
    return make_frame(tmp_path / "images")


def test_build_stores_every_row_in_order(frame: pd.DataFrame, tmp_path: Path) -> None:
    cache = build_cache(frame, size=S, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert isinstance(cache.images, np.memmap) and cache.images.shape == (6, S, S)
    assert cache.images.dtype == np.uint8 and not cache.images.flags.writeable
    assert cache.report.rebuilt and cache.report.n_kept == 6 and not cache.report.bad
    pd.testing.assert_frame_equal(cache.frame, frame)
    for i, path in enumerate(frame["path"]):
        np.testing.assert_array_equal(cache.images[i], load_image(path, S)[0])
    manifest = json.loads(cache.path.with_suffix(".json").read_text())
    assert manifest["paths"] == frame["path"].tolist()
    assert manifest["rel_paths"] == frame["rel_path"].tolist()


def test_parallel_build_equals_sequential(frame: pd.DataFrame, tmp_path: Path) -> None:
    one = build_cache(frame, size=S, cache_dir=tmp_path / "a", n_jobs=1, progress=False)
    two = build_cache(frame, size=S, cache_dir=tmp_path / "b", n_jobs=2, progress=False)
    np.testing.assert_array_equal(one.images, two.images)
    assert one.fingerprint == two.fingerprint


def test_default_location_is_config_cache_dir(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "default")
    cache = build_cache(frame, size=S, n_jobs=1, progress=False)
    assert cache.path.parent == tmp_path / "default"


def test_unchanged_input_is_reused_without_decoding(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_cache(frame, size=S, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    stamp = first.path.stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("a reused cache must not decode anything")

    monkeypatch.setattr(cache_mod, "_process_chunk", no_decoding)
    second = build_cache(frame, size=S, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert not second.report.rebuilt
    assert second.path == first.path and second.path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.images, second.images)


def _touch(frame: pd.DataFrame) -> pd.DataFrame:
    path = frame["path"][2]
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    return frame


def _rewrite(frame: pd.DataFrame) -> pd.DataFrame:
    Image.new("L", (40, 30), 255).save(frame["path"][2])
    return frame


@pytest.mark.parametrize(
    ("change", "kwargs"),
    [
        (_touch, {}),
        (_rewrite, {}),
        (lambda f: f, {"size": S * 2}),
        (lambda f: f, {"resize": "stretch"}),
        (lambda f: f.iloc[:-1], {}),  # a row fewer
        (lambda f: f.iloc[::-1], {}),  # another row order
    ],
    ids=["touched", "rewritten", "size", "resize", "fewer-rows", "row-order"],
)
def test_changed_input_or_parameter_rebuilds(frame, tmp_path: Path, change, kwargs) -> None:
    params = {"size": S, "cache_dir": tmp_path / "c", "n_jobs": 1, "progress": False}
    first = build_cache(frame, **params)
    second = build_cache(change(frame), **{**params, **kwargs})
    assert second.report.rebuilt and second.fingerprint != first.fingerprint
    levels = [gray_level(image) for image in second.images]
    expected = [
        gray_level(load_image(p, second.size, second.resize)[0]) for p in second.frame["path"]
    ]
    assert levels == expected


def test_interrupted_build_leaves_nothing_trusted(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = cache_mod._process_chunk
    calls = {"n": 0}

    def dies_after_two_chunks(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the build
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "_process_chunk", dies_after_two_chunks)
    monkeypatch.setattr(cache_mod, "MAX_CHUNK", 1)
    cache_dir = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        build_cache(frame, size=S, cache_dir=cache_dir, n_jobs=1, progress=False)
    assert cache_files(cache_dir) == []  # no array, no manifest, no temporary file

    monkeypatch.setattr(cache_mod, "_process_chunk", real)
    cache = build_cache(frame, size=S, cache_dir=cache_dir, n_jobs=1, progress=False)
    assert cache.report.rebuilt and cache.images.shape == (6, S, S)


def test_array_without_manifest_is_not_trusted(frame: pd.DataFrame, tmp_path: Path) -> None:
    params = {"size": S, "cache_dir": tmp_path / "c", "n_jobs": 1, "progress": False}
    first = build_cache(frame, **params)
    manifest = first.path.with_suffix(".json")
    # A build killed between moving the array into place and writing the manifest: the
    # manifest exists only under its temporary name.
    leftover = manifest.with_name(f".{manifest.name}.tmp-0123456789ab")
    manifest.rename(leftover)
    assert build_cache(frame, **params).report.rebuilt


@pytest.mark.parametrize("damage", ["truncated-manifest", "short-array", "other-fingerprint"])
def test_damaged_cache_is_rebuilt(frame: pd.DataFrame, tmp_path: Path, damage: str) -> None:
    params = {"size": S, "cache_dir": tmp_path / "c", "n_jobs": 1, "progress": False}
    first = build_cache(frame, **params)
    expected = np.array(first.images)
    manifest = first.path.with_suffix(".json")
    if damage == "truncated-manifest":
        manifest.write_text(manifest.read_text()[:50])
    elif damage == "short-array":
        with open(first.path, "r+b") as handle:
            handle.truncate(first.path.stat().st_size - S * S)
    else:
        content = json.loads(manifest.read_text())
        content["fingerprint"] = "0" * 64
        manifest.write_text(json.dumps(content))
    second = build_cache(frame, **params)
    assert second.report.rebuilt
    np.testing.assert_array_equal(second.images, expected)


def test_leftovers_of_a_dead_build_are_ignored(frame: pd.DataFrame, tmp_path: Path) -> None:
    """A build killed outright (kill -9, power loss) leaves its temporary files under unique
    names; the next build writes its own, never reads or renames those, and is trusted."""
    params = {"size": S, "cache_dir": tmp_path / "c", "n_jobs": 1, "progress": False}
    fingerprint = cache_mod.cache_fingerprint(frame["path"].tolist(), S, "letterbox")
    final = f"images-{S}-letterbox-{fingerprint[:24]}"
    dead = [f".{final}.npy.tmp-0badc0de0000", f".{final}.json.tmp-0badc0de0001"]
    params["cache_dir"].mkdir()
    for name in dead:
        (params["cache_dir"] / name).write_bytes(b"partial")
    cache = build_cache(frame, **params)
    assert cache.report.rebuilt and cache.path.name == f"{final}.npy"
    assert cache_files(params["cache_dir"]) == sorted([f"{final}.json", f"{final}.npy", *dead])
    assert all((params["cache_dir"] / name).read_bytes() == b"partial" for name in dead)
    assert not build_cache(frame, **params).report.rebuilt


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_build_killed_with_sigkill_is_not_trusted(frame: pd.DataFrame, tmp_path: Path) -> None:
    cache_dir = tmp_path / "c"
    frame.to_csv(tmp_path / "frame.csv", index=False)
    script = f"""
import time, pandas as pd
from mura_lib.data import cache
real = cache._process_chunk
def slow(*args, **kwargs):
    time.sleep(0.3)
    return real(*args, **kwargs)
cache._process_chunk = slow
cache.MAX_CHUNK = 1
cache.build_cache(pd.read_csv({str(tmp_path / "frame.csv")!r}), size={S},
                  cache_dir={str(cache_dir)!r}, n_jobs=1, progress=False)
"""
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not any(".tmp-" in p.name for p in cache_dir.glob("*")):
        assert time.monotonic() < deadline and child.poll() is None, "the build never started"
        time.sleep(0.05)
    time.sleep(0.4)  # mid-build: some chunks written
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not list(cache_dir.glob("*.json")) and not list(cache_dir.glob("images-*"))
    killed = cache_files(cache_dir)  # the killed build's temporary array, which nothing reads
    cache = build_cache(frame, size=S, cache_dir=cache_dir, n_jobs=1, progress=False)
    assert cache.report.rebuilt
    assert [name for name in cache_files(cache_dir) if ".tmp-" in name] == killed


def test_mildly_truncated_png_is_kept_and_reported(frame: pd.DataFrame, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = Path(frame["path"][1])
    Image.fromarray(rng.integers(0, 256, (40, 40), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-50])  # IEND, CRC and under one row of 40
    cache = build_cache(frame, size=S, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert cache.report.n_kept == 6 and not cache.report.bad
    assert len(cache.report.warnings) == 1 and str(path) in cache.report.warnings[0]
    assert "truncated" in str(cache.report)
    reused = build_cache(frame, size=S, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert reused.report.warnings == cache.report.warnings  # the manifest keeps the report


def test_mostly_missing_png_is_a_bad_image(frame: pd.DataFrame, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = Path(frame["path"][1])
    Image.fromarray(rng.integers(0, 256, (80, 80), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageReadError, match="of its rows are missing"):
        build_cache(frame, size=S, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    cache = build_cache(
        frame, size=S, cache_dir=tmp_path / "c", n_jobs=1, progress=False, skip_bad=True
    )
    assert cache.report.n_kept == len(frame) - 1 and not cache.report.warnings
    assert [bad.path for bad in cache.report.bad] == [str(path)]


@pytest.mark.parametrize(("content", "phrase"), [(b"", "empty"), (b"<html>", "not a readable")])
def test_bad_file_raises_naming_it(frame, tmp_path: Path, content: bytes, phrase: str) -> None:
    bad = Path(frame["path"][3])
    bad.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        build_cache(frame, size=S, cache_dir=tmp_path / "c", n_jobs=1, progress=False)
    assert str(bad) in str(err.value) and phrase in str(err.value)
    assert "skip_bad=True" in str(err.value)
    assert cache_files(tmp_path / "c") == []


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_skip_bad_drops_rows_and_keeps_labels_aligned(frame, tmp_path: Path, n_jobs: int) -> None:
    Path(frame["path"][1]).write_bytes(b"")
    Path(frame["path"][4]).write_bytes(b"GIF89a but not really")
    params = {"size": S, "cache_dir": tmp_path / "c", "n_jobs": n_jobs, "progress": False}
    cache = build_cache(frame, skip_bad=True, **params)
    assert [bad.row for bad in cache.report.bad] == [1, 4]
    assert all(bad.path in bad.reason for bad in cache.report.bad)
    assert cache.images.shape == (4, S, S) and len(cache.frame) == 4
    assert cache.frame["path"].tolist() == frame["path"][[0, 2, 3, 5]].tolist()
    assert cache.frame["label"].tolist() == frame["label"][[0, 2, 3, 5]].tolist()
    assert cache.frame.index.tolist() == [0, 1, 2, 3]
    assert [gray_level(image) for image in cache.images] == [10, 30, 40, 60]

    reused = build_cache(frame, skip_bad=True, **params)
    assert not reused.report.rebuilt and [b.row for b in reused.report.bad] == [1, 4]
    with pytest.raises(ImageReadError, match="2 of 6 images"):
        build_cache(frame, skip_bad=False, **params)  # a reused cache does not hide bad files


def test_frame_without_path_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'path'"):
        build_cache(pd.DataFrame({"x": [1]}), cache_dir=tmp_path, progress=False)
