"""Fixtures shared by splice-vision's tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one thread is fastest on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# The tests share tiny configs from _vision_models.py (pytest runs with --import-mode=importlib,
# which does not put the test folder on sys.path).
sys.path.insert(0, str(Path(__file__).parent))
