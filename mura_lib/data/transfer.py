"""Moving tensors from the host to the device the model runs on.

Kept apart from batching and augmentation, which both call it: the loader for its index
permutations and batches, the augmenter for its per-batch affine parameters.
"""

from __future__ import annotations

import torch


def host_to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor to ``device`` without stalling the GPU.

    A CUDA copy from pageable memory waits until the stream has drained, which would leave the
    GPU idle while Python queues the next step; from pinned memory it is truly asynchronous.
    """
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)
