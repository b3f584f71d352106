"""Exact-match accuracy on verifiable tasks: generate, decode up to eos, compare to the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from splice.data.examples import Example
from splice.generation.sampling import SamplingConfig, generate


def reference_answer(example: Example) -> str:
    """What a completion must equal: ``answer``, or the completion when no answer is set."""
    return (example.answer or example.completion).strip()


def is_exact(completion: str, reference: str) -> bool:
    """Whether ``completion`` answers ``reference`` exactly (no normalisation).

    The completion's one final answer is compared (``splice.rewards.final_answer``: the
    single ``<answer>`` block after the last ``</think>``, or the whole completion when it
    has no tags), so a chain-of-thought completion ending ``<answer>62</answer>`` matches
    the answer ``62``; the whole stripped completion also counts (a task whose reference
    is itself a tagged completion).
    """
    from splice.rewards.verifiers import final_answer

    text = completion.strip()
    return text == reference or final_answer(text) == reference


def completion_texts(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    sampling: SamplingConfig,
    *,
    batch_size: int = 64,
    bos: bool = True,
) -> list[list[str]]:
    """``sampling.n`` decoded completions per prompt, each cut at its first stop token.

    The tokenizer's eos (when it has one) is always a stop token. Prompts are encoded as in SFT training
    (``bos + prompt``), generated in batches of ``batch_size`` prompts.

    Returns:
        ``len(prompts)`` lists of ``sampling.n`` strings (not stripped).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]  # HF tokenizers may have none
    stops = sorted({*sampling.stop_token_ids, *eos})
    sampling = sampling.model_copy(update={"stop_token_ids": stops})
    texts: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        encoded = [tokenizer.encode(p, bos=bos) for p in chunk]
        out = generate(model, encoded, sampling, pad_id=tokenizer.pad_id)
        rows = out.completions()
        for i in range(len(chunk)):
            group = rows[i * sampling.n : (i + 1) * sampling.n]
            texts.append([tokenizer.decode(r[:-1] if r and r[-1] in stops else r) for r in group])
    return texts


def exact_match(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    sampling: SamplingConfig | None = None,
    *,
    batch_size: int = 64,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Share of ``examples`` whose completion's final answer equals the answer (``is_exact``).

    Args:
        sampling: generation settings; default greedy with 32 new tokens. ``n`` is
            forced to 1 (use ``evaluate_pass_at_k`` for several samples).
        return_predictions: also return each decoded completion (for reports/debugging).

    Returns:
        ``{"accuracy", "n", "correct"}`` (+ ``"predictions"``).
    """
    sampling = (sampling or SamplingConfig()).model_copy(update={"n": 1})
    texts = completion_texts(
        model, tokenizer, [e.prompt for e in examples], sampling, batch_size=batch_size
    )
    preds = [t[0].strip() for t in texts]
    correct = sum(is_exact(p, reference_answer(e)) for p, e in zip(preds, examples))
    result: dict[str, Any] = {
        "accuracy": correct / len(examples) if examples else 0.0,
        "n": len(examples),
        "correct": correct,
    }
    if return_predictions:
        result["predictions"] = preds
    return result


__all__ = ["completion_texts", "exact_match", "is_exact", "reference_answer"]
