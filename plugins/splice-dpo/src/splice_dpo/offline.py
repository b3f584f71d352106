"""Offline preference data from the policy's own samples, scored by a verifier.

``build_preference_pairs``: sample ``n`` completions per prompt, score them with a reward
(``splice.rewards``; e.g. ``answer_match``), and pair an accepted (correct) sample with a
rejected (incorrect) one: the on-policy pairs DPO learns most from. Prompts whose samples
are all correct or all wrong give no pair (optionally the reference answer stands in for
a missing correct sample). ``rejection_sampling``: keep the accepted samples as SFT
examples (rejection-sampling fine-tuning, RFT / STaR). Both are deterministic for a
given ``seed``; store the results with ``write_preference_jsonl`` / ``write_sft_jsonl``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splice.data.examples import Example
from splice.evaluation.exact_match import completion_texts, reference_answer
from splice.generation.sampling import SamplingConfig
from torch import nn

from splice_dpo.data import PreferenceExample


@dataclass
class ScoredSamples:
    """Each prompt's samples and whether the verifier accepted them.

    Attributes:
        examples: the prompts' examples (``prompt``, ``answer``), in order.
        samples: ``len(examples)`` lists of ``n`` completions (stripped).
        accepted: the same shape, True where the verifier's score >= the threshold.
        metrics: the verifier's logged means (``reward/<name>``).
    """

    examples: list[Example]
    samples: list[list[str]]
    accepted: list[list[bool]]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def accept_rate(self) -> float:
        flat = [a for row in self.accepted for a in row]
        return sum(flat) / len(flat) if flat else 0.0


def sample_and_score(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    verifier: Any,
    *,
    n: int = 8,
    sampling: SamplingConfig | None = None,
    threshold: float = 1.0,
    batch_size: int = 64,
) -> ScoredSamples:
    """Sample ``n`` completions per example and score them with ``verifier``.

    Args:
        verifier: a ``RewardSet`` (or any ``Reward``); a sample is accepted when its total
            reward is ``>= threshold``.
        sampling: generation settings (``n`` is overridden); default temperature 1, seed 0.
    """
    sampling = (sampling or SamplingConfig(temperature=1.0, seed=0)).model_copy(update={"n": n})
    was_training = model.training
    model.eval()
    try:
        texts = completion_texts(
            model, tokenizer, [e.prompt for e in examples], sampling, batch_size=batch_size
        )
    finally:
        model.train(was_training)
    samples = [[t.strip() for t in row] for row in texts]
    prompts = [e.prompt for e, row in zip(examples, samples) for _ in row]
    flat = [s for row in samples for s in row]
    refs = [reference_answer(e) for e, row in zip(examples, samples) for _ in row]
    score = getattr(verifier, "score", None)
    if callable(score):
        scores = score(prompts, flat, refs)
        totals, metrics = scores.total, scores.metrics()
    else:
        totals, metrics = verifier(prompts, flat, refs), {}
    ok = (totals >= threshold).tolist()
    accepted = [ok[i * n : (i + 1) * n] for i in range(len(examples))]
    return ScoredSamples(list(examples), samples, accepted, metrics)


def preference_pairs(
    scored: ScoredSamples,
    *,
    pairs_per_prompt: int = 1,
    reference_as_chosen: bool = False,
    seed: int = 0,
) -> list[PreferenceExample]:
    """Pairs ``(accepted, rejected)`` of distinct texts, at most ``pairs_per_prompt`` per prompt.

    Args:
        reference_as_chosen: when no sample of a prompt is accepted, use the example's
            reference completion as the chosen side (off-policy) instead of skipping it.
        seed: which samples are paired (seeded, so the file is reproducible).
    """
    rng = random.Random(seed)
    pairs: list[PreferenceExample] = []
    for ex, row, acc in zip(scored.examples, scored.samples, scored.accepted):
        good = sorted({s for s, a in zip(row, acc) if a})
        bad = sorted({s for s, a in zip(row, acc) if not a})
        if not good and reference_as_chosen:
            good = [ex.completion]
        if not good or not bad:
            continue
        rng.shuffle(good)
        rng.shuffle(bad)
        for k in range(min(pairs_per_prompt, max(len(good), len(bad)))):
            pairs.append(
                PreferenceExample(ex.prompt, good[k % len(good)], bad[k % len(bad)], ex.answer)
            )
    return pairs


def accepted_examples(scored: ScoredSamples, *, per_prompt: int = 1) -> list[Example]:
    """Rejection sampling: up to ``per_prompt`` distinct accepted samples of each prompt as
    SFT examples (prompts with none accepted contribute nothing)."""
    out: list[Example] = []
    for ex, row, acc in zip(scored.examples, scored.samples, scored.accepted):
        seen: list[str] = []
        for s, a in zip(row, acc):
            if a and s not in seen:
                seen.append(s)
        out.extend(Example(ex.prompt, s, ex.answer) for s in seen[:per_prompt])
    return out


def write_sft_jsonl(path: str | Path, examples: Sequence[Example]) -> None:
    """Write examples as ``{"prompt", "completion", "answer"}`` lines (the core ``jsonl`` task)."""
    with open(path, "w", encoding="utf-8") as f:
        for e in examples:
            row = {
                "prompt": e.prompt,
                "completion": e.completion,
                "answer": e.answer or e.completion,
            }
            f.write(json.dumps(row) + "\n")


__all__ = [
    "ScoredSamples",
    "accepted_examples",
    "preference_pairs",
    "sample_and_score",
    "write_sft_jsonl",
]
