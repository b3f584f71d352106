"""What a preference loss (kind ``preference_loss``) receives and returns.

A preference loss is registered as ``(ConfigClass, loss_fn)`` with
``loss_fn(logps: PreferenceLogps, config) -> Tensor (B,) | PreferenceLossOutput``: per-pair
losses for a batch of ``B`` (chosen, rejected) pairs. The ``dpo`` objective (splice-dpo)
runs the forward passes and the reference model and calls it; these types live in the core
so a third-party loss and ``splice.testing.PreferenceLossConformance`` need nothing else.

Whether the objective computes reference log-probs (a frozen copy or adapters-off pass:
real cost) is ``loss_needs_reference``: the config class's ``needs_reference`` ClassVar if
it declares one, else found by calling the loss once on a 2-pair probe and noting whether
it read ``ref_chosen``/``ref_rejected`` (directly or through ``logratios()``/``delta()``).
A reference-free third-party loss therefore never pays for a reference model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


class MissingReferenceError(ValueError):
    """A loss asked for reference log-probs that were not computed."""


@dataclass
class PreferenceLogps:
    """Per-pair sequence log-probs of a batch of ``B`` preference pairs.

    Attributes:
        chosen / rejected: ``(B,)`` float32 summed log-probs of each completion under the
            policy (with gradient).
        chosen_tokens / rejected_tokens: ``(B,)`` float32 completion token counts.
        ref_chosen / ref_rejected: ``(B,)`` the reference's summed log-probs, or None for
            reference-free losses.
    """

    chosen: Tensor
    rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None

    def logratios(self) -> tuple[Tensor, Tensor]:
        """``(c - c_ref, r - r_ref)``, each ``(B,)``."""
        if self.ref_chosen is None or self.ref_rejected is None:
            raise MissingReferenceError(
                "this loss needs reference log-probs, but none were computed"
            )
        return self.chosen - self.ref_chosen, self.rejected - self.ref_rejected

    def delta(self) -> Tensor:
        """``(B,)`` ``Δ``: the chosen minus the rejected log-ratio."""
        chosen, rejected = self.logratios()
        return chosen - rejected

    def average(self) -> tuple[Tensor, Tensor]:
        """``(c / n_c, r / n_r)``: per-token average log-probs, each ``(B,)``."""
        return (
            self.chosen / self.chosen_tokens.clamp(min=1.0),
            self.rejected / self.rejected_tokens.clamp(min=1.0),
        )


@dataclass
class PreferenceLossOutput:
    """Per-pair losses ``(B,)`` and the implicit rewards ``(B,)`` logged as rewards/chosen|rejected."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


def loss_needs_reference(loss_fn: Callable[..., Any], config: Any) -> bool:
    """Whether ``loss_fn`` with ``config`` reads reference log-probs (see the module doc).

    Raises:
        TypeError: ``needs_reference`` is declared but not a bool (names the loss).
    """
    declared = getattr(type(config), "needs_reference", None)
    if declared is not None:
        if not isinstance(declared, bool):
            raise TypeError(
                f"preference loss {getattr(config, 'type', '?')!r}: needs_reference must be "
                f"a bool ClassVar, got {declared!r}"
            )
        return declared
    two = torch.tensor([-4.0, -6.0])
    probe = _RecordingLogps(two, two.flip(0), torch.full((2,), 3.0), torch.full((2,), 3.0))
    probe.ref_chosen, probe.ref_rejected = two - 0.5, two.flip(0) - 0.5
    probe.read_reference = False
    with torch.no_grad():
        loss_fn(probe, config)
    return probe.read_reference


class _RecordingLogps(PreferenceLogps):
    """Log-probs that note whether the loss read the reference's (directly or through
    ``logratios()`` / ``delta()``)."""

    read_reference = False

    def __getattribute__(self, name: str) -> Any:
        if name in ("ref_chosen", "ref_rejected"):
            object.__setattr__(self, "read_reference", True)
        return super().__getattribute__(name)


__all__ = [
    "MissingReferenceError",
    "PreferenceLogps",
    "PreferenceLossOutput",
    "loss_needs_reference",
]
