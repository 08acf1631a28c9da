"""The preprocessed image cache: every image decoded and resized once, stored as one array.

The project we grew from decoded and resized every PNG on every epoch in the training process
(``num_workers=0``), so the model waited for Pillow. Here each image is decoded once, in
parallel over all cores, converted to 8-bit grayscale and resized to S x S
(:mod:`mura_lib.data.images`); all images of a frame are stored as one (N, S, S) uint8 ``.npy``
file that later runs open with ``mmap_mode="r"`` (36,808 training images at S=256 are 2.4 GB;
the operating system pages in what is used).

Keying and trust. A cache is named by a fingerprint of the file list (path, size and mtime of
every row, in row order) and the preprocessing parameters (S, resize mode, reader limits,
format version). An unchanged input finds its cache and reuses it instantly; a touched file, a
new row or another S builds a new one. Both files are written through
:func:`mura_lib.disk.atomic_path` (a unique temporary name, then ``os.replace``); the manifest
(JSON) is written last and a cache is only trusted when its manifest is complete and agrees
with the array and with the frame. So an interrupted build (Ctrl-C, a full disk) leaves
nothing, and one killed outright leaves only a hidden temporary file that nothing reads
(``make clean`` removes the cache folder); two processes building one cache at once each write
their own temporary file, and the last to finish wins with the same content.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from tqdm import tqdm

from mura_lib import config
from mura_lib.data import images as image_io
from mura_lib.disk import atomic_path, write_text_atomic
from mura_lib.errors import ImageReadError

# Bump when the stored pixels would change for the same inputs (decoder, filter, layout).
CACHE_VERSION = 1
# Images per worker task at most (the payload of one task); with few images the tasks are
# smaller, so that each worker gets several and the load balances.
MAX_CHUNK = 64


@dataclass(frozen=True)
class BadImage:
    """A frame row left out of the cache because its file cannot be read."""

    row: int  # row number in the frame given to build_cache
    path: str
    reason: str


@dataclass
class CacheReport:
    """What happened to the images: the bad ones, the truncated ones, and the cost."""

    n_requested: int
    n_kept: int
    bad: list[BadImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rebuilt: bool = False  # False: an existing cache was reused
    seconds: float = 0.0  # build time (of the original build when reused)

    def __str__(self) -> str:
        action = f"built in {self.seconds:.1f} s" if self.rebuilt else "reused"
        lines = [f"image cache {action}: {self.n_kept} of {self.n_requested} images kept"]
        lines += [f"  left out: {bad.reason}" for bad in self.bad]
        lines += [f"  warning: {message}" for message in self.warnings]
        return "\n".join(lines)


@dataclass
class ImageCache:
    """A built cache: ``images[i]`` is the S x S image of ``frame`` row ``i``."""

    images: np.ndarray  # (N, S, S) uint8, a read-only memmap
    frame: pd.DataFrame  # the kept rows of the input frame, index reset
    report: CacheReport
    fingerprint: str
    path: Path  # the .npy file; the manifest is path.with_suffix(".json")
    size: int
    resize: str

    def __len__(self) -> int:
        return len(self.frame)


def cache_fingerprint(paths: list[str], size: int, resize: str) -> str:
    """Hash of the file list (path, size, mtime in row order) and the preprocessing parameters."""
    digest = hashlib.sha256()
    params = {
        "version": CACHE_VERSION,
        "size": size,
        "resize": resize,
        "max_pixels": image_io.MAX_PIXELS,
    }
    digest.update(json.dumps(params, sort_keys=True).encode())
    for path in paths:
        try:
            stat = os.stat(path)
            entry = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        except OSError:
            entry = f"{path}\0missing\n"  # the build reports it; a restored file changes the key
        digest.update(entry.encode())
    return digest.hexdigest()


def _reserve(path: Path) -> None:
    """Allocate a memory-mapped file's blocks now, so that a full disk is an OSError here and
    not a SIGBUS in a worker writing pixels into a sparse file later."""
    if hasattr(os, "posix_fallocate"):
        with open(path, "rb+") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)


def _keep_rows(path: Path, kept: list[int], what: str) -> None:
    """Replace the array at ``path`` by its ``kept`` rows (the readable images), copied in
    slabs to bound memory. Rare: only when ``skip_bad`` left images out."""
    source = np.load(path, mmap_mode="r")
    with atomic_path(path, what) as compact:
        shape = (len(kept), *source.shape[1:])
        target = np.lib.format.open_memmap(compact, mode="w+", dtype=np.uint8, shape=shape)
        _reserve(compact)
        for lo in range(0, len(kept), 1024):
            target[lo : lo + 1024] = source[kept[lo : lo + 1024]]
        target.flush()
        del target
    del source


def _process_chunk(
    array_path: str, paths: list[str], start: int, size: int, resize: str
) -> tuple[int, list[tuple[int, str]], list[str]]:
    """Decode ``paths`` into rows ``start:start+len(paths)`` of the (temporary) array file.

    Runs in a worker process; it writes straight into the memory-mapped file, so pixels never
    travel back through a pipe. Returns the rows that could not be read and the warnings.
    """
    out = np.load(array_path, mmap_mode="r+")
    bad: list[tuple[int, str]] = []
    notes: list[str] = []
    for offset, path in enumerate(paths):
        try:
            out[start + offset], warning = image_io.load_image(path, size, resize)
        except ImageReadError as err:
            bad.append((start + offset, str(err)))
            continue
        if warning is not None:
            notes.append(warning)
    out.flush()
    del out
    return start, bad, notes


def _load_trusted(
    frame: pd.DataFrame, fingerprint: str, npy: Path, size: int, resize: str
) -> ImageCache | None:
    """Open an existing cache if, and only if, its manifest and array agree with the frame."""
    try:
        manifest = json.loads(npy.with_suffix(".json").read_text(encoding="utf-8"))
        if manifest.get("version") != CACHE_VERSION or manifest.get("fingerprint") != fingerprint:
            return None
        if npy.stat().st_size != manifest["npy_bytes"]:
            return None
        bad = [BadImage(**item) for item in manifest["bad"]]
        bad_rows = {item.row for item in bad}
        kept = [row for row in range(len(frame)) if row not in bad_rows]
        paths = frame["path"].astype(str).tolist()
        if manifest["paths"] != [paths[row] for row in kept]:
            return None
        images = np.load(npy, mmap_mode="r")
        if images.dtype != np.uint8 or images.shape != (len(kept), size, size):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    report = CacheReport(
        n_requested=len(frame),
        n_kept=len(kept),
        bad=bad,
        warnings=list(manifest["warnings"]),
        rebuilt=False,
        seconds=float(manifest.get("seconds", 0.0)),
    )
    return ImageCache(
        images=images,
        frame=frame.iloc[kept].reset_index(drop=True),
        report=report,
        fingerprint=fingerprint,
        path=npy,
        size=size,
        resize=resize,
    )


def _raise_for_bad(bad: list[BadImage], total: int, complete: bool = True) -> None:
    """Raise for the first bad file; say how many there are when that is known."""
    count = f"{len(bad)} of {total}" if complete else f"at least {len(bad)} of {total}"
    more = f" ({count} images cannot be read)" if len(bad) > 1 else ""
    raise ImageReadError(bad[0].reason + more)


def build_cache(
    frame: pd.DataFrame,
    size: int = 256,
    resize: image_io.ResizeMode = "letterbox",
    cache_dir: str | Path | None = None,
    n_jobs: int = -1,
    skip_bad: bool = False,
    progress: bool = True,
) -> ImageCache:
    """Decode and resize every image of ``frame`` once, or reuse the cache of an earlier run.

    Args:
        frame: one row per image with at least a ``path`` column (the frame of
            :func:`mura_lib.data.mura.read_mura`, or any subset of it). Row order defines the
            array's row order.
        size: side S of the stored squares.
        resize: ``"letterbox"`` (keep the aspect ratio, zero padding) or ``"stretch"``.
        cache_dir: where caches live; defaults to :data:`mura_lib.config.CACHE_DIR`.
        n_jobs: worker processes for the build (joblib; -1 = all cores).
        skip_bad: leave unreadable files out (listed in ``report.bad``) instead of raising.
        progress: show a progress bar while building.

    Returns:
        An :class:`ImageCache` whose ``images[i]`` belongs to ``frame`` row ``i``, where
        ``frame`` holds only the kept rows (index reset), so labels stay aligned with rows.

    Raises:
        ImageReadError: a file is missing, empty, not an image or too large, and ``skip_bad``
            is False. The message names the file.
    """
    if "path" not in frame.columns:
        raise ValueError("build_cache needs a frame with a 'path' column (see read_mura)")
    if resize not in image_io.RESIZE_MODES:
        raise ValueError(f"resize must be one of {image_io.RESIZE_MODES}, not {resize!r}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, not {size!r}")
    size = int(size)
    frame = frame.reset_index(drop=True)
    paths = frame["path"].astype(str).tolist()
    cache_dir = Path(cache_dir) if cache_dir is not None else config.CACHE_DIR
    cache_dir.mkdir(parents=True, exist_ok=True)

    fingerprint = cache_fingerprint(paths, size, resize)
    npy = cache_dir / f"images-{size}-{resize}-{fingerprint[:24]}.npy"
    manifest_path = npy.with_suffix(".json")
    cached = _load_trusted(frame, fingerprint, npy, size, resize)
    if cached is not None:
        if cached.report.bad and not skip_bad:
            _raise_for_bad(cached.report.bad, len(frame))
        return cached

    manifest_path.unlink(missing_ok=True)  # whatever was there did not agree: never trust it
    started = time.perf_counter()
    n = len(paths)
    jobs = joblib.effective_n_jobs(n_jobs)
    chunk = max(1, min(MAX_CHUNK, math.ceil(n / (4 * jobs)))) if n else 1
    starts = list(range(0, n, chunk))
    jobs = max(1, min(jobs, len(starts)))

    what = f"the image cache ({n} images at {size} px)"
    with atomic_path(npy, what) as array:
        np.lib.format.open_memmap(array, mode="w+", dtype=np.uint8, shape=(n, size, size)).flush()
        _reserve(array)
        bad: list[BadImage] = []
        notes: list[str] = []
        tasks = (
            joblib.delayed(_process_chunk)(str(array), paths[s : s + chunk], s, size, resize)
            for s in starts
        )
        bar = tqdm(
            total=n,
            unit="img",
            desc=f"caching {n} images at {size}px",
            disable=not progress,
            mininterval=1.0,
        )
        with (
            bar,
            warnings.catch_warnings(),
            joblib.Parallel(n_jobs=jobs, return_as="generator_unordered") as parallel,
        ):
            # Stopping at the first bad file cancels the queued tasks; joblib warns so.
            warnings.filterwarnings("ignore", message=".*tasks which were still being")
            for start, chunk_bad, chunk_notes in parallel(tasks):
                bad += [BadImage(row, paths[row], reason) for row, reason in chunk_bad]
                notes += chunk_notes
                if bad and not skip_bad:
                    _raise_for_bad(bad, n, complete=False)  # stop early: no point going on
                bar.update(min(chunk, n - start))
        bad.sort(key=lambda item: item.row)
        notes.sort()
        bad_rows = {item.row for item in bad}
        kept = [row for row in range(n) if row not in bad_rows]
        if bad:
            _keep_rows(array, kept, what)
    seconds = time.perf_counter() - started
    manifest = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "size": size,
        "resize": resize,
        "shape": [len(kept), size, size],
        "dtype": "uint8",
        "npy_bytes": npy.stat().st_size,
        "n_requested": n,
        "paths": [paths[row] for row in kept],
        "rel_paths": (
            frame["rel_path"].astype(str).iloc[kept].tolist()
            if "rel_path" in frame.columns
            else None
        ),
        "bad": [vars(item) for item in bad],
        "warnings": notes,
        "seconds": seconds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text_atomic(manifest_path, json.dumps(manifest, indent=1), what)

    loaded = _load_trusted(frame, fingerprint, npy, size, resize)
    if loaded is None:  # another process replaced it in between; rare, and not ours to fix
        raise ImageReadError(
            f"{npy}: the cache just written cannot be read back; delete {cache_dir} and run again."
        )
    loaded.report.rebuilt = True
    loaded.report.seconds = seconds
    return loaded
