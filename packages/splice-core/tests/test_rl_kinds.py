"""The typed contract of the RL kinds (``splice.rl.kinds``), the core's registered ``gae`` and
``clipped_token``, and the conformance suites for them: the real components pass, planted
faults fail with the check that names them, and 0.1-style components still run (warning)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
import torch
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.rl.advantages import gae
from splice.rl.configs import ClippedTokenLossConfig, GAEConfig
from splice.rl.kinds import (
    AdvantageInputs,
    AdvantageOutput,
    PolicyLossInputs,
    PolicyLossOutput,
    adapt_advantage_estimator,
    adapt_policy_loss,
    build_advantage_estimator,
    build_policy_loss,
    check_advantages,
)
from splice.rl.stats import whiten
from splice.testing import (
    PolicyLossConformance,
    TokenAdvantageEstimatorConformance,
    run_suite,
)
from torch import Tensor


# -- the real components pass ----------------------------------------------------------------
class TestGAEConformance(TokenAdvantageEstimatorConformance):
    def make_config(self) -> GAEConfig:
        return GAEConfig(gamma=0.9, lam=0.8)


class TestGAEMonteCarloConformance(TokenAdvantageEstimatorConformance):
    def make_config(self) -> GAEConfig:
        return GAEConfig(gamma=1.0, lam=1.0)


class TestClippedTokenConformance(PolicyLossConformance):
    def make_config(self) -> ClippedTokenLossConfig:
        return ClippedTokenLossConfig(epsilon=0.2, epsilon_high=0.28)


def test_the_core_registers_gae_and_clipped_token() -> None:
    core = get_registry().plugins["core"].registered
    assert "gae" in core["advantage_estimator"] and "clipped_token" in core["policy_loss"]


# -- planted faults ----------------------------------------------------------------------------
class TokenFault(ComponentConfig):
    type: Literal["test_token_fault"] = "test_token_fault"
    fault: str = "none"


class LossFault(ComponentConfig):
    type: Literal["test_loss_fault"] = "test_loss_fault"
    fault: str = "none"


def faulty_gae(inputs: AdvantageInputs, fault: str, gamma: float = 0.9, lam: float = 0.8) -> Any:
    """GAE written out with one planted mistake (``none``: the correct one)."""
    r, v, mask = inputs.token_rewards, inputs.values, inputs.mask
    assert r is not None and v is not None and mask is not None
    m = mask.float()
    r = r * m
    if fault != "bootstraps_padding":  # the fault reads V of the padding after a row's end
        v = v * m
    length = r.shape[1]
    adv, last = torch.zeros_like(r), torch.zeros(r.shape[0])
    steps = range(length) if fault == "forward" else reversed(range(length))
    for t in steps:
        nxt = v[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        sign = 1.0 if fault == "values_added" else -1.0
        delta = r[:, t] + gamma * nxt + sign * v[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
    if fault == "batch_whitened":
        adv = whiten(adv, mask)
    if fault == "flipped":
        adv = -adv
    return AdvantageOutput(adv, (adv + v) * m)


def faulty_loss(inputs: PolicyLossInputs, fault: str) -> PolicyLossOutput:
    adv = inputs.advantages
    if fault == "seq_only" and adv.ndim == 2:
        adv = adv[:, 0]  # reads one advantage per completion whatever it is given
    if adv.ndim == 1:
        adv = adv[:, None]
    ratio = torch.exp(inputs.logprobs - inputs.old_logprobs)
    return PolicyLossOutput(per_token=-ratio * adv)


class _Plugin:
    @staticmethod
    @hookimpl
    def register_advantage_estimators(register: Any) -> None:
        register(TokenFault, lambda cfg, ctx: lambda inputs: faulty_gae(inputs, cfg.fault))

    @staticmethod
    @hookimpl
    def register_policy_losses(register: Any) -> None:
        register(LossFault, lambda cfg, ctx: lambda inputs: faulty_loss(inputs, cfg.fault))


@pytest.fixture(autouse=True)
def fault_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="rl_kind_faults")
    yield
    reg.unregister_plugin("rl_kind_faults")


def _suite(base: type, config: Any) -> Any:
    return type("Suite", (base,), {"make_config": lambda self: config})()


def test_the_written_out_gae_is_the_registered_one_and_passes() -> None:
    inputs = TokenAdvantageEstimatorConformance()._inputs()
    want = build_advantage_estimator(GAEConfig(gamma=0.9, lam=0.8))(inputs)
    got = faulty_gae(inputs, "none")
    torch.testing.assert_close(got.advantages, want.advantages)
    torch.testing.assert_close(got.returns, want.returns)
    run_suite(_suite(TokenAdvantageEstimatorConformance, TokenFault()))
    run_suite(_suite(PolicyLossConformance, LossFault()))


@pytest.mark.parametrize(
    ("fault", "test", "match"),
    [
        ("bootstraps_padding", "test_padding_is_invisible", "under padding"),
        ("forward", "test_an_action_ignores_earlier_rewards", "backwards in time"),
        ("batch_whitened", "test_rows_are_independent", "other rows' advantages"),
        ("flipped", "test_rewards_raise_and_values_lower_the_advantage", "higher final score"),
        ("values_added", "test_rewards_raise_and_values_lower_the_advantage", "baseline"),
    ],
)
def test_token_estimator_faults_are_caught(fault: str, test: str, match: str) -> None:
    suite = _suite(TokenAdvantageEstimatorConformance, TokenFault(fault=fault))
    with pytest.raises(AssertionError, match=match):
        getattr(suite, test)()


def test_a_loss_that_ignores_per_token_advantages_is_caught() -> None:
    suite = _suite(PolicyLossConformance, LossFault(fault="seq_only"))
    suite.test_on_policy_gradient_follows_the_advantage()  # per completion it is fine
    with pytest.raises(AssertionError, match="ignores a critic's estimates"):
        suite.test_per_token_advantages()


# -- the contract ------------------------------------------------------------------------------
def test_gae_needs_values_and_says_so() -> None:
    est = build_advantage_estimator("gae")
    with pytest.raises(ValueError, match=r"'gae' needs \['values', 'mask'\]"):
        est(AdvantageInputs(torch.tensor([1.0, 0.0]), 2))


def test_the_registered_gae_is_splice_rl_gae() -> None:
    inputs = TokenAdvantageEstimatorConformance()._inputs()
    out = build_advantage_estimator({"type": "gae", "gamma": 0.7, "lam": 0.5})(inputs)
    assert inputs.token_rewards is not None and inputs.values is not None
    assert inputs.mask is not None
    adv, ret = gae(inputs.token_rewards, inputs.values, inputs.mask, gamma=0.7, lam=0.5)
    assert torch.equal(out.advantages, adv) and torch.equal(out.returns, ret)


def test_clipped_token_reads_per_token_advantages() -> None:
    lp = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    out = build_policy_loss(ClippedTokenLossConfig())(PolicyLossInputs(lp, lp.detach(), adv, mask))
    (grad,) = torch.autograd.grad(out.per_token.sum(), lp)
    assert torch.equal(grad, -adv)  # on-policy: d/dlogπ of -ρA is -A, token by token
    bad = PolicyLossInputs(lp, lp.detach(), torch.zeros(3), mask)
    with pytest.raises(ValueError, match=r"advantages of shape \(3,\) for log-probs \(2, 3\)"):
        bad.token_advantages()


def test_check_advantages_names_the_estimator_and_the_shapes() -> None:
    inputs = AdvantageInputs(torch.zeros(4), 2, torch.ones(4, 3, dtype=torch.bool))
    assert check_advantages(AdvantageOutput(torch.zeros(4, 3)), inputs, "x", per_token=True).shape
    with pytest.raises(ValueError, match=r"'x' returned shape \(4, 3\).*expected .* \(4,\)$"):
        check_advantages(AdvantageOutput(torch.zeros(4, 3)), inputs, "x", per_token=False)
    with pytest.raises(ValueError, match=r"'x' returned shape \(4,\) / non-finite"):
        check_advantages(
            AdvantageOutput(torch.full((4,), float("nan"))), inputs, "x", per_token=True
        )
    with pytest.raises(ValueError, match=r"'x' returned Tensor; expected an AdvantageOutput"):
        check_advantages(torch.zeros(4), inputs, "x", per_token=True)


def test_01_style_components_are_adapted_with_a_warning() -> None:
    def old_estimator(rewards: Tensor, group_size: int) -> Tensor:
        return rewards - rewards.view(-1, group_size).mean(-1).repeat_interleave(group_size)

    def old_loss(logprobs: Tensor, old: Tensor, advantages: Tensor, mask: Tensor) -> Any:
        return PolicyLossOutput(per_token=-advantages[:, None] * logprobs)

    with pytest.warns(DeprecationWarning, match=r"'old' called as estimator\(rewards"):
        est = adapt_advantage_estimator(old_estimator, "old")
    out = est(AdvantageInputs(torch.tensor([1.0, 3.0]), 2))
    assert out.advantages.tolist() == [-1.0, 1.0] and out.returns is None
    with pytest.warns(DeprecationWarning, match=r"'old' called as loss\(logprobs"):
        loss = adapt_policy_loss(old_loss, "old")
    lp = torch.ones(2, 3)
    got = loss(PolicyLossInputs(lp, lp, torch.tensor([2.0, -1.0]), lp.bool()))
    assert got.per_token[:, 0].tolist() == [-2.0, 1.0]
    with pytest.raises(ValueError, match=r"'old' is written for the 0.1 call.*\(2, 3\)"):
        loss(PolicyLossInputs(lp, lp, torch.ones(2, 3), lp.bool()))  # per-token: PPO's GAE
    # Typed components pass through untouched and silently.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        typed = build_advantage_estimator("gae")
        assert adapt_advantage_estimator(typed, "gae") is typed
