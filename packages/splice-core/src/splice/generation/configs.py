"""Config of generation (torch-free): how tokens are picked."""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, PositiveInt

from splice.config import SpliceConfig


class SamplingConfig(SpliceConfig):
    """How to pick tokens.

    Attributes:
        max_new_tokens: most tokens generated per row (stop tokens may end a row earlier).
        temperature: divides the logits; ``0`` means greedy (argmax).
        top_k: sample only among the ``k`` most likely tokens.
        top_p: sample only among the smallest set of tokens with probability ``>= top_p``.
        n: samples per prompt; the prompt is prefilled once and its cache repeated.
        stop_token_ids: a row ends after emitting any of these (the stop token is kept).
        suppress_token_ids: never sampled (their logits are set to -inf before picking), e.g.
            a vision-language model's image placeholder; ``logprobs`` stay those of the
            model's own distribution.
        seed: seeds a dedicated ``torch.Generator``; None draws one from torch's global RNG.
        compile: decode through a ``torch.compile``-d step with static shapes (see
            ``splice.generation.static``): the first call per batch shape compiles for some
            seconds, later calls decode several times faster. For many calls of one shape
            (RL rollouts, evaluation loops); the tokens match eager decoding up to float
            rounding of the fused kernels.
    """

    max_new_tokens: PositiveInt = 32
    temperature: NonNegativeFloat = 0.0
    top_k: PositiveInt | None = None
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: PositiveInt = 1
    stop_token_ids: list[int] = Field(default_factory=list)
    suppress_token_ids: list[int] = Field(default_factory=list)
    seed: int | None = None
    compile: bool = False
