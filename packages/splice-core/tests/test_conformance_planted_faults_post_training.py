"""The post-training suites catch planted faults: each fake component below is wrong in one
way, registered as a plugin would be, and the suite test that should notice fails.

The real components pass the same suites in their plugins' tests (splice-dpo's
``test_loss_conformance.py``, splice-grpo's ``test_rl_conformance.py``, splice-lora's and
splice-qlora's ``test_*conformance.py``) and in ``test_reward_conformance.py`` here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import pytest
import torch
import torch.nn.functional as F
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.rl.kinds import AdvantageInputs, AdvantageOutput, PolicyLossInputs
from splice.testing import (
    AdapterConformance,
    AdvantageEstimatorConformance,
    PolicyLossConformance,
    PreferenceLossConformance,
    QuantizerConformance,
    RewardConformance,
)
from torch import Tensor, nn


class Fault(ComponentConfig):
    type: Literal["test_fault"] = "test_fault"
    fault: str = "none"


class DeclaresFreeFault(Fault):
    """A loss that says it needs no reference yet reads one."""

    type: Literal["test_fault_free"] = "test_fault_free"  # type: ignore[assignment]
    needs_reference: ClassVar[bool] = False


class DeclaresRefFault(Fault):
    """A loss that says it needs a reference and never reads it."""

    type: Literal["test_fault_ref"] = "test_fault_ref"  # type: ignore[assignment]
    needs_reference: ClassVar[bool] = True


# -- preference losses ---------------------------------------------------------------------
def preference_loss(logps: Any, config: Fault) -> Tensor:
    if config.fault == "reference_free":  # SimPO-like, honest
        avg_c, avg_r = logps.average()
        return -F.logsigmoid(2.0 * (avg_c - avg_r))
    if config.fault == "no_reference_used":
        return -F.logsigmoid(0.1 * (logps.chosen - logps.rejected))
    delta = logps.delta()
    if config.fault == "prefers_rejected":
        delta = -delta
    losses = -F.logsigmoid(0.1 * delta)
    return losses.mean() if config.fault == "scalar" else losses


# -- advantage estimators and policy losses --------------------------------------------------
class Estimator:
    def __init__(self, fault: str) -> None:
        self.fault = fault

    def __call__(self, inputs: AdvantageInputs) -> AdvantageOutput:
        rewards, group_size = inputs.rewards, inputs.group_size
        if self.fault == "strided_groups":  # groups taken as every G-th row
            g = rewards.view(group_size, -1).T
            return AdvantageOutput((g - g.mean(-1, keepdim=True)).T.flatten())
        g = rewards.view(-1, group_size)
        adv = (g - g.mean(-1, keepdim=True)) / (
            g.std(-1, keepdim=True) + (0.0 if self.fault == "no_eps" else 1e-4)
        )
        return AdvantageOutput((-adv if self.fault == "flipped" else adv).flatten())


class PolicyLoss:
    def __init__(self, fault: str) -> None:
        self.fault = fault

    def __call__(self, inputs: PolicyLossInputs) -> Any:
        logprobs, mask = inputs.logprobs, inputs.mask
        log_ratio = logprobs - inputs.old_logprobs
        # GSPO's token form: the value of the sequence ratio, each token's own gradient.
        if self.fault == "ignores_mask":  # the sequence ratio averaged over padding too
            log_s = log_ratio.mean(-1, keepdim=True)
        else:
            m = mask.float()
            log_s = (log_ratio * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True)
        log_ratio = log_s.detach() + logprobs - logprobs.detach()
        sign = 1.0 if self.fault == "flipped" else -1.0
        per_token = sign * torch.exp(log_ratio) * inputs.token_advantages()
        return type("Out", (), {"per_token": per_token})()


# -- rewards -------------------------------------------------------------------------------
class Reward:
    def __init__(self, fault: str) -> None:
        self.fault = fault

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], refs: Sequence[str]
    ) -> Any:
        scores = torch.tensor([float(len(c)) for c in completions])
        if self.fault == "batch_normalised":
            return scores / scores.max().clamp(min=1.0)
        if self.fault == "list":
            return scores.tolist()
        return scores / 100


# -- adapters and quantizers ---------------------------------------------------------------
class DeltaLinear(nn.Module):
    """``base(x) + x @ delta.T`` with ``delta`` trainable (zero at init)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base, self.on = base, True
        self.in_features, self.out_features = base.in_features, base.out_features
        self.delta = nn.Parameter(torch.zeros(base.out_features, base.in_features))

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (x @ self.delta.T if self.on else 0.0)


class Adapter:
    def __init__(self, fault: str) -> None:
        self.fault = fault

    def _layers(self, model: nn.Module) -> list[tuple[str, DeltaLinear]]:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, DeltaLinear)]

    def apply(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(self.fault == "base_trainable")
        for name, child in list(model.named_children()):
            if isinstance(child, nn.Linear):
                setattr(model, name, DeltaLinear(child))
        return model

    def enable(self, model: nn.Module) -> None:
        for _, m in self._layers(model):
            m.on = True

    def disable(self, model: nn.Module) -> None:
        for _, m in self._layers(model):
            m.on = self.fault == "disable_ignored"

    def merge(self, model: nn.Module) -> nn.Module:
        for name, m in self._layers(model):
            with torch.no_grad():
                if self.fault != "merge_drops_delta":
                    m.base.weight += m.delta
            setattr(model, name, m.base)
        return model

    def adapter_state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        layers = self._layers(model)
        if self.fault == "forgets_a_layer":
            layers = layers[1:]
        return {f"{n}.delta": m.delta.detach() for n, m in layers}


class Int8Rows(nn.Module):
    def __init__(self, linear: nn.Linear, keep_bias: bool) -> None:
        super().__init__()
        w = linear.weight.detach()
        scale = w.abs().amax(-1, keepdim=True) / 127
        self.register_buffer("q", torch.round(w / scale).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", linear.bias.detach().clone() if keep_bias else None)

    def weight(self) -> Tensor:
        return self.q.float() * self.scale

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight(), self.bias)


class Quantizer:
    def __init__(self, fault: str) -> None:
        self.fault = fault

    def quantize(self, linear: nn.Linear) -> nn.Module:
        return Int8Rows(linear, keep_bias=self.fault != "drops_bias")

    def dequantize(self, module: nn.Module) -> nn.Linear:
        out = nn.Linear(module.q.shape[1], module.q.shape[0], bias=module.bias is not None)
        with torch.no_grad():
            out.weight.copy_(module.weight())
            if module.bias is not None:
                out.bias.copy_(module.bias)
        return out

    def nbytes(self, module: nn.Module) -> int:
        if self.fault == "reports_float_bytes":
            return 4 * module.q.numel()
        return module.q.numel() + 4 * module.scale.numel()


class _Plugin:
    @staticmethod
    @hookimpl
    def register_preference_losses(register: Any) -> None:
        register(Fault, preference_loss)
        register(DeclaresFreeFault, preference_loss)
        register(DeclaresRefFault, preference_loss)

    @staticmethod
    @hookimpl
    def register_advantage_estimators(register: Any) -> None:
        register(Fault, lambda cfg, ctx: Estimator(cfg.fault))

    @staticmethod
    @hookimpl
    def register_policy_losses(register: Any) -> None:
        register(Fault, lambda cfg, ctx: PolicyLoss(cfg.fault))

    @staticmethod
    @hookimpl
    def register_rewards(register: Any) -> None:
        register(Fault, lambda cfg, ctx: Reward(cfg.fault))

    @staticmethod
    @hookimpl
    def register_adapters(register: Any) -> None:
        register(Fault, lambda cfg, ctx: Adapter(cfg.fault))

    @staticmethod
    @hookimpl
    def register_quantizers(register: Any) -> None:
        register(Fault, lambda cfg, ctx: Quantizer(cfg.fault))


@pytest.fixture(autouse=True)
def fault_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="post_training_faults")
    yield
    reg.unregister_plugin("post_training_faults")


def _suite(base: type, config: Any) -> Any:
    return type("Suite", (base,), {"make_config": lambda self: config})()


def _run_all(suite: Any) -> None:
    for name in dir(suite):
        if name.startswith("test_"):
            getattr(suite, name)()


def _fails(suite: Any, test: str, match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        getattr(suite, test)()


@pytest.mark.parametrize(
    ("base", "config"),
    [
        (PreferenceLossConformance, Fault()),
        (PreferenceLossConformance, Fault(fault="reference_free")),
        (AdvantageEstimatorConformance, Fault()),
        (PolicyLossConformance, Fault()),
        (RewardConformance, Fault()),
        (AdapterConformance, Fault()),
        (QuantizerConformance, Fault()),
    ],
)
def test_the_sound_components_pass(base: type, config: Any) -> None:
    _run_all(_suite(base, config))


def test_preference_loss_faults() -> None:
    s = _suite(PreferenceLossConformance, Fault(fault="prefers_rejected"))
    _fails(s, "test_prefers_the_chosen_completion", "prefers the rejected")
    s = _suite(PreferenceLossConformance, Fault(fault="scalar"))
    _fails(s, "test_per_pair_losses_and_gradients", r"expected \(6,\) per-pair losses")
    s = _suite(PreferenceLossConformance, DeclaresFreeFault())
    _fails(s, "test_needs_reference_is_honest", "says it needs no reference")
    s = _suite(PreferenceLossConformance, DeclaresRefFault(fault="no_reference_used"))
    _fails(s, "test_needs_reference_is_honest", "ignores the reference")


def test_advantage_estimator_faults() -> None:
    s = _suite(AdvantageEstimatorConformance, Fault(fault="flipped"))
    _fails(s, "test_higher_reward_never_gets_a_lower_advantage", "lower advantage")
    s = _suite(AdvantageEstimatorConformance, Fault(fault="no_eps"))
    _fails(s, "test_shape_and_finite_values", "zero std")
    s = _suite(AdvantageEstimatorConformance, Fault(fault="strided_groups"))
    _fails(s, "test_groups_are_the_adjacent_rows", "G adjacent rows")


def test_policy_loss_faults() -> None:
    s = _suite(PolicyLossConformance, Fault(fault="flipped"))
    _fails(s, "test_on_policy_gradient_follows_the_advantage", "sign of -advantage")
    s = _suite(PolicyLossConformance, Fault(fault="ignores_mask"))
    _fails(s, "test_padding_is_invisible", "under padding")


def test_reward_faults() -> None:
    s = _suite(RewardConformance, Fault(fault="batch_normalised"))
    _fails(s, "test_a_score_does_not_depend_on_the_batch", "differ from scores alone")
    s = _suite(RewardConformance, Fault(fault="list"))
    _fails(s, "test_scores_one_float_per_completion", "returned list")


def test_adapter_faults() -> None:
    s = _suite(AdapterConformance, Fault(fault="base_trainable"))
    _fails(s, "test_apply_freezes_the_base_and_trains_the_adapter", "base weights left trainable")
    s = _suite(AdapterConformance, Fault(fault="disable_ignored"))
    _fails(s, "test_disable_and_enable_switch_the_adapter", "disable\\(\\) changes nothing")
    s = _suite(AdapterConformance, Fault(fault="merge_drops_delta"))
    _fails(s, "test_merge_keeps_the_adapted_output", "merged output differs")
    s = _suite(AdapterConformance, Fault(fault="forgets_a_layer"))
    _fails(
        s, "test_adapter_state_dict_saves_every_trainable_tensor", r"leaves out \['q_proj.delta'\]"
    )


def test_quantizer_faults() -> None:
    s = _suite(QuantizerConformance, Fault(fault="drops_bias"))
    _fails(s, "test_dequantize_gives_back_a_linear", "bias is lost")
    s = _suite(QuantizerConformance, Fault(fault="reports_float_bytes"))
    _fails(s, "test_reports_fewer_bytes_than_float32", "nbytes=")


# -- regularizers ----------------------------------------------------------------------------
class L2Anchor:
    """``weight/2 * ||θ - θ0||²``; ``aliases``: θ0 holds the live tensors, not copies;
    ``pushes``: the penalty's sign is flipped."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.anchor: list[Tensor] = []

    def setup(self, model: nn.Module, data: Any = None) -> None:
        params = list(model.parameters())
        self.anchor = params if self.fault == "aliases" else [p.detach().clone() for p in params]

    def penalty(self, model: nn.Module, batch: Any) -> Tensor:
        total = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), self.anchor))
        return -total if self.fault == "pushes" else total  # type: ignore[return-value]


class _RegPlugin:
    @staticmethod
    @hookimpl
    def register_regularizers(register: Any) -> None:
        register(Fault, lambda cfg, ctx: L2Anchor(cfg.fault))


def test_regularizer_faults() -> None:
    from splice.testing import RegularizerConformance

    reg = get_registry()
    reg.register_plugin(_RegPlugin, name="regularizer_faults")
    try:

        def suite(fault: str) -> Any:
            return type(
                "Suite",
                (RegularizerConformance,),
                {
                    "make_config": lambda self: Fault(fault=fault),
                    "make_model": lambda self: nn.Linear(4, 3),
                    "make_batch": lambda self: {"x": torch.randn(2, 4)},
                },
            )()

        _run_all(suite("none"))
        _fails(suite("aliases"), "test_pulls_the_model_back", "keep references to the live ones")
        _fails(suite("pushes"), "test_pulls_the_model_back", r"penalty -\d")
    finally:
        reg.unregister_plugin("regularizer_faults")
