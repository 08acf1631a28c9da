"""Progress display that reads well in a terminal, in JupyterLab and in papermill's log.

* ``"bar"``: a tqdm bar per epoch (``tqdm.auto``: a widget in JupyterLab, text in a terminal).
* ``"log"``: no bar, one summary line per epoch. Papermill records every carriage-return
  refresh of a bar as output, so `make reproduce` sets ``MURA_PROGRESS=log``.
* ``"none"``: silent (tests).
* ``"auto"`` (default): ``$MURA_PROGRESS`` if set, else a bar when a person is watching (a
  terminal or a Jupyter kernel), else ``"log"``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
MODES = ("auto", "bar", "log", "none")


def resolve_mode(mode: str = "auto") -> str:
    if mode not in MODES:
        raise ValueError(f"progress must be one of {MODES}, not {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("MURA_PROGRESS", "")
    if env in ("bar", "log", "none"):
        return env
    in_kernel = "ipykernel" in sys.modules
    return "bar" if in_kernel or sys.stderr.isatty() else "log"


def track(items: Iterable[T], mode: str, total: int, desc: str) -> Iterator[T]:
    """Iterate over ``items``, with a bar in ``"bar"`` mode and silently otherwise."""
    if mode != "bar":
        yield from items
        return
    from tqdm.auto import tqdm

    with tqdm(items, total=total, desc=desc, leave=False, unit="batch") as bar:
        yield from bar


def log_line(mode: str, text: str) -> None:
    """Print one line (every mode but ``"none"``), flushed so papermill's log shows it now."""
    if mode != "none":
        print(text, flush=True)
