"""The frozen reference model that DPO, PPO, GRPO and KL penalties compare against.

When the policy carries adapters (LoRA, QLoRA) the reference is the policy itself with
its adapters switched off: no second copy of the weights. Otherwise it is a frozen deep
copy taken when the ``ReferenceModel`` is made (at the start of training). Either way
the reference runs in eval mode (no dropout) and without gradients.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

from splice.adapters import adapters_disabled, has_adapters
from splice.objectives.logprobs import TokenLogprobs, token_logprobs

ReferenceMode = Literal["auto", "adapters_off", "copy"]


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module  # DDP-style wrappers
    return model


class ReferenceModel:
    """A frozen reference for ``policy``.

    Args:
        policy: the model being trained.
        mode: ``"adapters_off"`` (the policy with adapters disabled; needs adapters),
            ``"copy"`` (a frozen deep copy), or ``"auto"`` (adapters_off when the policy has
            adapter layers, else copy).

    Raises:
        ValueError: ``mode="adapters_off"`` on a policy without adapter layers.
    """

    def __init__(self, policy: nn.Module, *, mode: ReferenceMode = "auto") -> None:
        base = _unwrap(policy)
        if mode == "auto":
            mode = "adapters_off" if has_adapters(base) else "copy"
        if mode == "adapters_off" and not has_adapters(base):
            raise ValueError(
                "reference mode 'adapters_off' needs a policy with adapter layers "
                "(apply an adapter such as splice-lora's), or use mode='copy'"
            )
        self.mode: ReferenceMode = mode
        self._policy = base
        self._copy: nn.Module | None = None
        if mode == "copy":
            self._copy = copy.deepcopy(base).eval().requires_grad_(False)

    @property
    def shares_weights(self) -> bool:
        """True when the reference costs no extra copy of the weights."""
        return self._copy is None

    @contextlib.contextmanager
    def model(self) -> Iterator[nn.Module]:
        """The reference as a module, in eval mode, inside ``torch.no_grad``."""
        if self._copy is not None:
            with torch.no_grad():
                yield self._copy
            return
        was_training = self._policy.training
        self._policy.eval()
        try:
            with torch.no_grad(), adapters_disabled(self._policy):
                yield self._policy
        finally:
            self._policy.train(was_training)

    def token_logprobs(self, input_ids: Tensor, score_mask: Tensor, **model_inputs: Any) -> Tensor:
        """``(B, T-1)`` reference log-probs of ``input_ids[:, 1:]`` (see ``token_logprobs``)."""
        with self.model() as ref:
            out: TokenLogprobs = token_logprobs(ref, input_ids, score_mask, **model_inputs)
        return out.logprobs

    def state_dict(self) -> dict[str, Tensor]:
        """The copy's weights (empty when the reference shares the policy's weights)."""
        return {} if self._copy is None else self._copy.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a copy reference saved by ``state_dict`` (exact resume)."""
        if self._copy is not None and state:
            self._copy.load_state_dict(state)


__all__ = ["ReferenceMode", "ReferenceModel"]
