"""Modules with ``after_optimizer_step()``: the Trainer calls them after every update and
logs what they return (the seam MoE routers use for bias updates and load metrics)."""

from __future__ import annotations

import json

import pytest
import torch
from splice.interfaces import LossOutput
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.step_hooks import after_optimizer_step
from splice.training.stream import ListBatches
from splice.training.trainer import Trainer
from torch import nn

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


class CountingLinear(nn.Linear):
    """Counts forwards since the last step and records the weight seen after each update."""

    def __init__(self) -> None:
        super().__init__(2, 1)
        self.forwards = 0
        self.weights_seen: list[torch.Tensor] = []

    def forward(self, x):
        self.forwards += 1
        return super().forward(x)

    def after_optimizer_step(self):
        self.weights_seen.append(self.weight.detach().clone())
        n, self.forwards = self.forwards, 0
        return {"forwards": torch.tensor(float(n))}


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = CountingLinear()

    def forward(self, x):
        return self.inner(x)


class Regression:
    def loss(self, model, batch):
        return LossOutput(loss=((model(batch["x"]) - batch["y"]) ** 2).mean())


def test_hook_runs_after_each_update_and_its_metrics_reach_metrics_jsonl(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(32, 2), torch.randn(32, 1)
    batches = ListBatches(
        list(zip(x, y)),
        lambda items: {
            "x": torch.stack([a for a, _ in items]),
            "y": torch.stack([b for _, b in items]),
        },
        batch_size=4,
        seed=0,
    )
    model = Model()
    cfg = TrainConfig(
        steps=3,
        batch_size=4,
        grad_accum=2,
        progress=False,
        log_every=1,
        optimizer=OptimizerConfig(lr=0.1),
    )
    Trainer(model, Regression(), batches, cfg, run_dir=tmp_path).fit()
    seen = model.inner.weights_seen
    assert len(seen) == 3  # once per optimizer step, not per micro-batch
    assert not torch.equal(seen[0], seen[1])  # called after the update, so it sees new weights
    assert torch.equal(seen[-1], model.inner.weight.detach())
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    assert [r["inner.forwards"] for r in train] == [2.0, 2.0, 2.0]  # both micro-batches


def test_module_names_prefix_the_metrics_and_none_is_allowed():
    class Quiet(nn.Module):
        def after_optimizer_step(self):
            return None

    model = nn.Sequential(Quiet(), CountingLinear())
    model[1](torch.zeros(1, 2))
    assert after_optimizer_step(model) == {"1.forwards": torch.tensor(1.0)}
