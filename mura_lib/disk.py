"""Writing files so that no reader ever sees half of one, and a full disk costs one clear line.

Every file that a later step or run trusts (checkpoints, the image cache, predictions, metrics,
manifests) is written through :func:`atomic_path`: under a unique temporary name in its own
folder, renamed over the final name only when complete (``os.replace`` is atomic on one file
system). An interrupted or failed write leaves the previous file, or none; a writer killed
outright leaves only its temporary file, which no reader opens. "No space left on device"
becomes one :class:`~mura_lib.errors.DiskFullError` that names the folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
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
def atomic_path(path: str | os.PathLike, what: str = "a file") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends, it becomes ``path``.

    For writers that take a file name (``torch.save``, ``np.save``, a memory map). The folder
    is created; the file is flushed to disk before the rename, so that even a power cut leaves
    the old file or the whole new one. The temporary name is unique, so concurrent writers of
    one file never write into each other's, and the last complete one wins. ``what`` names the
    file in the message of a full disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            if not is_disk_full(err):
                raise
            raise DiskFullError(
                f"no space left on the device of {path.parent} while writing {what}: free some "
                "space there (or choose another folder) and run again; the incomplete file was "
                "removed, and the previous one, if any, is untouched"
            ) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "a file") -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, what) as tmp:
        tmp.write_text(text)
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
