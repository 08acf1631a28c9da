"""Loading torch files without running them, and saying so when a file would run code.

Every ``.pt`` file the project reads (checkpoints, ensemble members, ImageNet weights) is
loaded with ``weights_only=True``, which refuses any pickled object other than tensors and
plain containers. When it refuses, torch's own message advises retrying with
``weights_only=False``, which would execute whatever the file holds: exactly the wrong advice
for a file that carries code. This module replaces that message by one that names the objects
the file holds and says not to do that.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from mura_lib.errors import CheckpointError

# What a state dict pickles besides plain containers: the rebuilding of tensors and their
# storages, dtypes and devices, and OrderedDict. Anything else (a pickled nn.Module, a function
# such as posix.system) is an object no mura_lib checkpoint holds.
_TENSOR_MACHINERY = ("torch._utils.", "torch.storage.", "torch._tensor.")
_PLAIN = {"collections.OrderedDict", "torch.device", "torch.Size"}
_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream of a torch file (data.pkl of the zip format, or the legacy file)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            return archive.read(name)
    return path.read_bytes()


def pickled_globals(path: str | Path) -> list[str]:
    """The ``module.name`` of every global a torch file's pickle refers to, in file order.

    Read with :mod:`pickletools` (opcodes only: nothing is unpickled). ``STACK_GLOBAL`` takes
    its module and name from the two strings pushed before it, directly or from the memo.
    """
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, Any] = {}
    top: Any = None
    try:
        for opcode, arg, _ in pickletools.genops(_pickle_bytes(Path(path))):
            name = opcode.name
            if name in _STRING_OPS:
                top = arg.decode("latin-1") if isinstance(arg, bytes) else arg
                strings.append(top)
            elif name == "MEMOIZE":
                memo[len(memo)] = top
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = top
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                top = memo.get(int(arg))
                if isinstance(top, str):
                    strings.append(top)
            elif name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
                top = None
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
                top = None
            else:
                top = None
    except (ValueError, KeyError, StopIteration, zipfile.BadZipFile, OSError):
        pass  # a truncated or foreign stream: report what was read before it
    return list(dict.fromkeys(found))


def _is_tensor_data(name: str) -> bool:
    if name in _PLAIN or name.startswith(_TENSOR_MACHINERY):
        return True
    module, _, attr = name.rpartition(".")
    return module == "torch" and (
        attr.endswith("Storage") or isinstance(getattr(torch, attr, None), torch.dtype)
    )


def unexpected_globals(path: str | Path) -> list[str]:
    """The globals of a torch file that no mura_lib checkpoint or weights file holds."""
    return [g for g in pickled_globals(path) if not _is_tensor_data(g)]


def load_weights_only(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with the project's messages.

    Raises:
        CheckpointError: the file holds objects other than tensors (named, and never run),
            or it cannot be read at all (truncated, not a torch file).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = unexpected_globals(path) or re.findall(r"GLOBAL ([\w.]+)", str(err))
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise CheckpointError(
            f"{path} holds objects that no mura_lib {what} holds ({shown or 'not tensors'}) "
            "and was refused unread. Do not load it with weights_only=False: that would run "
            "code stored in the file. Use a file written by `mura train`, or delete it"
        ) from None
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable {what} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); it may be truncated or "
            "not a mura_lib file: retrain or restore it"
        ) from None
