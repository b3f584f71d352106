"""Exact resume: a run SIGKILLed mid-training and resumed ends bitwise equal to an
uninterrupted one; a diverging run stops naming the step and keeps its last good checkpoint."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from splice.testing.resume import (
    assert_same_checkpoint,
    kill_and_resume,
    train_records,
    trainer_state,
)

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)

# A recipe file, as a user would write one. It registers a test task and a slowed-down SFT
# objective (so the kill reliably lands mid-run) through the plugin registry, then
# configures a run with dropout (so the RNG state must be restored too).
RECIPE = textwrap.dedent(
    '''
    """Resume test run."""
    import time
    from typing import Any, Literal

    from splice.config import ComponentConfig
    from splice.data.arithmetic import ArithmeticTask
    from splice.hookspecs import hookimpl
    from splice.registry import get_registry
    from splice.training.configs import ExperimentConfig


    class ResumeTaskConfig(ComponentConfig):
        type: Literal["resume_test_task"] = "resume_test_task"


    class SlowSFTConfig(ComponentConfig):
        type: Literal["resume_test_slow_sft"] = "resume_test_slow_sft"
        delay_s: float = 0.0


    class SlowSFT:
        def __init__(self, cfg):
            from splice.objectives.sft import SFTObjective

            self.inner, self.delay = SFTObjective(), cfg.delay_s

        def loss(self, model, batch):
            time.sleep(self.delay)
            return self.inner.loss(model, batch)


    class Plugin:
        @hookimpl
        def register_tasks(register: Any) -> None:
            register(ResumeTaskConfig, lambda cfg, ctx: ArithmeticTask("+", max_digits=2))

        @hookimpl
        def register_objectives(register: Any) -> None:
            register(SlowSFTConfig, lambda cfg, ctx: SlowSFT(cfg))


    if "resume_test_task" not in get_registry().tags("task"):
        get_registry().register_plugin(Plugin, name="resume-test")


    def config():
        return ExperimentConfig(
            name="resume",
            seed=3,
            model={"type": "decoder", "vocab_size": 52, "d_model": 32, "n_layers": 2,
                   "max_seq_len": 16, "embedding_dropout": 0.1,
                   "block": {"type": "pre_norm", "dropout": 0.1,
                             "token_mixer": {"type": "mha", "n_heads": 4}}},
            data={"task": {"type": "resume_test_task"}, "max_len": 16},
            objective={"type": "resume_test_slow_sft", "delay_s": 0.03},
            train={"steps": 30, "batch_size": 8, "grad_accum": 2, "log_every": 3,
                   "checkpoint_every": 5, "keep_last": 2, "progress": False, "num_threads": 1,
                   "optimizer": {"lr": 3e-3, "weight_decay": 0.1},
                   "schedule": {"kind": "cosine", "warmup_steps": 5}},
            eval={"every": 10, "loss_batches": 1, "exact_match_examples": 4},
        )
    '''
)


@pytest.mark.slow
@pytest.mark.mha
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    recipe = tmp_path / "resume_recipe.py"
    recipe.write_text(RECIPE)
    runs = kill_and_resume(recipe, tmp_path, kill_after=10)
    assert runs.final_step == 30

    # Weights, optimizer and RNG tensors, and trainer_state.json, bit for bit.
    assert_same_checkpoint(runs.straight, runs.resumed)
    # The resumed log has every step exactly once, with the same losses as the straight run.
    records = train_records(runs.resumed, ["step", "loss"])
    assert records == train_records(runs.straight, ["step", "loss"])
    assert [r["step"] for r in records] == list(range(1, 31))
    state = trainer_state(runs.resumed)
    assert state["micro_batches"] == 60 and state["examples"] == 480


def test_non_finite_loss_keeps_the_last_good_checkpoint_loadable(tmp_path):
    from splice.checkpoint import CheckpointManager
    from splice.interfaces import LossOutput
    from splice.training.configs import OptimizerConfig, TrainConfig
    from splice.training.trainer import NonFiniteLossError, Trainer
    from torch import nn

    class Diverges:
        """Squared error at a huge learning rate: the weights blow up to inf, then NaN."""

        def loss(self, model, batch):
            return LossOutput(loss=(model(batch["x"]) - 1.0).pow(2).mean())

    torch.manual_seed(0)
    batches = [{"x": torch.randn(8, 4)} for _ in range(100)]
    cfg = TrainConfig(
        steps=100,
        log_every=4,
        checkpoint_every=2,
        max_grad_norm=None,
        progress=False,
        optimizer=OptimizerConfig(name="sgd", lr=50.0),
    )
    with pytest.raises(NonFiniteLossError) as err:
        Trainer(nn.Linear(4, 1), Diverges(), batches, cfg, run_dir=tmp_path).fit()
    msg = str(err.value)
    bad_step = int(msg.split("at step ")[1].split(":")[0])
    mgr = CheckpointManager(tmp_path / "checkpoints")
    last = mgr.latest()
    assert f"the last good checkpoint is {last}" in msg
    assert int(last.name.split("-")[1]) < bad_step
    fresh = nn.Linear(4, 1)
    mgr.load(last, model=fresh)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) < bad_step  # nothing past the divergence was logged
