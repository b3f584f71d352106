"""Several rewards with weights, scored together and checked: ``RewardSet``.

``total = Σ_i weight_i * reward_i(prompts, completions, references)``; each reward's
scores are kept (``per_reward``) so their means can be logged as ``reward/<name>``.
A reward that raises, returns the wrong number of scores, or returns NaN/inf stops
the run with a ``RewardError`` naming the reward and the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from splice.interfaces import Reward
from splice.rewards.configs import RewardTermConfig


class RewardError(RuntimeError):
    """A reward failed on a batch (raised, wrong count, or non-finite scores)."""


@dataclass
class RewardScores:
    """The scores of one batch.

    Attributes:
        total: ``(N,)`` float32, the weighted sum over rewards.
        per_reward: name -> ``(N,)`` float32, each reward's unweighted scores.
        weights: name -> weight used in ``total``.
    """

    total: Tensor
    per_reward: dict[str, Tensor]
    weights: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """``reward/<name>``: each reward's mean over the batch; ``reward/total``: the total's mean."""
        out = {f"reward/{name}": float(s.mean()) for name, s in self.per_reward.items()}
        out["reward/total"] = float(self.total.mean())
        return out


@dataclass
class _Term:
    name: str
    weight: float
    reward: Reward


def _batch_label(prompts: Sequence[str]) -> str:
    first = prompts[0] if prompts else ""
    if len(first) > 60:
        first = first[:57] + "..."
    return f"batch of {len(prompts)} (first prompt {first!r})"


class RewardSet:
    """Weighted rewards applied together; see the module docstring.

    Args:
        terms: ``(name, weight, reward)`` triples; names must be unique.
    """

    def __init__(self, terms: Sequence[tuple[str, float, Reward]]) -> None:
        if not terms:
            raise ValueError("a RewardSet needs at least one reward term")
        names = [n for n, _, _ in terms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"reward names must be unique, {dup} appear more than once; "
                "set `name` on the terms that share a reward type"
            )
        self.terms = [_Term(n, float(w), r) for n, w, r in terms]
        self.last: RewardScores | None = None

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def _score_one(
        self,
        term: _Term,
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[str],
    ) -> Tensor:
        n = len(completions)
        where = _batch_label(prompts)
        try:
            raw: Any = term.reward(prompts, completions, references)
        except Exception as exc:
            raise RewardError(
                f"reward {term.name!r} raised {type(exc).__name__}: {exc} on {where}"
            ) from exc
        try:
            scores = torch.as_tensor(raw, dtype=torch.float32).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise RewardError(
                f"reward {term.name!r} returned {type(raw).__name__}, not one float per "
                f"completion, on {where}: {exc}"
            ) from exc
        if scores.shape != (n,):
            raise RewardError(
                f"reward {term.name!r} returned shape {tuple(scores.shape)} for {n} completions "
                f"(expected ({n},)) on {where}"
            )
        bad = (~torch.isfinite(scores)).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise RewardError(
                f"reward {term.name!r} returned {float(scores[i])} at index {i} "
                f"(prompt {prompts[i]!r}, completion {completions[i]!r}) on {where}; "
                f"{bad.numel()} non-finite score(s) in all"
            )
        return scores

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> RewardScores:
        """Score ``N`` completions; ``prompts[i]`` and ``references[i]`` belong to ``completions[i]``.

        Returns:
            ``RewardScores`` with ``total`` ``(N,)`` and one ``(N,)`` tensor per reward.

        Raises:
            ValueError: the three sequences differ in length.
            RewardError: a reward raised, returned a wrong count, or returned NaN/inf.
        """
        n = len(completions)
        if len(prompts) != n or len(references) != n:
            raise ValueError(
                f"need one prompt and one reference per completion, got {len(prompts)} prompts, "
                f"{n} completions, {len(references)} references"
            )
        per: dict[str, Tensor] = {}
        total = torch.zeros(n, dtype=torch.float32)
        for term in self.terms:
            scores = self._score_one(term, prompts, completions, references)  # (N,)
            per[term.name] = scores
            total = total + term.weight * scores
        self.last = RewardScores(total, per, {t.name: t.weight for t in self.terms})
        return self.last

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> Tensor:
        """A RewardSet is itself a ``Reward``: the weighted total ``(N,)``."""
        return self.score(prompts, completions, references).total

    def metrics(self) -> dict[str, float]:
        """The metrics of the last scored batch (empty before the first ``score``)."""
        return self.last.metrics() if self.last is not None else {}


def build_rewards(terms: Sequence[RewardTermConfig | dict[str, Any]]) -> RewardSet:
    """Build each term's reward through the registry (kind ``"reward"``) into a ``RewardSet``."""
    from splice.registry import get_registry

    registry = get_registry()
    built: list[tuple[str, float, Reward]] = []
    for term in terms:
        cfg = term if isinstance(term, RewardTermConfig) else RewardTermConfig.model_validate(term)
        built.append((cfg.label, cfg.weight, registry.build("reward", cfg.reward)))
    return RewardSet(built)
