"""Shared settings of the ``r1-zero`` smoke runs (``test_r1_zero``, ``test_r1_shipped``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def r1_tiny() -> dict[str, Any]:
    """``--set`` values that make an ``r1-zero`` study a few-second plumbing run: 2 seeds, 2
    GRPO steps of 2 prompts x 2 completions, 4 evaluation problems, all three β labels."""
    return {
        "seeds": 2,
        "progress": False,
        "sft.steps": 4,
        "grpo.steps": 2,
        "rollout.prompts_per_step": 2,
        "grpo_objective.group_size": 2,
        "eval_examples": 4,
        "eval_every": 1,
        "betas": {"0": 0.0, "small": 0.1, "large": 1.0},
    }


def run_args(recipe: str, out: Path, sets: dict[str, Any]) -> list[str]:
    """``splice run <recipe> --output-dir <out> --set k=<json> ...``'s argument list."""
    args = ["run", recipe, "--output-dir", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    return args


@pytest.fixture
def cli_args():
    """:func:`run_args`, for tests (conftest modules are not imported by name)."""
    return run_args
