"""Writing files so that a full disk costs a clear message, never a file a later run trusts.

Every result file is written under a temporary name in its own folder and renamed over the
final one only when complete (``os.replace`` is atomic on one file system), so an interrupted
or failed write leaves the previous file, or none. :func:`disk_full_guard` turns the "no space
left on device" error of such a write into one :class:`~mura_lib.errors.DiskFullError` that
names the folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from mura_lib.errors import DiskFullError

_FULL = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(err: BaseException) -> bool:
    """An ENOSPC/EDQUOT OSError, or torch's RuntimeError for a failed write of its archive."""
    if isinstance(err, OSError):
        return err.errno in _FULL
    return isinstance(err, RuntimeError) and "file write failed" in str(err)


@contextlib.contextmanager
def disk_full_guard(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Raise DiskFullError naming ``folder`` when the block fails for lack of space."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err):
            raise
        raise DiskFullError(
            f"no space left on the device of {Path(folder)} while writing {what}: free some "
            "space there (or choose another folder) and run again; the incomplete file was "
            "removed, and the previous one, if any, is untouched"
        ) from None


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "a file") -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with disk_full_guard(path.parent, what):
            tmp.write_text(text)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
