"""Where a study ran: the machine class, device, precision, torch version and load, recorded
in ``study.json`` so a reader can compare conclusions across machines."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine_class() -> str:
    """The CUDA device name when CUDA is available, else ``"CPU <capability>"`` (e.g.
    ``"CPU AVX512"``, from ``torch.backends.cpu.get_cpu_capability()``)."""
    import torch

    if torch.cuda.is_available():
        return str(torch.cuda.get_device_name())
    return f"CPU {torch.backends.cpu.get_cpu_capability()}"


def environment(precision: str) -> dict[str, Any]:
    """The record of one study's machine; ``precision`` is the one the study pinned."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "machine_class": machine_class(),
        "precision": precision,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load,
    }
