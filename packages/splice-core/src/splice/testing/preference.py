"""Conformance of a preference loss (kind ``preference_loss``): ``PreferenceLossConformance``.

Subclass it, define ``make_config()``, and pytest runs the checks below on the registered
loss function, with real tensors of summed log-probs (``splice.objectives.preference``):

- per-pair losses of shape ``(B,)`` (a tensor or ``PreferenceLossOutput``), finite;
- gradients reach the policy's chosen and rejected log-probs, finite;
- direction: at a tie (``Δ = 0``) raising the chosen log-prob lowers the loss and raising
  the rejected one raises it (a loss with the sign flipped trains the wrong way);
- permuting the pairs permutes the per-pair losses;
- ``needs_reference`` is honest: a loss that runs without a reference reads none, and one
  that needs a reference actually uses it (changing the reference changes the losses).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from splice.objectives.preference import (
    PreferenceLogps,
    PreferenceLossOutput,
    loss_needs_reference,
)
from splice.testing.naming import NamedConformance


def resolve_preference_loss(config: Any) -> Any:
    """The registered loss function of ``config`` (``loss_fn(logps, config)``)."""
    from splice.registry import get_registry

    return get_registry().get("preference_loss", config.type).resolve_factory()


def make_logps(
    batch: int = 6, *, seed: int = 0, tie: bool = False, reference: bool = True
) -> PreferenceLogps:
    """Plausible summed log-probs of ``batch`` pairs (policy ones require grad).

    ``tie``: chosen and rejected equal (and the same log-ratio), so ``Δ = 0``.
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, 9, (batch,), generator=g).float()
    chosen = -tokens * (0.5 + torch.rand(batch, generator=g))
    rejected = chosen.clone() if tie else -tokens * (0.5 + torch.rand(batch, generator=g))
    ref_c = chosen - 0.1 * torch.randn(batch, generator=g)
    ref_r = rejected - (ref_c - chosen) if tie else rejected - 0.1 * torch.randn(batch, generator=g)
    return PreferenceLogps(
        chosen.requires_grad_(),
        rejected.requires_grad_(),
        tokens,
        tokens.clone(),
        ref_c if reference else None,
        ref_r if reference else None,
    )


def per_pair(result: Any, config: Any, batch: int) -> Tensor:
    """The ``(B,)`` losses of a loss function's result, checked."""
    losses = result.losses if isinstance(result, PreferenceLossOutput) else result
    assert isinstance(losses, Tensor), (
        f"preference loss {config.type!r} returned {type(result).__name__}; expected a (B,) "
        "tensor or a PreferenceLossOutput"
    )
    assert tuple(losses.shape) == (batch,), (
        f"preference loss {config.type!r} returned shape {tuple(losses.shape)} for {batch} "
        f"pairs; expected ({batch},) per-pair losses"
    )
    assert torch.isfinite(losses).all(), f"preference loss {config.type!r}: non-finite losses"
    return losses


class PreferenceLossConformance(NamedConformance):
    """The checks of one registered preference loss; define ``make_config()``."""

    kind: ClassVar[str] = "preference_loss"

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def _run(self, logps: PreferenceLogps) -> Tensor:
        config = self.make_config()
        return per_pair(resolve_preference_loss(config)(logps, config), config, len(logps.chosen))

    def _logps(self, **kwargs: Any) -> PreferenceLogps:
        config = self.make_config()
        needs = loss_needs_reference(resolve_preference_loss(config), config)
        return make_logps(reference=needs, **kwargs)

    def test_per_pair_losses_and_gradients(self) -> None:
        logps = self._logps()
        self._run(logps).mean().backward()
        for name in ("chosen", "rejected"):
            grad = getattr(logps, name).grad
            assert grad is not None and torch.isfinite(grad).all(), (
                f"{self.make_config().type!r}: no finite gradient reached the {name} log-probs"
            )
            assert grad.abs().sum() > 0, f"{self.make_config().type!r}: zero gradient on {name}"

    def test_prefers_the_chosen_completion(self) -> None:
        logps = self._logps(tie=True)
        self._run(logps).sum().backward()
        name = self.make_config().type
        assert logps.chosen.grad is not None and logps.rejected.grad is not None
        assert (logps.chosen.grad < 0).all(), (
            f"{name!r}: raising the chosen log-prob does not lower the loss at a tie "
            f"(d loss / d chosen = {logps.chosen.grad.tolist()}): the loss prefers the rejected"
        )
        assert (logps.rejected.grad > 0).all(), (
            f"{name!r}: raising the rejected log-prob does not raise the loss at a tie "
            f"(d loss / d rejected = {logps.rejected.grad.tolist()})"
        )

    def test_pairs_are_permutation_equivariant(self) -> None:
        logps = self._logps()
        order = torch.tensor([3, 0, 5, 1, 4, 2])

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach()[order]

        shuffled = PreferenceLogps(
            *(pick(getattr(logps, f)) for f in ("chosen", "rejected")),  # type: ignore[arg-type]
            logps.chosen_tokens[order],
            logps.rejected_tokens[order],
            pick(logps.ref_chosen),
            pick(logps.ref_rejected),
        )
        with torch.no_grad():
            base, moved = self._run(logps), self._run(shuffled)
        assert torch.allclose(base[order], moved, atol=1e-6), (
            f"{self.make_config().type!r}: permuting the pairs does not permute their losses"
        )

    def test_needs_reference_is_honest(self) -> None:
        config = self.make_config()
        fn = resolve_preference_loss(config)
        if not loss_needs_reference(fn, config):
            try:
                with torch.no_grad():
                    self._run(make_logps(reference=False))
            except Exception as e:  # the objective would crash the same way mid-run
                raise AssertionError(
                    f"{config.type!r} says it needs no reference (needs_reference=False) but "
                    f"fails without one: {type(e).__name__}: {e}"
                ) from e
            return
        logps = make_logps()
        moved = make_logps()
        assert logps.ref_chosen is not None and moved.ref_rejected is not None
        moved.ref_chosen = logps.ref_chosen + 0.7
        with torch.no_grad():
            same = torch.allclose(self._run(logps), self._run(moved))
        assert not same, (
            f"{config.type!r} declares needs_reference=True but ignores the reference "
            "log-probs: every run would pay for a reference model it never uses"
        )


__all__ = ["PreferenceLossConformance", "make_logps", "per_pair", "resolve_preference_loss"]
