"""``ObjectiveConformance`` catches planted faults: a next-token objective on a core-only
toy model, registered as a plugin would be, is wrong in one way per ``fault``, and the
check that should notice fails with a message naming the objective's tag, plugin and
module. (Every registered objective runs the suite in the repository's
``tests/test_registered_conformance.py``.)"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pytest
import torch
import torch.nn.functional as F
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.interfaces import LossOutput, ModelOutput
from splice.registry import get_registry
from splice.testing import run_suite
from splice.testing.objectives import ObjectiveConformance
from torch import Tensor, nn

Fault = Literal[
    "none", "sum_not_mean", "flipped_gradient", "tensor_metric", "detached", "mutates_model",
    "ignores_smoothing", "first_row_weighted", "skips_a_layer",
]  # fmt: skip


class NextTokenConfig(ComponentConfig):
    type: Literal["test_next_token"] = "test_next_token"
    fault: Fault = "none"
    smoothing: float = 0.1


class ToyLM(nn.Module):
    """``ids (B, T) -> ModelOutput(logits (B, T, V))``: embedding, one tanh layer, a head."""

    def __init__(self, vocab: int, d: int = 16) -> None:
        super().__init__()
        self.embed, self.mid, self.head = (
            nn.Embedding(vocab, d),
            nn.Linear(d, d),
            nn.Linear(d, vocab),
        )

    def forward(
        self, ids: Tensor, *, attention_mask: Any = None, skip: bool = False
    ) -> ModelOutput:
        h = self.embed(ids)
        h = h if skip else torch.tanh(self.mid(h))
        return ModelOutput(self.head(h), h)


class NextToken:
    """Mean cross-entropy on completion tokens (``labels`` != -100), label-smoothed."""

    def __init__(self, config: NextTokenConfig) -> None:
        self.fault, self.smoothing = config.fault, config.smoothing

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput:
        ids, labels = batch["input_ids"], batch["labels"]
        logits = model(ids, skip=self.fault == "skips_a_layer").logits[:, :-1]
        targets = labels[:, 1:]
        smoothing = 0.1 if self.fault == "ignores_smoothing" else self.smoothing
        per = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=-100, reduction="none",
            label_smoothing=smoothing,
        )  # fmt: skip
        mask = (targets != -100).float()
        if self.fault == "first_row_weighted":
            mask = mask * torch.linspace(2.0, 1.0, mask.shape[0])[:, None]
        loss = (
            (per * mask).sum() if self.fault == "sum_not_mean" else (per * mask).sum() / mask.sum()
        )
        if self.fault == "flipped_gradient":  # the value of the loss, the gradient of -loss
            loss = 2 * loss.detach() - loss
        if self.fault == "detached":
            loss = loss.detach()
        if self.fault == "mutates_model":
            with torch.no_grad():
                model.head.bias.add_(1e-3)
        metric: Any = loss.detach() if self.fault == "tensor_metric" else loss.item()
        return LossOutput(loss, {"ce": metric}, int(mask.sum()))


class _Plugin:
    @staticmethod
    @hookimpl
    def register_objectives(register: Any) -> None:
        register(NextTokenConfig, lambda config, ctx: NextToken(config))


@pytest.fixture(autouse=True)
def objective_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="objective_faults", distribution="objective-faults")
    yield
    reg.unregister_plugin("objective_faults")


def _suite(fault: str) -> Any:
    # fault is the planted switch: another value plants another fault.
    return type(
        "Suite",
        (ObjectiveConformance,),
        {
            "make_config": lambda self: NextTokenConfig(fault=fault),
            "make_model": lambda self: ToyLM(self.tokenizer.vocab_size),
            "config_fields_exempt": ("fault",),
        },
    )()


def test_the_sound_objective_passes_every_check() -> None:
    results = run_suite(_suite("none"))
    assert set(results.values()) == {"passed"} and len(results) == 9, results


@pytest.mark.parametrize(
    ("fault", "test", "match"),
    [
        ("sum_not_mean", "test_mean_loss_is_batch_size_and_order_invariant", "repeated twice"),
        ("first_row_weighted", "test_mean_loss_is_batch_size_and_order_invariant", "or order"),
        ("flipped_gradient", "test_a_gradient_step_lowers_the_loss", "never lowers the loss"),
        ("tensor_metric", "test_loss_is_a_finite_scalar_with_float_metrics", r"call \.item"),
        ("detached", "test_loss_is_a_finite_scalar_with_float_metrics", "carry a graph"),
        ("mutates_model", "test_loss_and_setup_leave_the_weights_alone", "head.bias"),
        ("ignores_smoothing", "test_config_fields_are_honoured", r"\['smoothing=0.1'\]"),
        ("skips_a_layer", "test_gradients_reach_every_trainable_parameter", "model.mid"),
    ],
)
def test_each_planted_fault_is_caught_and_named(fault: str, test: str, match: str) -> None:
    where = (
        "objective 'test_next_token' of plugin 'objective_faults' (objective-faults), "
        f"module {__name__}: "
    )
    with pytest.raises(AssertionError, match=re.escape(where) + ".*" + match):
        getattr(_suite(fault), test)()
