"""Tiny decoders, the real generator and simple rewards for the PPO tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import torch
from splice.data.tokenizer import CharTokenizer
from splice.generation.sampling import GenerationOutput, SamplingConfig, generate
from splice.models.build import build_model
from splice.rewards import RewardSet
from torch import nn

TOKENIZER = CharTokenizer()


def _make_model(seed: int = 0, *, d_model: int = 16, max_seq_len: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {
            "type": "decoder",
            "vocab_size": TOKENIZER.vocab_size,
            "d_model": d_model,
            "n_layers": 1,
            "max_seq_len": max_seq_len,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        }
    )


class Recorder:
    """``generate`` bound to a sampling config, keeping its last output for assertions."""

    def __init__(self, sampling: SamplingConfig) -> None:
        self.sampling = sampling
        self.last: GenerationOutput | None = None

    pad_id = TOKENIZER.pad_id

    def __call__(
        self, model: nn.Module, prompt_ids: list[list[int]], **overrides: Any
    ) -> GenerationOutput:
        sampling = self.sampling.model_copy(update=overrides)
        self.last = generate(model, prompt_ids, sampling, pad_id=self.pad_id)
        return self.last


def sevens(prompts: Sequence[str], completions: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Share of a completion's characters that are ``7`` (0 for an empty completion)."""
    return [c.count("7") / max(len(c), 1) for c in completions]


def prompts_for(texts: list[str]) -> dict[str, Any]:
    return {
        "prompt_ids": [TOKENIZER.encode(t, bos=True) for t in texts],
        "prompts": texts,
        "references": [""] * len(texts),
    }


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one thread is fastest and avoids oversubscription on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def make_model() -> Callable[..., nn.Module]:
    """``make_model(seed=0, d_model=16, max_seq_len=32)``: a tiny seeded decoder."""
    return _make_model


@pytest.fixture
def sevens_reward() -> RewardSet:
    return RewardSet([("sevens", 1.0, sevens)])


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return TOKENIZER


@pytest.fixture
def recorder() -> type[Recorder]:
    """``recorder(sampling)``: ``generate`` bound to ``sampling``; ``.last`` is its output."""
    return Recorder


@pytest.fixture
def make_prompts() -> Callable[[list[str]], dict[str, Any]]:
    """``make_prompts(texts)``: the ``prompts`` mapping ``collect`` reads."""
    return prompts_for
