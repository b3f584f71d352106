"""``PPOObjective.collect`` / ``minibatches`` / ``loss`` with a real tiny decoder and the
real ``splice.generation.generate``."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter
from splice.config import ObjectiveField
from splice.generation.sampling import SamplingConfig
from splice.registry import get_registry
from splice.rewards import RewardError, RewardSet
from splice_ppo.configs import PPOConfig
from splice_ppo.objective import ROW_KEYS, PPOObjective
from splice_ppo.value_head import SeparateCritic, ValueHead
from torch import nn

TERMS = [{"reward": {"type": "length_penalty", "target": 2, "scale": 0.1}}]
PROMPTS = ["1+2=", "13+5=", "7*8="]  # different lengths: left padding is exercised


def _objective(tokenizer, rewards=None, **overrides) -> PPOObjective:
    config = PPOConfig(rewards=TERMS, **{"samples_per_prompt": 2, **overrides})
    return PPOObjective(config, tokenizer=tokenizer, rewards=rewards)


def _sampling(**kw) -> SamplingConfig:
    return SamplingConfig(**{"max_new_tokens": 6, "temperature": 1.0, "seed": 0, **kw})


def test_registered_and_built_from_config(tokenizer):
    config = TypeAdapter(ObjectiveField).validate_python({"type": "ppo", "rewards": TERMS})
    assert isinstance(config, PPOConfig) and config.rewards[0].reward.type == "length_penalty"
    obj = get_registry().build("objective", config, None)
    assert isinstance(obj, PPOObjective)
    with pytest.raises(ValueError, match="rewards"):
        PPOConfig.model_validate({"type": "ppo", "rewards": []})


def test_collect_shapes_and_alignment(make_model, tokenizer, sevens_reward, recorder, make_prompts):
    model = make_model()
    obj = _objective(tokenizer, sevens_reward, kl_coef=0.1)
    gen = recorder(_sampling())
    exp = obj.collect(model, make_prompts(PROMPTS), gen)
    out = gen.last
    n, length = out.tokens.shape
    assert n == len(PROMPTS) * 2
    for key in ("completion_mask", "old_logprobs", "old_values", "advantages", "returns"):
        assert exp[key].shape == (n, length), key
    assert exp["input_ids"].shape == (n, exp["prompt_width"] + length)
    mask = exp["completion_mask"]
    assert torch.equal(mask, out.mask)
    # The rollout's log-probs of each generated token equal the generator's own (temperature
    # 1, no top-k): the prompt + completion layout lines every token up with its prediction.
    torch.testing.assert_close(exp["old_logprobs"][mask], out.logprobs[mask], atol=1e-5, rtol=0)
    # A fresh zero-initialised value head predicts 0 everywhere.
    assert torch.equal(exp["old_values"], torch.zeros_like(exp["old_values"]))
    # The policy equals the reference at the start: the KL penalty is exactly 0, so with
    # gamma = 1 and V = 0 every token's return is the completion's score.
    assert exp["metrics"]["kl"] == 0.0
    scores = torch.tensor(
        [c.count("7") / max(len(c), 1) for c in (tokenizer.decode(r) for r in out.completions())]
    )
    expect_ret = scores[:, None].expand(n, length)
    torch.testing.assert_close(exp["returns"][mask], expect_ret[mask])
    assert exp["metrics"]["reward"] == pytest.approx(float(scores.mean()))
    # Whitened advantages: mean 0 over the generated tokens.
    assert float(exp["advantages"][mask].mean()) == pytest.approx(0.0, abs=1e-5)
    assert set(ROW_KEYS) <= set(exp)


def test_first_update_has_ratio_one_and_the_loss_trains_value_head(
    make_model, tokenizer, recorder, make_prompts
):
    model = make_model()
    obj = _objective(tokenizer, kl_coef=0.1, epochs=1)
    exp = obj.collect(model, make_prompts(PROMPTS), recorder(_sampling()))
    (mb,) = list(obj.minibatches(exp))
    out = obj.loss(model, mb)
    m = out.metrics
    # The importance ratio is 1 up to float rounding (no-grad vs. grad forward kernels).
    assert m["ratio"] == pytest.approx(1.0, abs=1e-6) and m["approx_kl"] < 1e-12
    assert m["clip_fraction"] == 0.0
    assert out.n_tokens == int(exp["completion_mask"].sum())
    # The value loss at V = 0 is 0.5 * mean(R^2).
    ret = exp["returns"][exp["completion_mask"]]
    assert m["value_loss"] == pytest.approx(float(0.5 * (ret**2).mean()), rel=1e-5)
    for key in ("policy_loss", "value_loss", "clip_fraction", "approx_kl", "entropy"):
        assert key in m
    for key in ("reward", "kl", "kl_coef", "explained_variance", "completion_length"):
        assert key in exp["metrics"]
    out.loss.backward()
    head = obj.trainable_modules()["value_head"]
    assert isinstance(head, ValueHead)
    assert head.proj.weight.grad is not None and head.proj.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_value_head_shapes_shared_and_separate(make_model, tokenizer, recorder, make_prompts):
    hidden = torch.randn(3, 5, 16)
    head = ValueHead(16)
    assert head(hidden).shape == (3, 5)
    head.proj.weight.data.fill_(1.0)
    torch.testing.assert_close(head(hidden), hidden.sum(-1))

    model = make_model()
    obj = _objective(tokenizer, critic="separate")
    exp = obj.collect(model, make_prompts(PROMPTS), recorder(_sampling()))
    critic = obj.trainable_modules()["critic"]
    assert isinstance(critic, SeparateCritic)
    assert exp["old_values"].shape == exp["old_logprobs"].shape
    assert isinstance(critic.trunk.lm_head, nn.Identity)  # hidden states only: no vocab head
    policy_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not policy_ptrs & {p.data_ptr() for p in critic.parameters()}  # its own trunk
    out = obj.loss(model, next(obj.minibatches(exp)))
    out.loss.backward()
    assert critic.head.proj.weight.grad is not None
    # The value loss trains the critic's trunk, never the policy (its grads are the policy
    # loss's alone): a policy with zero advantages would get zero gradient.


def test_minibatches_cover_every_row_each_epoch(make_model, tokenizer, recorder, make_prompts):
    model = make_model()
    obj = _objective(tokenizer, epochs=3, minibatch_size=4)
    exp = obj.collect(model, make_prompts(PROMPTS), recorder(_sampling()))  # 6 rows
    mbs = list(obj.minibatches(exp))
    assert [mb["input_ids"].shape[0] for mb in mbs] == [4, 2] * 3
    assert [mb["epoch"] for mb in mbs] == [0, 0, 1, 1, 2, 2]
    for e in range(3):  # each epoch is a permutation of the rollout's rows
        rows = torch.cat([mb["old_logprobs"] for mb in mbs[2 * e : 2 * e + 2]])
        assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, exp["old_logprobs"].tolist()))


def _digit_share(prompts, completions, refs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def test_early_stop_on_approx_kl(make_model, tokenizer, recorder, make_prompts):
    digits = RewardSet([("digits", 1.0, _digit_share)])  # varies across random completions

    def run(target_kl):
        model = make_model()
        obj = _objective(tokenizer, digits, epochs=4, minibatch_size=2, target_kl=target_kl)
        opt = torch.optim.SGD(model.parameters(), lr=3.0)  # a big step: KL jumps after one update
        exp = obj.collect(model, make_prompts(PROMPTS), recorder(_sampling()))
        kls = []
        for mb in obj.minibatches(exp):
            out = obj.loss(model, mb)
            kls.append(out.metrics["approx_kl"])
            out.loss.backward()
            opt.step()
            opt.zero_grad()
        return kls, obj.stopped_early

    full, stopped = run(None)
    assert len(full) == 4 * 3 and not stopped
    kls, stopped = run(1e-3)
    assert stopped and len(kls) < len(full)
    assert kls[-1] > 1e-3 and all(k <= 1e-3 for k in kls[:-1])  # stops right after crossing


def test_state_dict_round_trip(make_model, tokenizer, recorder, make_prompts):
    obj = _objective(tokenizer, kl_coef=0.2, kl_target=0.01, kl_horizon=10)
    model = make_model()
    obj.collect(model, make_prompts(PROMPTS), recorder(_sampling()))
    state = obj.state_dict()
    assert state["rollouts"] == 1
    other = _objective(tokenizer, kl_coef=0.2, kl_target=0.01, kl_horizon=10)
    other.load_state_dict(state)
    assert other.state_dict() == state


# ------------------------------------------------------------------ bad input
def test_prompt_longer_than_context_names_lengths(make_model, tokenizer, recorder, make_prompts):
    model = make_model(max_seq_len=12)
    obj = _objective(tokenizer)
    with pytest.raises(ValueError, match=r"= 16 exceeds the model's max_seq_len 12"):
        obj.collect(model, make_prompts(["123456789"]), recorder(_sampling()))  # bos + 9 + 6


def test_generation_budget_zero_is_a_validation_error():
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingConfig(max_new_tokens=0)


def test_all_nan_rewards_name_the_reward(make_model, tokenizer, recorder, make_prompts):
    nan = RewardSet([("broken", 1.0, lambda p, c, r: [float("nan")] * len(c))])
    obj = _objective(tokenizer, nan)
    with pytest.raises(RewardError, match=r"reward 'broken' returned nan at index 0"):
        obj.collect(make_model(), make_prompts(PROMPTS), recorder(_sampling()))


def test_missing_prompt_ids_and_minibatch_keys(make_model, tokenizer, recorder):
    obj = _objective(tokenizer)
    with pytest.raises(ValueError, match="'prompt_ids'"):
        obj.collect(make_model(), {"prompts": ["1+1="]}, recorder(_sampling()))
    obj.setup(make_model())
    with pytest.raises(ValueError, match="missing"):
        obj.loss(make_model(), {"input_ids": torch.zeros(1, 3, dtype=torch.long)})


def test_a_reward_that_needs_a_reference_names_the_prompt_without_one(
    make_model, tokenizer, recorder
):
    """No ``references`` in the prompt batch: never a silent ``""`` (an empty answer would
    then score 1 and emitting eos at once would be the best policy)."""
    obj = _objective(tokenizer, RewardSet([("accuracy", 1.0, _answer_match())]))
    prompts = {"prompt_ids": [tokenizer.encode("1+2=", bos=True)], "prompts": ["1+2="]}
    with pytest.raises(RewardError, match=r"answer_match needs a reference answer.*'1\+2='"):
        obj.collect(make_model(), prompts, recorder(_sampling()))


def _answer_match():
    from splice.rewards.configs import AnswerMatchRewardConfig
    from splice.rewards.verifiers import AnswerMatchReward

    return AnswerMatchReward(AnswerMatchRewardConfig())


def test_value_lr_scale_gives_the_critic_its_own_rate(make_model, tokenizer):
    from splice.training.configs import OptimizerConfig
    from splice.training.trainer import build_optimizer
    from torch import nn

    model = make_model()
    obj = _objective(tokenizer, value_lr_scale=10.0)
    obj.setup(model)
    head = obj.trainable_modules()["value_head"]
    opt = build_optimizer(nn.ModuleList([model, head]), OptimizerConfig(lr=1e-3))
    scales = {id(p): g.get("lr_scale", 1.0) for g in opt.param_groups for p in g["params"]}
    assert all(scales[id(p)] == 10.0 for p in head.parameters())
    assert all(scales[id(p)] == 1.0 for p in model.parameters())
