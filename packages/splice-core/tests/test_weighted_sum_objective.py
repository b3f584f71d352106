"""``weighted_sum``: objectives and regularizers summed with weights, each term logged."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import torch
from pydantic import ValidationError
from splice.config import ComponentConfig
from splice.data.arithmetic import ArithmeticTask
from splice.data.collate import SFTCollator
from splice.data.tokenizer import CharTokenizer
from splice.hookspecs import hookimpl
from splice.models.build import build_model
from splice.objectives.composite import WeightedSumObjective
from splice.objectives.configs import SFTConfig, WeightedSumConfig
from splice.objectives.sft import SFTObjective
from splice.registry import get_registry

pytestmark = [pytest.mark.mha, pytest.mark.usefixtures("one_thread")]
TOK = CharTokenizer()


class SquaredWeightsConfig(ComponentConfig):
    type: Literal["test_squared_weights"] = "test_squared_weights"


class SquaredWeights:
    """A regularizer: sum of squared weights, recording its setup call."""

    def __init__(self) -> None:
        self.set_up = False

    def setup(self, model: Any, data: Any = None) -> None:
        self.set_up = True

    def penalty(self, model: Any, batch: Any) -> torch.Tensor:
        return sum(p.pow(2).sum() for p in model.parameters())  # type: ignore[return-value]


class _Plugin:
    @hookimpl
    def register_regularizers(self, register: Any) -> None:
        register(SquaredWeightsConfig, lambda cfg, ctx: SquaredWeights())


@pytest.fixture(scope="module", autouse=True)
def _plugin() -> Any:
    reg = get_registry()
    reg.register_plugin(_Plugin(), name="test-weighted-sum")
    yield
    reg.unregister_plugin("test-weighted-sum")


def _model() -> Any:
    torch.manual_seed(0)
    return build_model(
        {
            "type": "decoder",
            "vocab_size": TOK.vocab_size,
            "d_model": 16,
            "n_layers": 1,
            "max_seq_len": 32,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        }
    )


def test_loss_is_the_weighted_sum_and_each_term_is_logged() -> None:
    model = _model()
    batch = SFTCollator(TOK, max_len=32)(ArithmeticTask("+").sample("train", 6))
    cfg = WeightedSumConfig(
        terms=[
            {"objective": {"type": "sft"}, "weight": 0.7},
            {"regularizer": {"type": "test_squared_weights"}, "weight": 1e-3, "name": "l2"},
        ]
    )
    obj = get_registry().build("objective", cfg)
    assert isinstance(obj, WeightedSumObjective)
    obj.setup(model)
    assert obj.terms[1][3].set_up
    out = obj.loss(model, batch)
    sft = SFTObjective(SFTConfig()).loss(model, batch).loss
    l2 = sum(p.pow(2).sum() for p in model.parameters())
    expected = 0.7 * sft + 1e-3 * l2
    torch.testing.assert_close(out.loss, expected)
    g = torch.autograd.grad(out.loss, list(model.parameters()))
    e = torch.autograd.grad(expected, list(model.parameters()))
    for a, b in zip(g, e):
        torch.testing.assert_close(a, b)
    assert out.metrics["term/sft"] == pytest.approx(float(sft))
    assert out.metrics["term/l2"] == pytest.approx(float(l2))
    assert out.metrics["sft/ce_loss"] == pytest.approx(float(sft))
    assert out.n_tokens > 0


def test_config_errors_and_round_trip() -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        WeightedSumConfig(terms=[{"weight": 1.0}])
    with pytest.raises(ValidationError, match=r"\['sft'\] repeat"):
        WeightedSumConfig(terms=[{"objective": "sft"}, {"objective": "sft", "weight": 2}])
    cfg = WeightedSumConfig(
        terms=[{"objective": "sft", "weight": 0.5}, {"aux_loss": True, "weight": 0.01}]
    )
    assert WeightedSumConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_aux_loss_term_without_an_aux_loss_is_an_error() -> None:
    model = _model()
    batch = SFTCollator(TOK, max_len=32)(ArithmeticTask("+").sample("train", 2))
    obj = WeightedSumObjective(WeightedSumConfig(terms=[{"objective": "sft"}, {"aux_loss": True}]))
    with pytest.raises(ValueError, match="needs a model that reports an auxiliary loss"):
        obj.loss(model, batch)
