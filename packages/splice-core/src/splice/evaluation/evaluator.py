"""One callable that runs every configured evaluation on fixed held-out sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from splice.data.examples import Example
from splice.evaluation.exact_match import (
    completion_texts,
    exact_match,
    is_exact,
    reference_answer,
)
from splice.evaluation.loss import evaluate_loss
from splice.evaluation.pass_at_k import evaluate_pass_at_k
from splice.generation.sampling import SamplingConfig
from splice.interfaces import Objective


class Evaluator:
    """``evaluator(model) -> {metric: float}``: loss/perplexity, exact match, pass@k.

    Held-out sets are given once, so every call scores the same data (comparable curves).
    Each part runs only when its data is given.

    Args:
        tokenizer: encodes prompts / decodes completions (the splice tokenizer protocol).
        objective: scores ``loss_batches`` (e.g. ``SFTObjective``).
        loss_batches: collated held-out batches for ``eval_loss`` / ``eval_perplexity``.
        exact_match_examples: problems answered greedily for ``exact_match``.
        pass_at_k_examples: problems sampled ``pass_sampling.n`` times for ``pass@k``.
        sampling: settings of the exact-match generation (default greedy).
        pass_sampling: settings of the pass@k sampling (default temperature 1, n = max(ks)).
        ks: the ``k`` values of pass@k.
        prefix: prepended to every metric name (e.g. ``"addition/"``).
        rewards: a ``splice.rewards.RewardSet`` that also scores the greedy completions of
            ``exact_match_examples``: ``reward/<name>`` is each reward's mean (e.g. the
            answer-match accuracy and format rate of a chain-of-thought task), and
            ``completion_length`` the mean completion length in characters.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        objective: Objective | None = None,
        loss_batches: Sequence[Mapping[str, Any]] = (),
        exact_match_examples: Sequence[Example] = (),
        pass_at_k_examples: Sequence[Example] = (),
        sampling: SamplingConfig | None = None,
        pass_sampling: SamplingConfig | None = None,
        ks: Sequence[int] = (1,),
        batch_size: int = 64,
        prefix: str = "",
        rewards: Any = None,
    ) -> None:
        if loss_batches and objective is None:
            raise ValueError("loss_batches were given without an objective to score them")
        self.tokenizer, self.objective = tokenizer, objective
        self.loss_batches = list(loss_batches)
        self.exact_match_examples = list(exact_match_examples)
        self.pass_at_k_examples = list(pass_at_k_examples)
        self.sampling = sampling or SamplingConfig()
        self.ks = tuple(ks)
        self.pass_sampling = pass_sampling or SamplingConfig(
            temperature=1.0, n=max(self.ks), seed=0, max_new_tokens=self.sampling.max_new_tokens
        )
        self.batch_size, self.prefix = batch_size, prefix
        self.rewards = rewards

    def __call__(self, model: nn.Module) -> dict[str, float]:
        p, out = self.prefix, {}
        if self.loss_batches and self.objective is not None:
            loss = evaluate_loss(model, self.objective, self.loss_batches)
            out[f"{p}eval_loss"] = loss["loss"]
            out[f"{p}eval_perplexity"] = loss["perplexity"]
        if self.exact_match_examples and self.rewards is not None:
            out.update(self._scored(model))
        elif self.exact_match_examples:
            em = exact_match(
                model,
                self.tokenizer,
                self.exact_match_examples,
                self.sampling,
                batch_size=self.batch_size,
            )
            out[f"{p}exact_match"] = em["accuracy"]
        if self.pass_at_k_examples:
            pk = evaluate_pass_at_k(
                model,
                self.tokenizer,
                self.pass_at_k_examples,
                self.pass_sampling,
                self.ks,
                batch_size=max(1, self.batch_size // self.pass_sampling.n),
            )
            out.update({f"{p}pass@{k}": pk[f"pass@{k}"] for k in self.ks})
        return out

    def _scored(self, model: nn.Module) -> dict[str, float]:
        """Exact match, the rewards' means and the mean length, from one greedy generation."""
        examples, p = self.exact_match_examples, self.prefix
        prompts = [e.prompt for e in examples]
        sampling = self.sampling.model_copy(update={"n": 1})
        texts = [
            t[0]
            for t in completion_texts(
                model, self.tokenizer, prompts, sampling, batch_size=self.batch_size
            )
        ]
        refs = [reference_answer(e) for e in examples]
        scores = self.rewards.score(prompts, texts, refs)
        out = {f"{p}exact_match": sum(is_exact(t, r) for t, r in zip(texts, refs)) / len(texts)}
        out.update({f"{p}{k}": v for k, v in scores.metrics().items()})
        out[f"{p}completion_length"] = sum(len(t) for t in texts) / len(texts)
        return out


__all__ = ["Evaluator"]
