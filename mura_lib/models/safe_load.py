"""Loading torch files without running them, and saying so when a file would run code.

Every ``.pt`` file the project reads (checkpoints, ensemble members, ImageNet weights) is
loaded with ``torch.load(weights_only=True)``: torch's restricted unpickler builds tensors and
plain containers only and refuses any other object before creating it, so loading never
executes code. When it refuses, torch's own message advises retrying with
``weights_only=False``, which would execute whatever the file holds: exactly the wrong advice
for a file that carries code. :func:`load_weights_only` replaces it by one line that says what
the file holds and what to do instead.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from mura_lib.errors import CheckpointError


def load_weights_only(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with the project's messages.

    Raises:
        CheckpointError: the file holds code or objects other than tensors (refused unread),
            or it cannot be read at all (truncated, not a torch file).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # Torch names the first object it refused ("GLOBAL posix.system"); a file it cannot
        # parse as a pickle at all (an HTML page saved as .pt) names none: merely unreadable.
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if refused:
            raise CheckpointError(
                f"{path} holds code or objects, not only tensors ({refused[1]}), so it is no "
                f"mura_lib {what}; it was refused unread. Do not load it with "
                "weights_only=False: that would run code stored in the file. Use a file written "
                "by `mura train`, or delete it"
            ) from None
        detail = "torch cannot unpickle it"
    except Exception as err:
        detail = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}"
    raise CheckpointError(
        f"{path} is not a readable {what} ({detail}); it may be truncated or not a mura_lib "
        "file: retrain or restore it"
    ) from None
