"""Fixtures of splice-grpo's tests: a tiny decoder and a prompt batch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from splice.data.arithmetic import ArithmeticTask
from splice.data.tokenizer import CharTokenizer
from splice.rl.rollout import PromptBatches

TOK = CharTokenizer()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(seed: int = 0, max_seq_len: int = 24) -> torch.nn.Module:
    from splice.models.build import build_model
    from splice.models.configs import DecoderConfig

    torch.manual_seed(seed)
    return build_model(
        DecoderConfig.model_validate(
            {
                "type": "decoder",
                "vocab_size": TOK.vocab_size,
                "d_model": 32,
                "n_layers": 2,
                "max_seq_len": max_seq_len,
                "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
            }
        )
    )


def prompt_batch(n: int = 3, seed: int = 0) -> dict:
    task = ArithmeticTask("+", max_digits=2)
    return PromptBatches(task, TOK, prompts_per_step=n, seed=seed).batch(0)


def build(kind: str, config: dict | str):
    """Build a registered component from a dict (or a bare tag), as a config field would.

    RL kinds come back as plain functions of tensors that call the component with its typed
    inputs (``splice.rl.kinds``): ``estimator(rewards, group_size) -> (N,)`` and
    ``loss(logprobs, old_logprobs, advantages, mask) -> PolicyLossOutput``.
    """
    from splice.registry import get_registry
    from splice.rl.kinds import AdvantageInputs, PolicyLossInputs

    reg = get_registry()
    data = {"type": config} if isinstance(config, str) else config
    cfg = reg.get(kind, data["type"]).config_cls.model_validate(data)
    component = reg.build(kind, cfg, None)
    if kind == "advantage_estimator":
        return lambda rewards, g: component(AdvantageInputs(rewards, g)).advantages
    if kind == "policy_loss":
        return lambda lp, old, adv, mask: component(PolicyLossInputs(lp, old, adv, mask))
    return component
