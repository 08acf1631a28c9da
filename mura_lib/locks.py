"""One run at a time per training folder and per reproduce profile: an OS file lock.

Two `make reproduce` of one profile, or two `mura train` into one folder, would otherwise
delete each other's staging folder or overwrite each other's checkpoints. The lock is
``flock`` on a small file: the kernel releases it when its holder exits, however it exits, so
a killed run never leaves a lock behind and there is nothing stale to clean up by hand. The
file keeps who holds it (pid, host, since when, command) for the message the second run gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from mura_lib.errors import BusyError


def _holder(handle) -> str:
    """Who holds the lock, from what its holder wrote into the file."""
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        info = {}
    if not info:
        return "another process (it has not written its name yet)"
    return (
        f"process {info.get('pid')} on {info.get('host')} since {info.get('since')} "
        f"({info.get('command')})"
    )


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, advice: str) -> Iterator[None]:
    """Hold the lock at ``path`` for the block, or raise BusyError at once.

    Args:
        path: the lock file (created with its folder; kept afterwards, as locks must be).
        what: what the lock protects, for the message ("the training folder runs/r18").
        advice: what the second user can do, for the message.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the whole block)
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            for _ in range(20):  # the holder writes its name just after taking the lock
                if not holder.startswith("another process"):
                    break
                time.sleep(0.05)
                holder = _holder(handle)
            raise BusyError(
                f"{what} is in use by {holder}: {advice}; a run that is killed frees it by "
                f"itself (lock file {path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
                }
            )
        )
        handle.flush()
        held = True
        yield
    finally:
        if "held" in locals():
            handle.seek(0)
            handle.truncate()  # the next holder must not be named after this one
        handle.close()  # closing the file releases the lock
