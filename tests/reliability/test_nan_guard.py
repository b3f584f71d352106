"""The NaN guard tells the truth: the checkpoint it names loads finite and gives a finite
loss, the newest good checkpoint survives pruning, damaged starting weights are not blamed
on the learning rate."""

from __future__ import annotations

import math

import pytest
import torch
from splice.checkpoint import CheckpointManager
from splice.training.nan_guard import NonFiniteLossError, NonFiniteWeightsError
from torch import nn


class NaNAtStep:
    """Regression loss, made NaN from the ``bad``-th call on (a forced divergence)."""

    def __init__(self, bad):
        self.bad, self.calls = bad, 0

    def loss(self, model, batch):
        from splice.interfaces import LossOutput

        self.calls += 1
        loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        return LossOutput(loss=loss * math.nan if self.calls >= self.bad else loss)


def finite_loss_of(ckpt, batch):
    model = nn.Linear(4, 1)
    CheckpointManager(ckpt.parent).load(ckpt, model=model, restore_rng=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with torch.no_grad():
        return float(((model(batch["x"]) - batch["y"]) ** 2).mean())


@pytest.mark.parametrize("checkpoint_every", [1, 3])
def test_forced_nan_leaves_a_loadable_finite_last_good_checkpoint(
    tmp_path, make_trainer, checkpoint_every
):
    # keep_last=1 with a checkpoint every step: the checkpoint written right before the
    # NaN step (never checked by a loss) must not be named, and must not have pushed the
    # last good one out.
    trainer = make_trainer(
        tmp_path, steps=20, objective=NaNAtStep(8), keep_last=1, checkpoint_every=checkpoint_every
    )
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    msg = str(err.value)
    assert "at step 8" in msg and "training diverged" in msg and "lr" in msg
    good = CheckpointManager(tmp_path / "checkpoints").latest()
    assert good is not None and f"the last good checkpoint is {good}" in msg
    # Its weights were followed by a finite loss, i.e. step <= 6 (step 7's weights gave NaN).
    assert good.name == "step-000006"
    batch = next(trainer.source.batches(0))
    assert math.isfinite(finite_loss_of(good, batch))
    if checkpoint_every == 1:  # step 7's checkpoint was set aside, kept for inspection
        assert "step-000007.nonfinite" in msg
        assert (tmp_path / "checkpoints" / "step-000007.nonfinite").is_dir()
    # Resuming takes the good checkpoint (step 6), not the set-aside one.
    again = make_trainer(tmp_path, steps=20, objective=NaNAtStep(3), keep_last=1)
    with pytest.raises(NonFiniteLossError, match="at step 9"):
        again.fit(resume=True)


def test_weights_that_overflow_in_an_update_are_not_checkpointed(tmp_path, make_trainer):
    class Huge(NaNAtStep):
        """Zero loss, then (3rd call) a finite loss ~1e38 whose SGD update overflows."""

        def loss(self, model, batch):
            from splice.interfaces import LossOutput

            self.calls += 1
            total = sum(p.sum() for p in model.parameters())
            if self.calls < self.bad:
                return LossOutput(loss=total * 0.0)
            return LossOutput(loss=total * (1e38 / total.detach().abs().clamp(min=1.0)))

    trainer = make_trainer(
        tmp_path,
        steps=6,
        objective=Huge(3),
        checkpoint_every=1,
        max_grad_norm=None,
        optimizer={"name": "sgd", "lr": 100.0},
    )
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    good = tmp_path / "checkpoints" / "step-000002"
    assert "non-finite weights (weight, bias) after the update at step 3" in str(err.value)
    assert f"the last good checkpoint is {good}" in str(err.value)
    names = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert "step-000003" not in names and "step-000002" in names
    batch = next(trainer.source.batches(0))
    assert math.isfinite(finite_loss_of(good, batch))


def test_non_finite_starting_weights_are_not_blamed_on_the_learning_rate(tmp_path, make_trainer):
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight[0, 2] = math.nan
    with pytest.raises(NonFiniteWeightsError) as err:
        make_trainer(tmp_path / "a", model=model).fit()
    msg = str(err.value)
    assert "weight" in msg and "training did not diverge" in msg and "lr" not in msg
    assert not (tmp_path / "a" / "checkpoints").exists()

    # A checkpoint whose bytes are intact but whose weights are NaN (saved by hand).
    run = tmp_path / "b"
    done = make_trainer(run)
    done.fit()
    state = CheckpointManager(run / "checkpoints").load(
        run / "checkpoints" / "step-000004", model=nn.Linear(4, 1), restore_rng=False
    )
    bad = CheckpointManager(run / "checkpoints", run_id=state["run_id"])
    keep = {k: v for k, v in state.items() if k not in ("format", "step", "rng", "run_id")}
    bad.save(4, model=model, optimizer=done.optimizer, state=keep)
    with pytest.raises(NonFiniteWeightsError, match=r"step-000004.*did not diverge"):
        make_trainer(run, steps=6).fit(resume=True)
