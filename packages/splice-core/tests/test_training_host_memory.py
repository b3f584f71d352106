"""retain_freed_host_memory: a training step stops faulting fresh pages in (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from splice.training import trainer as trainer_module
from splice.training.config import TrainConfig
from splice.training.host_memory import _glibc
from splice.training.trainer import Trainer
from torch import nn

# Page faults per forward+backward of a small MLP, in a fresh process (the setting is
# process-wide and permanent, so each arm gets its own interpreter).
_CHILD = """
import json, resource, sys, torch
from splice.training.host_memory import retain_freed_host_memory
applied = retain_freed_host_memory() if sys.argv[1] == "retain" else None
torch.manual_seed(0)
torch.set_num_threads(1)
mlp = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))
x = torch.randn(2048, 256)
def step():
    mlp(x).square().mean().backward()
for _ in range(10):  # the retained heap grows to the step's peak during these
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 10
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults_per_step(arm: str) -> dict[str, float | bool | None]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, arm], check=True, capture_output=True, text=True
    )
    result: dict[str, float | bool | None] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(_glibc() is None, reason="mallopt settings exist only in glibc")
def test_retained_memory_removes_the_steps_page_faults() -> None:
    default, retained = _faults_per_step("default"), _faults_per_step("retain")
    assert retained["applied"] is True
    # glibc's defaults trim the freed heap after each step, so the next one faults its
    # activations in again (~1,000 faults here); retained, the pages are reused (0-50).
    assert isinstance(default["faults"], float) and isinstance(retained["faults"], float)
    assert default["faults"] >= 200, default
    assert retained["faults"] <= 0.1 * default["faults"], (default, retained)


@pytest.mark.parametrize("retain", [True, False])
def test_trainer_applies_the_setting_on_cpu_only_when_asked(
    retain: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[None] = []
    monkeypatch.setattr(trainer_module, "retain_freed_host_memory", lambda: calls.append(None))
    model = nn.Linear(4, 1)
    Trainer(model, None, [], TrainConfig(progress=False, retain_host_memory=retain))
    assert len(calls) == (1 if retain else 0)
    assert next(model.parameters()).device == torch.device("cpu")
