"""The probes of an ``r1-zero`` start: P(reasoning) reads the token after ``<think>`` at
the rollout temperature, and the forced-open think block is scored by its final answer."""

from __future__ import annotations

import pytest
import torch
from splice.models.build import build_model
from splice.training.experiment import build_tokenizer
from splice_recipes.r1_start import start_probes
from splice_recipes.r1_zero import R1ZeroConfig

TASK = {"type": "arithmetic", "op": "+", "min_digits": 3, "max_digits": 3,
        "chain_of_thought": True}  # fmt: skip


def always_writes(char: str):
    """The recipe's model, made to write ``char`` after every prefix: the final norm
    outputs one fixed vector (weight 0, bias along ``char``'s tied embedding), so the
    logits are the same at every position."""
    cfg = R1ZeroConfig()
    tokenizer = build_tokenizer(cfg.tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    direction = torch.randn(model.embed.weight.shape[1])
    direction /= direction.norm()
    (token,) = tokenizer.encode(char)
    with torch.no_grad():
        model.embed.weight[token] = 5.0 * direction
        model.final_norm.weight.zero_()
        model.final_norm.bias.copy_(10.0 * direction)
    return model, tokenizer


@pytest.mark.parametrize(("char", "p_reason"), [("<", 0.0), ("5", 1.0)])
def test_p_reason_reads_the_token_after_think(char, p_reason):
    model, tokenizer = always_writes(char)
    got = start_probes(model, tokenizer, TASK, examples=6, temperature=0.7, max_new_tokens=61)
    assert got["p_reason"] == pytest.approx(p_reason, abs=1e-6)
    # "<<<<..." or "5555...": no final answer, with the think block forced open or not
    assert got["forced"] == 0.0


def test_a_greedy_temperature_is_refused():
    model, tokenizer = always_writes("5")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        start_probes(model, tokenizer, TASK, examples=2, temperature=0.0, max_new_tokens=61)
