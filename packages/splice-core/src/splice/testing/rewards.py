"""Conformance of a reward (kind ``reward``): ``RewardConformance``.

A reward factory ``build(config, ctx)`` returns a callable
``reward(prompts, completions, references) -> Tensor (N,)``, one float per completion
(``splice.interfaces.Reward``). Subclass the suite, define ``make_config()`` and, if the
reward needs them, ``make_examples()`` (prompts, completions, references); it checks:

- the factory returns a callable; scores are a float ``(N,)`` tensor, finite, detached;
- a completion's score does not depend on the rest of the batch (scored alone = in a
  batch; a reward normalised over the batch fails), and not on its order;
- scoring is deterministic (two calls agree), and an empty completion scores finitely.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from splice.testing.naming import NamedConformance

Examples = tuple[list[str], list[str], list[str]]


class RewardConformance(NamedConformance):
    """The checks of one registered reward; define ``make_config()``."""

    kind: ClassVar[str] = "reward"

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def make_examples(self) -> Examples:
        """``(prompts, completions, references)``: arithmetic answers, right and wrong,
        with and without the ``<think>``/``<answer>`` format."""
        prompts = ["2+2=", "3+4=", "10+5=", "1+1=", "6+6="]
        completions = [
            "4",
            "<think>3+4=7</think><answer>7</answer>",
            "14",
            "<answer>2</answer>",
            "twelve or so, maybe 13",
        ]
        return prompts, completions, ["4", "7", "15", "2", "12"]

    def _reward(self) -> Any:
        from splice.registry import get_registry

        config = self.make_config()
        reward = get_registry().build("reward", config, None)
        assert callable(reward), (
            f"reward {config.type!r}: the factory returned {type(reward).__name__}, not a "
            "callable reward(prompts, completions, references)"
        )
        return reward

    def _score(
        self, reward: Any, prompts: list[str], completions: list[str], refs: list[str]
    ) -> Tensor:
        name = self.make_config().type
        scores = reward(prompts, completions, refs)
        assert isinstance(scores, Tensor), (
            f"reward {name!r} returned {type(scores).__name__}; expected a float tensor (N,)"
        )
        assert scores.shape == (len(completions),) and scores.is_floating_point(), (
            f"reward {name!r} returned {scores.dtype} of shape {tuple(scores.shape)} for "
            f"{len(completions)} completions; expected float ({len(completions)},)"
        )
        assert torch.isfinite(scores).all(), f"reward {name!r}: non-finite scores {scores.tolist()}"
        assert not scores.requires_grad, f"reward {name!r}: scores must not carry a graph"
        return scores

    def test_scores_one_float_per_completion(self) -> None:
        self._score(self._reward(), *self.make_examples())

    def test_a_score_does_not_depend_on_the_batch(self) -> None:
        reward = self._reward()
        prompts, completions, refs = self.make_examples()
        batch = self._score(reward, prompts, completions, refs)
        alone = torch.stack(
            [self._score(reward, [p], [c], [r])[0] for p, c, r in zip(prompts, completions, refs)]
        )
        assert torch.allclose(batch, alone, atol=1e-6), (
            f"reward {self.make_config().type!r}: scores in a batch {batch.tolist()} differ "
            f"from scores alone {alone.tolist()} (a reward scores each completion on its own; "
            "normalise advantages, not rewards)"
        )
        back = self._score(reward, prompts[::-1], completions[::-1], refs[::-1])
        assert torch.allclose(back.flip(0), batch, atol=1e-6), (
            f"reward {self.make_config().type!r}: scores depend on the order of the batch"
        )

    def test_deterministic_and_total_on_an_empty_completion(self) -> None:
        reward = self._reward()
        prompts, completions, refs = self.make_examples()
        assert torch.equal(
            self._score(reward, prompts, completions, refs),
            self._score(reward, prompts, completions, refs),
        ), f"reward {self.make_config().type!r}: two calls on the same batch disagree"
        self._score(reward, prompts[:1], [""], refs[:1])


__all__ = ["Examples", "RewardConformance"]
