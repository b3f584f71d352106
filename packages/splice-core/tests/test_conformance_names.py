"""Every conformance suite's failure starts with the component's kind, tag, plugin,
distribution and module (``splice.testing.naming``), so a run over every registered
implementation says whose component broke."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import torch
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.interfaces import ChannelMixer
from splice.registry import KINDS, get_registry
from splice.testing import ChannelMixerConformance, RewardConformance
from splice.testing.naming import NamedConformance
from torch import Tensor, nn


def test_every_suite_names_its_component() -> None:
    import splice.testing as testing

    suites = [
        getattr(testing, n)
        for n in testing.__all__
        if n.endswith("Conformance") and n != "ConformanceSuite"
    ]
    assert len(suites) >= 18
    for suite in suites:
        assert issubclass(suite, NamedConformance), f"{suite.__name__} does not name failures"
        assert suite.kind in KINDS, f"{suite.__name__}.kind = {suite.kind!r} is not a kind"


class CentredConfig(ComponentConfig):
    type: Literal["test_centred_ffn"] = "test_centred_ffn"


class Centred(ChannelMixer):
    """A linear map that subtracts the mean over the batch rows."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(x)
        return y - y.mean(0, keepdim=True)


class LengthConfig(ComponentConfig):
    type: Literal["test_batch_length_reward"] = "test_batch_length_reward"


def batch_normalised_length(config: LengthConfig, ctx: Any) -> Any:
    def reward(prompts: list[str], completions: list[str], refs: list[str]) -> Tensor:
        scores = torch.tensor([float(len(c)) for c in completions])
        return scores / scores.max().clamp(min=1.0)

    return reward


class _Plugin:
    @staticmethod
    @hookimpl
    def register_channel_mixers(register: Any) -> None:
        register(CentredConfig, lambda config, ctx: Centred(ctx.d_model))

    @staticmethod
    @hookimpl
    def register_rewards(register: Any) -> None:
        register(LengthConfig, batch_normalised_length)


@pytest.fixture(autouse=True)
def plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="named_faults", distribution="named-faults")
    yield
    reg.unregister_plugin("named_faults")


@pytest.mark.parametrize(
    ("base", "config", "test", "kind"),
    [
        (ChannelMixerConformance, CentredConfig(), "test_a_row_is_independent_of_the_batch",
         "channel_mixer"),
        (RewardConformance, LengthConfig(), "test_a_score_does_not_depend_on_the_batch", "reward"),
    ],
)  # fmt: skip
def test_a_layer_and_a_post_training_suite_name_the_plugin(
    base: type, config: Any, test: str, kind: str
) -> None:
    suite = type("Suite", (base,), {"make_config": lambda self: config})()
    where = f"{kind} {config.type!r} of plugin 'named_faults' (named-faults), module {__name__}: "
    with pytest.raises(AssertionError, match=re.escape(where)):
        getattr(suite, test)()
