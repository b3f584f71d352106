"""retain_freed_host_memory: freed host memory stays mapped for reuse (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from splice.training import trainer as trainer_module
from splice.training.configs import TrainConfig
from splice.training.host_memory import _glibc
from splice.training.trainer import Trainer
from torch import nn

# Is a 16 MiB tensor mmapped of its own (mallinfo2's hblkhd grows) or carved from the heap?
# A fresh process per arm, since the setting is process-wide and permanent.
_CHILD = """
import ctypes, json, sys, torch
from splice.training.host_memory import _glibc, retain_freed_host_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]
libc = _glibc()
libc.mallinfo2.restype = MallInfo2
applied = retain_freed_host_memory() if sys.argv[1] == "retain" else None
mapped = []
for _ in range(3):
    before = libc.mallinfo2().hblkhd
    t = torch.ones(4 << 20)  # 16 MiB, like one of a step's larger activations
    mapped.append((libc.mallinfo2().hblkhd - before) >> 20)
    del t
print(json.dumps({"applied": applied, "mapped_mib": mapped}))
"""


def _run(arm: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, arm], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _has_mallinfo2() -> bool:
    libc = _glibc()
    return libc is not None and hasattr(libc, "mallinfo2")  # glibc >= 2.33


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc's mallopt and mallinfo2")
def test_a_large_tensor_comes_from_the_reused_heap() -> None:
    default, retained = _run("default"), _run("retain")
    assert retained["applied"] is True
    # glibc's default mmap threshold starts at 128 KiB: a 16 MiB tensor is mapped on
    # allocation and unmapped on free, so each step faults it in again page by page.
    # Retained, it comes from the heap and its pages are reused.
    assert default["mapped_mib"][0] >= 16, default
    assert retained["mapped_mib"] == [0, 0, 0], retained


@pytest.mark.parametrize(
    "device, retain, applied",
    [("cpu", True, 1), ("cpu", False, 0), ("meta", True, 0)],
    ids=["cpu", "cpu, switched off", "not cpu"],
)
def test_trainer_applies_the_setting_on_cpu_when_asked(
    device: str, retain: bool, applied: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[None] = []
    monkeypatch.setattr(trainer_module, "retain_freed_host_memory", lambda: calls.append(None))
    model = nn.Linear(4, 1, device=device)  # "meta" stands for any device with its own allocator
    Trainer(model, None, [], TrainConfig(progress=False, retain_host_memory=retain))
    assert len(calls) == applied
