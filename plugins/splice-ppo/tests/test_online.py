"""PPO in the core's online training loop (``Trainer`` + ``PromptBatches`` + ``Rollouts``):
the reward rises, metrics are logged, the value head trains and is checkpointed, and a
resumed run is bitwise equal to an uninterrupted one (policy, value head, optimizer, β)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from splice.data.arithmetic import ArithmeticTask
from splice.generation.sampling import SamplingConfig
from splice.rl.rollout import PromptBatches, Rollouts
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.trainer import Trainer
from splice_ppo.configs import PPOConfig
from splice_ppo.objective import PPOObjective

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)

TERMS = [{"reward": {"type": "format"}}]  # replaced by the "sevens" RewardSet in these tests


def _trainer(run_dir, make_model, tokenizer, rewards, *, steps, critic="shared", **ppo):
    config = PPOConfig(
        rewards=TERMS,
        critic=critic,
        samples_per_prompt=4,
        epochs=2,
        minibatch_size=8,
        vf_coef=0.5,
        **{"kl_coef": 0.02, **ppo},
    )
    objective = PPOObjective(config, rewards=rewards)
    train = TrainConfig(
        steps=steps,
        log_every=1,
        checkpoint_every=3,
        keep_last=None,
        progress=False,
        optimizer=OptimizerConfig(lr=1e-2),
    )
    prompts = PromptBatches(
        ArithmeticTask("+", max_digits=2), tokenizer, prompts_per_step=4, seed=1, max_prompt_len=16
    )
    rollouts = Rollouts(SamplingConfig(max_new_tokens=6, temperature=1.0), tokenizer, seed=2)
    model = make_model(d_model=32)
    return Trainer(model, objective, prompts, train, run_dir=run_dir, rollouts=rollouts)


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def test_ppo_in_the_trainer_raises_the_reward(tmp_path, make_model, tokenizer, sevens_reward):
    tr = _trainer(tmp_path, make_model, tokenizer, sevens_reward, steps=20)
    head = tr.objective.trainable_modules()["value_head"]
    assert any(p is head.proj.weight for p in tr.params)  # the value head is optimised
    tr.fit()
    records = _records(tmp_path)
    for key in ("reward", "kl", "explained_variance", "value_loss", "clip_fraction", "entropy"):
        assert all(key in r for r in records), key
    assert all(r["updates"] == 4.0 for r in records)  # 2 epochs x 2 minibatches of 8
    rewards = [r["reward"] for r in records]
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert start < 0.1 and end > start + 0.3, rewards
    assert head.proj.weight.abs().sum() > 0  # the zero-initialised head has learnt
    saved = load_file(tmp_path / "checkpoints" / "step-000020" / "objective.safetensors")
    assert torch.equal(saved["module.value_head.proj.weight"], head.proj.weight.detach())


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_resume_is_bitwise_equal(tmp_path, make_model, tokenizer, sevens_reward, critic):
    # An adaptive KL coefficient (target) so that beta changes each step and must be restored.
    kw = {"critic": critic, "kl_coef": 0.1, "kl_target": 0.5, "kl_horizon": 50}
    straight = _trainer(tmp_path / "a", make_model, tokenizer, sevens_reward, steps=6, **kw)
    straight.fit()
    ckpt = "checkpoints/step-000003"
    shutil.copytree(tmp_path / "a" / ckpt, tmp_path / "b" / ckpt)
    resumed = _trainer(tmp_path / "b", make_model, tokenizer, sevens_reward, steps=6, **kw)
    torch.manual_seed(123)  # the RNG state must come from the checkpoint, not from here
    resumed.fit(resume=True)
    assert resumed.objective.rollouts == 6
    assert resumed.objective.kl_ctl.value == straight.objective.kl_ctl.value != 0.1
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    (name,) = straight.objective.trainable_modules()
    sa = straight.objective.trainable_modules()[name].state_dict()
    sb = resumed.objective.trainable_modules()[name].state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa, ob = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for k in oa[i]:
            assert torch.equal(oa[i][k], ob[i][k]), (i, k)
    ra, rb = _records(tmp_path / "a"), _records(tmp_path / "b")
    # b's log starts at the checkpoint (its first 3 lines were not copied)
    assert [(r["step"], r["loss"], r["reward"]) for r in ra[3:]] == [
        (r["step"], r["loss"], r["reward"]) for r in rb
    ]
