"""Tiny decoders and arithmetic preference pairs for splice-dpo's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from splice.data.arithmetic import ArithmeticTask
from splice.data.tokenizer import CharTokenizer
from splice.models.build import build_model
from splice_dpo.data import PreferenceExample
from torch import nn

TOKENIZER = CharTokenizer()


def make_model(seed: int = 0, *, d_model: int = 32, n_layers: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        {
            "type": "decoder",
            "vocab_size": TOKENIZER.vocab_size,
            "d_model": d_model,
            "n_layers": n_layers,
            "max_seq_len": 32,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        }
    )


def make_pairs(n: int = 8, *, seed: int = 0) -> list[PreferenceExample]:
    """Arithmetic pairs: the right answer chosen, an off-by-some wrong answer rejected
    (different lengths on some pairs, so padding and per-token averages are exercised)."""
    task = ArithmeticTask("+", max_digits=2)
    out = []
    for i, ex in enumerate(task.sample("train", n, seed=seed)):
        wrong = str(int(ex.answer) + (7 if i % 2 else 100))
        out.append(PreferenceExample(ex.prompt, ex.completion, wrong, ex.answer))
    return out


@pytest.fixture(name="make_model")
def _make_model_fixture() -> Callable[..., nn.Module]:
    return make_model


@pytest.fixture(name="make_pairs")
def _make_pairs_fixture() -> Callable[..., list[PreferenceExample]]:
    return make_pairs


@pytest.fixture(name="tok")
def _tokenizer() -> CharTokenizer:
    return TOKENIZER


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
