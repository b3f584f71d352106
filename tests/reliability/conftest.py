"""Fixtures for the reliability suite: a tiny recipe file, a tiny Trainer, a ``splice`` process.

Everything is sized to run in a second or two: a 1-layer, 16-wide decoder on one-digit
addition, or a ``Linear(4, 1)`` regression for the Trainer-level checks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from splice.interfaces import LossOutput
from splice.training.configs import TrainConfig
from splice.training.stream import ListBatches
from splice.training.trainer import Trainer
from torch import nn

TINY_RECIPE = textwrap.dedent(
    '''
    """A tiny one-digit addition run."""
    from splice.training.configs import ExperimentConfig


    def config():
        return ExperimentConfig(
            name="tiny",
            model={"type": "decoder", "vocab_size": 52, "d_model": 16, "n_layers": 1,
                   "max_seq_len": 12, "block": {"type": "pre_norm",
                                                "token_mixer": {"type": "mha", "n_heads": 2}}},
            data={"task": {"type": "arithmetic", "max_digits": 1}, "max_len": 12},
            train={"steps": 4, "batch_size": 4, "log_every": 2, "checkpoint_every": 2,
                   "progress": False, "num_threads": 1},
            eval={"loss_batches": 1, "exact_match_examples": 2, "max_new_tokens": 3},
        )
    '''
)


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_recipe.py"
    path.write_text(TINY_RECIPE)
    return path


class Regression:
    """Mean squared error of ``model(x)`` against ``y``."""

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> LossOutput:
        return LossOutput(loss=((model(batch["x"]) - batch["y"]) ** 2).mean())


def regression_batches(n: int = 64, batch: int = 8) -> ListBatches:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return ListBatches(
        list(zip(x, y)),
        lambda items: {
            "x": torch.stack([a for a, _ in items]),
            "y": torch.stack([b for _, b in items]),
        },
        batch_size=batch,
        seed=0,
    )


@pytest.fixture
def make_trainer() -> Callable[..., Trainer]:
    """``make_trainer(run_dir, steps=4, objective=None, model=None, **train) -> Trainer``."""

    def make(
        run_dir: Path | None,
        *,
        steps: int = 4,
        objective: Any = None,
        model: nn.Module | None = None,
        **train: Any,
    ) -> Trainer:
        train.setdefault("checkpoint_every", 2)
        cfg = TrainConfig(steps=steps, progress=False, log_every=2, **train)
        torch.manual_seed(0)
        return Trainer(
            model if model is not None else nn.Linear(4, 1),
            objective if objective is not None else Regression(),
            regression_batches(),
            cfg,
            run_dir=run_dir,
        )

    return make


@pytest.fixture
def splice_process() -> Callable[..., subprocess.Popen[str]]:
    """``splice_process(*args, **popen)``: ``splice ARGS`` as a process of its own.

    The command is ``python -c ...`` (no ``uv``/console-script wrapper), so the returned
    PID is the training process itself: killing it kills the run.
    """

    def start(*args: str, **popen: Any) -> subprocess.Popen[str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **popen.pop("env", {})}
        code = "import sys; from splice.cli import main; sys.exit(main())"
        return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True, **popen)

    return start


HOLD = textwrap.dedent(
    """
    import sys, time
    from splice.training.run_folder import claim_run_folder
    with claim_run_folder(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def hold_folder() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """``hold_folder(path)``: another process that claims ``path`` (and holds it until the
    test ends, or until the test kills it: the OS then drops its lock)."""
    holders: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
        )
        holders.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in holders:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
