"""Move a batch (a mapping of tensors and other values) to the model's device."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


def batch_to(batch: Mapping[str, Any], device: torch.device) -> Mapping[str, Any]:
    """The batch with every tensor on ``device``; non-tensors are kept as they are.

    Returns ``batch`` itself when every tensor is already there (the CPU case), so the
    common path costs nothing.
    """
    if all(v.device == device for v in batch.values() if isinstance(v, Tensor)):
        return batch
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }
