"""An online run checks finiteness before every rollout, whatever ``log_every`` is: a NaN
loss stops the run at the next rollout naming the last good checkpoint (it used to sample
from non-finite weights and die inside ``torch.multinomial``, leaving the diverged
checkpoint as the resume point)."""

from __future__ import annotations

import math

import pytest
import torch
from splice.checkpoint import CheckpointManager
from splice.data.arithmetic import ArithmeticTask
from splice.data.tokenizer import CharTokenizer
from splice.generation.sampling import SamplingConfig
from splice.interfaces import LossOutput
from splice.models.build import build_model
from splice.models.configs import DecoderConfig
from splice.objectives.logprobs import token_logprobs
from splice.rl.rollout import PromptBatches, Rollouts, pack_rollout
from splice.training.configs import TrainConfig
from splice.training.nan_guard import NonFiniteLossError
from splice.training.trainer import Trainer

TOK = CharTokenizer()


class NaNFromCall:
    """Likelihood of the model's own samples; NaN from the ``bad``-th loss on, so the update
    that follows makes the weights NaN."""

    def __init__(self, bad: int) -> None:
        self.bad, self.calls = bad, 0

    def collect(self, model, prompts, generate):
        out = generate(model, prompts["prompt_ids"], n=1)
        return pack_rollout(prompts["prompt_ids"], out, generate.pad_id)

    def loss(self, model, batch):
        self.calls += 1
        loss = -token_logprobs(model, batch["input_ids"], batch["completion_mask"]).sum().mean()
        return LossOutput(loss=loss * math.nan if self.calls >= self.bad else loss)


def online_trainer(run_dir, objective, **train):
    torch.manual_seed(0)
    model = build_model(
        DecoderConfig.model_validate(
            {"type": "decoder", "vocab_size": TOK.vocab_size, "d_model": 16, "n_layers": 1,
             "max_seq_len": 16, "block": {"type": "pre_norm",
                                          "token_mixer": {"type": "mha", "n_heads": 2}}}
        )
    )  # fmt: skip
    cfg = TrainConfig(steps=12, progress=False, precision="float32", max_grad_norm=None, **train)
    prompts = PromptBatches(ArithmeticTask("+", max_digits=1), TOK, prompts_per_step=2, seed=1)
    rollouts = Rollouts(SamplingConfig(max_new_tokens=3, temperature=1.0), TOK, seed=2)
    return Trainer(model, objective, prompts, cfg, run_dir=run_dir, rollouts=rollouts)


@pytest.mark.parametrize("log_every", [1, 4])
def test_a_nan_stops_an_online_run_before_the_next_rollout(tmp_path, log_every):
    trainer = online_trainer(
        tmp_path, NaNFromCall(5), log_every=log_every, checkpoint_every=3, keep_last=None
    )
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    msg = str(err.value)
    # Step 5's loss is the first NaN (step 4's weights are suspect): step 3 is good.
    good = tmp_path / "checkpoints" / "step-000003"
    assert "at step 5" in msg and f"the last good checkpoint is {good}" in msg, msg
    assert [p.name for p in CheckpointManager(good.parent).checkpoints()] == ["step-000003"]
    resumed = online_trainer(
        tmp_path, NaNFromCall(10**6), log_every=log_every, checkpoint_every=3, keep_last=None
    )
    assert resumed.fit(resume=True)["steps"] == 12  # from the good checkpoint, to the end
