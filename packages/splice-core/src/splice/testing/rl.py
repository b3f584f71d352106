"""Conformance of the RL kinds: advantage estimators and policy losses.

``AdvantageEstimatorConformance`` (kind ``advantage_estimator``,
``estimator(rewards (N,), group_size) -> advantages (N,)``, a prompt's ``G`` completions
adjacent):

- ``(N,)`` finite advantages, also for a group whose rewards are all equal (no 0/0);
- within a group a higher reward never gets a lower advantage;
- permuting completions inside a group permutes their advantages (the groups are the
  adjacent ``G`` rows, not a strided view).

``PolicyLossConformance`` (kind ``policy_loss``,
``loss(logprobs (N, L), old_logprobs (N, L), advantages (N,), mask (N, L)) -> output``
with ``output.per_token (N, L)``):

- ``(N, L)`` finite per-token losses;
- on-policy (``logprobs == old_logprobs``) the gradient on a real token has the sign of
  ``-advantage`` (raise the log-prob of what did well), and zero advantages give zero;
- padding is invisible: changing log-probs where ``mask`` is False leaves the masked
  losses unchanged;
- permuting the completions permutes the per-token losses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def build_component(kind: str, config: Any) -> Any:
    """``factory(config, None)`` of the registration of ``config`` for ``kind``."""
    from splice.registry import get_registry

    return get_registry().build(kind, config, None)


class AdvantageEstimatorConformance:
    """The checks of one registered advantage estimator; define ``make_config()``."""

    group_size = 4

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def _advantages(self, rewards: Tensor) -> Tensor:
        config = self.make_config()
        adv = build_component("advantage_estimator", config)(rewards, self.group_size)
        assert isinstance(adv, Tensor) and tuple(adv.shape) == tuple(rewards.shape), (
            f"advantage estimator {config.type!r} returned "
            f"{tuple(getattr(adv, 'shape', ())) or type(adv).__name__} for rewards of shape "
            f"{tuple(rewards.shape)}; expected the same shape"
        )
        assert torch.isfinite(adv).all(), (
            f"advantage estimator {config.type!r}: non-finite advantages for rewards "
            f"{rewards.tolist()} (a group of equal rewards must not divide by a zero std)"
        )
        return adv

    def _rewards(self) -> Tensor:
        g = torch.Generator().manual_seed(0)
        r = torch.rand(3 * self.group_size, generator=g)
        r[: self.group_size] = 0.5  # one group with no signal
        return r

    def test_shape_and_finite_values(self) -> None:
        self._advantages(self._rewards())

    def test_higher_reward_never_gets_a_lower_advantage(self) -> None:
        r = self._rewards()
        adv = self._advantages(r).view(-1, self.group_size)
        rg = r.view(-1, self.group_size)
        for i in range(rg.shape[0]):
            order = rg[i].argsort()
            assert (adv[i][order].diff() >= -1e-6).all(), (
                f"{self.make_config().type!r}: in group {i} a higher reward got a lower "
                f"advantage (rewards {rg[i].tolist()}, advantages {adv[i].tolist()})"
            )

    def test_groups_are_the_adjacent_rows(self) -> None:
        r = self._rewards()
        g = self.group_size
        perm = torch.cat([torch.randperm(g, generator=torch.Generator().manual_seed(i)) + i * g
                          for i in range(r.numel() // g)])  # fmt: skip
        base, moved = self._advantages(r), self._advantages(r[perm])
        assert torch.allclose(base[perm], moved, atol=1e-5), (
            f"{self.make_config().type!r}: shuffling completions inside their group changes "
            "their advantages (groups must be the G adjacent rows, as generate returns them)"
        )


class PolicyLossConformance:
    """The checks of one registered policy loss; define ``make_config()``."""

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def _inputs(self, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        n, t = 4, 6
        old = -torch.rand(n, t, generator=g) * 3
        mask = torch.ones(n, t, dtype=torch.bool)
        mask[1, 4:] = mask[3, 2:] = False  # shorter completions, right-padded
        adv = torch.tensor([1.0, -0.5, 0.0, 2.0])
        return old.clone().requires_grad_(), old, adv, mask

    def _per_token(self, logprobs: Tensor, old: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
        config = self.make_config()
        out = build_component("policy_loss", config)(logprobs, old, adv, mask)
        per_token = getattr(out, "per_token", None)
        assert isinstance(per_token, Tensor) and per_token.shape == logprobs.shape, (
            f"policy loss {config.type!r} must return an object with per_token of shape "
            f"{tuple(logprobs.shape)}, got {type(out).__name__}"
        )
        assert torch.isfinite(per_token).all(), f"policy loss {config.type!r}: non-finite losses"
        return per_token

    def test_on_policy_gradient_follows_the_advantage(self) -> None:
        logprobs, old, adv, mask = self._inputs()
        (self._per_token(logprobs, old, adv, mask) * mask).sum().backward()
        grad = logprobs.grad
        assert grad is not None
        name = self.make_config().type
        for i, a in enumerate(adv.tolist()):
            g = grad[i][mask[i]]
            if a == 0:
                assert torch.allclose(g, torch.zeros_like(g)), (
                    f"{name!r}: a zero advantage still moves completion {i}"
                )
            else:
                assert (torch.sign(g) == -torch.sign(torch.tensor(a))).all(), (
                    f"{name!r}: on-policy, completion {i} (advantage {a}) gets gradient "
                    f"{g.tolist()}; expected the sign of -advantage on every real token"
                )

    def test_padding_is_invisible(self) -> None:
        logprobs, old, adv, mask = self._inputs()
        junk = logprobs.detach().clone()
        junk[~mask] = junk[~mask] - 5.0
        with torch.no_grad():
            base = self._per_token(logprobs.detach(), old, adv, mask) * mask
            moved = self._per_token(junk, old, adv, mask) * mask
        assert torch.allclose(base, moved, atol=1e-6), (
            f"{self.make_config().type!r}: log-probs under padding (mask False) change the "
            "losses of real tokens (average and ratio only over mask)"
        )

    def test_completions_are_permutation_equivariant(self) -> None:
        logprobs, old, adv, mask = self._inputs()
        lp = logprobs.detach() + 0.1 * torch.randn(
            logprobs.shape, generator=torch.Generator().manual_seed(3)
        )
        order = torch.tensor([2, 0, 3, 1])
        with torch.no_grad():
            base = self._per_token(lp, old, adv, mask) * mask
            moved = self._per_token(lp[order], old[order], adv[order], mask[order]) * mask[order]
        assert torch.allclose(base[order], moved, atol=1e-6), (
            f"{self.make_config().type!r}: permuting completions does not permute their losses"
        )


__all__ = ["AdvantageEstimatorConformance", "PolicyLossConformance", "build_component"]
