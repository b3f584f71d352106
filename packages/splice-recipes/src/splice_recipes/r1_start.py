"""Probes of an ``r1-zero`` SFT start: what GRPO can find from it.

Greedy held-out accuracy says how the start answers; GRPO also needs to know how well it
reasons when it does, and whether it ever samples reasoning. Two probes per start, on the
same held-out problems as the study's evaluation:

- ``forced``: accuracy when the think block is forced open (the prompt continued with
  ``<think>`` and the scratchpad's first character, the first operand's last digit) and the
  rest decoded greedily: the reasoning mode's accuracy, which GRPO can move the start to.
- ``p_reason``: the probability of a non-empty think block when sampling at the rollout
  temperature (1 minus the probability of ``<`` right after ``<think>``), the mean over the
  problems: how often a rollout tries the reasoning mode at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

THINK = "<think>"


def probe_run(folder: str | Path, task: dict[str, Any], **kwargs: Any) -> dict[str, float]:
    """:func:`start_probes` of the run in ``folder`` (its newest checkpoint)."""
    from splice.evaluation.from_run import load_splice_model

    model, tokenizer, _ = load_splice_model(folder)
    return start_probes(model, tokenizer, task, **kwargs)


def start_probes(
    model: Any,
    tokenizer: Any,
    task: dict[str, Any],
    *,
    examples: int,
    temperature: float,
    max_new_tokens: int,
) -> dict[str, float]:
    """``{"forced": accuracy with the think block forced open, "p_reason": P(reasoning) at
    ``temperature``}`` of ``model`` on ``examples`` distinct held-out problems of ``task``
    (an ``arithmetic`` task config with ``chain_of_thought``)."""
    import torch
    from splice.generation.sampling import SamplingConfig, generate_text
    from splice.rewards import answer_matches
    from splice.training.configs import DataConfig
    from splice.training.experiment import build_task

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to sample reasoning, got {temperature}")
    model.eval()
    held = build_task(DataConfig(task=task).task).sample("held_out", examples)
    opened = [e.prompt + THINK + e.prompt.split("+")[0][-1] for e in held]
    # the prompt is shorter by the forced characters' worth of budget
    budget = max_new_tokens - len(THINK) - 1
    with torch.no_grad():
        rest = generate_text(model, tokenizer, opened, SamplingConfig(max_new_tokens=budget))
        forced = [
            answer_matches(o[len(e.prompt) :] + r, e.answer) for e, o, r in zip(held, opened, rest)
        ]
        close = tokenizer.encode("<", bos=False)[0]
        p_reason = []
        for length in sorted({len(e.prompt) for e in held}):  # equal lengths: no padding
            ids = [
                tokenizer.encode(e.prompt + THINK, bos=True)
                for e in held
                if len(e.prompt) == length
            ]
            logits = model(torch.tensor(ids)).logits[:, -1]  # (B, V) after "<think>"
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            p_reason += (1.0 - probs[:, close]).tolist()
    return {"forced": sum(forced) / len(forced), "p_reason": sum(p_reason) / len(p_reason)}
