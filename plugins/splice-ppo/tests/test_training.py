"""A short real PPO run on a tiny decoder: the reward must rise (it starts near 0)."""

from __future__ import annotations

import torch
from splice.generation.sampling import SamplingConfig
from splice_ppo.config import PPOConfig
from splice_ppo.objective import PPOObjective


def _train(model, obj, recorder, prompts, *, rollouts: int, lr: float) -> list[float]:
    """A bare PPO loop: collect, then one Adam update per minibatch. Returns rewards."""
    obj.setup(model)
    params = [*model.parameters(), *obj.trainable_modules()["value_head"].parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0)
    rewards = []
    for i in range(rollouts):
        gen = recorder(sampling.model_copy(update={"seed": i}))
        exp = obj.collect(model, prompts, gen)
        rewards.append(exp["metrics"]["reward"])
        for mb in obj.minibatches(exp):
            out = obj.loss(model, mb)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
    return rewards


def test_ppo_raises_reward_on_a_tiny_model(
    make_model, tokenizer, sevens_reward, recorder, make_prompts
):
    # Reward: the share of "7" among the generated characters (about 1/52 at random init).
    model = make_model(seed=0, d_model=32)
    config = PPOConfig(
        rewards=[{"reward": {"type": "format"}}],  # replaced by the "sevens" RewardSet below
        kl_coef=0.02,
        epochs=2,
        minibatch_size=8,
        lam=0.95,
        vf_coef=0.5,
        samples_per_prompt=4,
    )
    obj = PPOObjective(config, tokenizer=tokenizer, rewards=sevens_reward)
    prompts = make_prompts(["1+2=", "13+5=", "7*8=", "40-4="])
    rewards = _train(model, obj, recorder, prompts, rollouts=20, lr=1e-2)
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert start < 0.1
    assert end > start + 0.3, rewards
