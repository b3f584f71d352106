"""Where and how a study ran: the machine class, device, precision, torch version, and the
clocks (wall time, process CPU time, load average), recorded in ``study.json`` so a reader
can compare conclusions and costs across machines.

Wall time on a machine shared with other work measures the load as much as the code; the
CPU seconds of the study's process (and its waited-for children) do not, so both are kept.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Any


def machine_class() -> str:
    """The CUDA device name when CUDA is available, else ``"CPU <capability>"`` (e.g.
    ``"CPU AVX512"``, from ``torch.backends.cpu.get_cpu_capability()``)."""
    import torch

    if torch.cuda.is_available():
        return str(torch.cuda.get_device_name())
    return f"CPU {torch.backends.cpu.get_cpu_capability()}"


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its terminated, waited-for children
    (``resource.getrusage``; this process alone where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return time.process_time()
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Clock:
    """Wall and CPU time from ``start()`` on, and the load average at both ends.

    ``stop()`` returns ``{"wall_time_s", "cpu_time_s", "load_start", "load_end"}``.
    """

    wall0: float = 0.0
    cpu0: float = 0.0
    load_start: float | None = None

    @classmethod
    def start(cls) -> Clock:
        return cls(time.perf_counter(), cpu_seconds(), load_average())

    def stop(self) -> dict[str, float | None]:
        return {
            "wall_time_s": time.perf_counter() - self.wall0,
            "cpu_time_s": cpu_seconds() - self.cpu0,
            "load_start": self.load_start,
            "load_end": load_average(),
        }


def environment(precision: str) -> dict[str, Any]:
    """The record of one study's machine; ``precision`` is the one the study pinned."""
    import torch

    load = load_average()
    return {
        "machine_class": machine_class(),
        "precision": precision,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": load,
    }
