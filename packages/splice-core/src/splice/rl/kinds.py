"""The contract of the registered RL kinds: ``advantage_estimator`` and ``policy_loss``.

One signature serves every online objective (GRPO's group-relative advantages, PPO's GAE
with a critic, a third party's): each component takes one typed input and returns one typed
output, so a new field (values, a per-token mask) reaches the estimators that use it without
changing the call of those that do not.

- an advantage estimator: ``estimator(AdvantageInputs) -> AdvantageOutput``;
- a policy loss: ``loss(PolicyLossInputs) -> PolicyLossOutput``.

Layout: ``N`` completions (``P`` prompts times ``G`` samples, a prompt's samples adjacent as
``generate`` returns them), each with ``L`` completion-token positions and a ``mask`` that
is True on its generated tokens (a prefix of the row). An objective builds its components
with ``build_advantage_estimator`` / ``build_policy_loss``, which also accept a component
written against the 0.1 calls (``estimator(rewards, group_size)``,
``loss(logprobs, old_logprobs, advantages, mask)``) with a ``DeprecationWarning``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from splice.deprecation import warn_deprecated

REMOVED_IN = "splice-core 0.3.0"


@dataclass(frozen=True)
class AdvantageInputs:
    """What an objective knows when it estimates advantages; estimators read what they need.

    Attributes:
        rewards: ``(N,)`` each completion's score (the weighted reward terms).
        group_size: ``G``, completions per prompt (adjacent rows); 1 when unrelated.
        mask: ``(N, L)`` bool, True on generated tokens; None when the objective works per
            completion only (GRPO).
        token_rewards: ``(N, L)`` per-token rewards when the objective shapes them (PPO: the KL
            penalty on every token plus the score on the last); None: only ``rewards``.
        values: ``(N, L)`` a critic's ``V(s_t)`` at each token from the rollout; None without
            a critic. The episode of a row ends at its last masked token.
    """

    rewards: Tensor
    group_size: int = 1
    mask: Tensor | None = None
    token_rewards: Tensor | None = None
    values: Tensor | None = None

    def require(self, estimator: str, *names: str) -> tuple[Tensor, ...]:
        """The tensors ``names`` (e.g. ``"mask", "values"``); a missing one is a ``ValueError``
        naming the estimator and the field (GAE under an objective without a critic)."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"advantage estimator {estimator!r} needs {missing} in its AdvantageInputs, "
                "which this objective does not provide (GAE needs a critic's values and the "
                "token mask: use it with an objective that has a critic, such as ppo)"
            )
        return tuple(getattr(self, n) for n in names)

    def rewards_per_token(self, estimator: str) -> Tensor:
        """``(N, L)``: ``token_rewards`` when given, else each score on its row's last token
        (needs ``mask``; ``estimator`` is named when it is missing)."""
        if self.token_rewards is not None:
            return self.token_rewards
        (mask,) = self.require(estimator, "mask")
        last = (mask.long().sum(-1) - 1).clamp(min=0)  # (N,) index of each row's last token
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        return out.scatter(1, last[:, None], self.rewards.float()[:, None]) * mask


@dataclass
class AdvantageOutput:
    """Attributes:
    advantages: ``(N,)`` one per completion (applied to each of its tokens) or ``(N, L)``
        one per token.
    returns: ``(N, L)`` value targets for a critic when the estimator has them (GAE:
        ``advantages + values``); None otherwise.
    """

    advantages: Tensor
    returns: Tensor | None = None


@dataclass(frozen=True)
class PolicyLossInputs:
    """One minibatch as a policy loss sees it.

    Attributes:
        logprobs: ``(N, L)`` log-probs of the completion tokens under the policy being
            trained (with gradient).
        old_logprobs: ``(N, L)`` the same under the rollout policy (no gradient).
        advantages: ``(N,)`` one per completion or ``(N, L)`` one per token.
        mask: ``(N, L)`` bool, the generated tokens.
    """

    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    mask: Tensor

    def token_advantages(self) -> Tensor:
        """``(N, 1)`` or ``(N, L)`` advantages in the log-probs' dtype, broadcastable over tokens.

        Raises:
            ValueError: advantages that are neither ``(N,)`` nor ``(N, L)``.
        """
        adv, lp = self.advantages, self.logprobs
        if adv.shape == lp.shape:
            return adv.to(lp.dtype)
        if adv.shape == lp.shape[:1]:
            return adv[:, None].to(lp.dtype)
        raise ValueError(
            f"advantages of shape {tuple(adv.shape)} for log-probs {tuple(lp.shape)}: expected "
            f"one per completion {tuple(lp.shape[:1])} or one per token {tuple(lp.shape)}"
        )


@dataclass
class PolicyLossOutput:
    """``per_token`` ``(N, L)`` losses (0 off-mask is not required: the caller masks) and
    detached scalar metrics (``clip_low``, ``clip_high``, ``ratio_mean``, ...)."""

    per_token: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class AdvantageEstimator(Protocol):
    """What the ``advantage_estimator`` kind's factory returns."""

    def __call__(self, inputs: AdvantageInputs) -> AdvantageOutput: ...


@runtime_checkable
class PolicyLoss(Protocol):
    """What the ``policy_loss`` kind's factory returns."""

    def __call__(self, inputs: PolicyLossInputs) -> PolicyLossOutput: ...


class SequenceAdvantageEstimator:
    """Base of estimators with one advantage per completion from the rewards and groups
    (GRPO's group normalisation, RLOO, ...): define ``sequence_advantages``.

    Called with ``AdvantageInputs``; the 0.1 call ``estimator(rewards, group_size) -> (N,)``
    still works and warns.
    """

    def sequence_advantages(self, rewards: Tensor, group_size: int) -> Tensor:
        """``(N,)`` rewards -> ``(N,)`` advantages."""
        raise NotImplementedError(f"{type(self).__name__} must define sequence_advantages()")

    def __call__(self, inputs: Any, group_size: int | None = None) -> Any:
        if isinstance(inputs, Tensor):  # the 0.1 call
            warn_deprecated(
                f"{type(self).__name__}(rewards, group_size)",
                f"{type(self).__name__}(AdvantageInputs(rewards, group_size)).advantages",
                removed_in=REMOVED_IN,
            )
            return self.sequence_advantages(inputs, int(group_size or 1))
        return AdvantageOutput(self.sequence_advantages(inputs.rewards, inputs.group_size))


class TokenPolicyLoss:
    """Base of policy losses: define ``compute(inputs) -> PolicyLossOutput``.

    Called with ``PolicyLossInputs``; the 0.1 call ``loss(logprobs, old_logprobs, advantages,
    mask)`` still works and warns.
    """

    def compute(self, inputs: PolicyLossInputs) -> PolicyLossOutput:
        raise NotImplementedError(f"{type(self).__name__} must define compute()")

    def __call__(self, inputs: Any, *legacy: Tensor) -> PolicyLossOutput:
        if isinstance(inputs, Tensor):  # the 0.1 call
            name = type(self).__name__
            warn_deprecated(
                f"{name}(logprobs, old_logprobs, advantages, mask)",
                f"{name}(PolicyLossInputs(logprobs, old_logprobs, advantages, mask))",
                removed_in=REMOVED_IN,
            )
            inputs = PolicyLossInputs(inputs, *legacy)
        return self.compute(inputs)


def _required_positional(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` requires (None when it cannot be inspected)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is inspect.Parameter.empty for p in params)


def adapt_advantage_estimator(estimator: Any, tag: str) -> AdvantageEstimator:
    """``estimator`` as an ``AdvantageEstimator``; a 0.1-style ``estimator(rewards,
    group_size) -> (N,)`` is wrapped, with a ``DeprecationWarning`` naming ``tag``."""
    if (_required_positional(estimator) or 1) < 2:
        return estimator  # type: ignore[no-any-return]
    warn_deprecated(
        f"advantage estimator {tag!r} called as estimator(rewards, group_size)",
        "estimator(inputs: splice.rl.kinds.AdvantageInputs) -> AdvantageOutput",
        removed_in=REMOVED_IN,
    )

    def call(inputs: AdvantageInputs) -> AdvantageOutput:
        return AdvantageOutput(estimator(inputs.rewards, inputs.group_size))

    return call


def adapt_policy_loss(loss: Any, tag: str) -> PolicyLoss:
    """``loss`` as a ``PolicyLoss``; a 0.1-style ``loss(logprobs, old_logprobs, advantages,
    mask)`` is wrapped, with a ``DeprecationWarning`` naming ``tag``."""
    if (_required_positional(loss) or 1) < 2:
        return loss  # type: ignore[no-any-return]
    warn_deprecated(
        f"policy loss {tag!r} called as loss(logprobs, old_logprobs, advantages, mask)",
        "loss(inputs: splice.rl.kinds.PolicyLossInputs) -> PolicyLossOutput",
        removed_in=REMOVED_IN,
    )

    def call(inputs: PolicyLossInputs) -> PolicyLossOutput:
        if inputs.advantages.ndim != 1:
            raise ValueError(
                f"policy loss {tag!r} is written for the 0.1 call, which takes one advantage "
                f"per completion, but this objective gives per-token advantages "
                f"{tuple(inputs.advantages.shape)}: port it to loss(PolicyLossInputs) and read "
                "inputs.token_advantages()"
            )
        out: PolicyLossOutput = loss(
            inputs.logprobs, inputs.old_logprobs, inputs.advantages, inputs.mask
        )
        return out

    call.legacy_call = True  # type: ignore[attr-defined]  # per-completion advantages only
    return call


def _build(kind: str, config: Any) -> tuple[Any, str]:
    """``(component, tag)`` of ``config``: a config instance, a dict with ``type``, or a tag."""
    from pydantic import TypeAdapter

    from splice.config import ComponentConfig, component_field
    from splice.registry import get_registry

    if not isinstance(config, ComponentConfig):
        config = TypeAdapter(component_field(kind)).validate_python(config)
    return get_registry().build(kind, config, None), str(config.type)


def build_advantage_estimator(config: Any) -> AdvantageEstimator:
    """The registered estimator of ``config`` (kind ``advantage_estimator``; an instance, a
    dict with ``type`` or a bare tag), adapted to the typed call."""
    return adapt_advantage_estimator(*_build("advantage_estimator", config))


def build_policy_loss(config: Any) -> PolicyLoss:
    """The registered policy loss of ``config`` (kind ``policy_loss``; an instance, a dict
    with ``type`` or a bare tag), adapted to the typed call."""
    return adapt_policy_loss(*_build("policy_loss", config))


def check_advantages(out: Any, inputs: AdvantageInputs, tag: str, *, per_token: bool) -> Tensor:
    """The advantages of ``out`` after checking them; ``per_token`` allows ``(N, L)``.

    Raises:
        ValueError: not an ``AdvantageOutput``, a shape other than ``(N,)`` (or ``(N, L)``
            when ``per_token``), or non-finite values; the message names ``tag``.
    """
    n = tuple(inputs.rewards.shape)
    shapes = [n] + ([tuple(inputs.mask.shape)] if per_token and inputs.mask is not None else [])
    adv = getattr(out, "advantages", None)
    if not isinstance(adv, Tensor):
        raise ValueError(
            f"advantage estimator {tag!r} returned {type(out).__name__}; expected an "
            "AdvantageOutput (splice.rl.kinds) holding the advantages"
        )
    if tuple(adv.shape) not in shapes or not bool(torch.isfinite(adv).all()):
        raise ValueError(
            f"advantage estimator {tag!r} returned shape {tuple(adv.shape)} / non-finite "
            f"values for rewards of shape {n}; expected finite advantages of shape "
            + " or ".join(str(s) for s in shapes)
        )
    return adv


__all__ = [
    "AdvantageEstimator",
    "AdvantageInputs",
    "AdvantageOutput",
    "PolicyLoss",
    "PolicyLossInputs",
    "PolicyLossOutput",
    "SequenceAdvantageEstimator",
    "TokenPolicyLoss",
    "adapt_advantage_estimator",
    "adapt_policy_loss",
    "build_advantage_estimator",
    "build_policy_loss",
    "check_advantages",
]
