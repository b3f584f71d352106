"""The critic: one scalar ``V(s_t)`` per token, read from a language model's final hidden states.

``shared`` puts a ``ValueHead`` on the policy's own trunk (one forward gives log-probs and
values; the value loss also trains the trunk). ``separate`` gives the critic its own trunk:
a copy of the policy taken at the start of training, trained only by the value loss.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn


class ValueHead(nn.Module):
    """``hidden (B, T, D) -> values (B, T)``: a linear map to one scalar per position.

    Initialised to zero, so the first values are 0 and the value loss sends no gradient
    into a shared trunk until the head has learnt something (the policy starts undisturbed).
    """

    def __init__(self, d_model: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(d_model, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        out: Tensor = self.proj(self.dropout(hidden)).squeeze(-1).float()  # (B, T)
        return out


class SeparateCritic(nn.Module):
    """A critic with its own trunk: ``(input_ids (B, T), **inputs) -> values (B, T)``.

    Args:
        trunk: a splice language model (``DecoderLM`` call signature); it is used as given
            (``SeparateCritic.from_policy`` copies the policy first).
        d_model: the trunk's hidden width.
    """

    def __init__(self, trunk: nn.Module, d_model: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = ValueHead(d_model, dropout=dropout)

    @classmethod
    def from_policy(
        cls, policy: nn.Module, d_model: int, *, dropout: float = 0.0
    ) -> SeparateCritic:
        """A critic whose trunk starts as a trainable copy of ``policy``'s weights.

        The copy's vocabulary projection is dropped: the critic reads hidden states only, so
        it would be dead weight (an untied one a ``(V, D)`` matrix in memory and in every
        checkpoint). Tied weights would save fine too (the core checkpoints shared tensors).
        """
        trunk = copy.deepcopy(policy)  # keeps requires_grad: a frozen (adapter) base stays frozen
        if isinstance(getattr(trunk, "lm_head", None), nn.Module):
            trunk.lm_head = nn.Identity()
        return cls(trunk, d_model, dropout=dropout)

    def forward(self, input_ids: Tensor, **inputs: object) -> Tensor:
        hidden = self.trunk(input_ids, return_logits=False, **inputs).hidden  # (B, T, D)
        out: Tensor = self.head(hidden)
        return out


def hidden_size(model: nn.Module) -> int:
    """The width ``D`` of ``model``'s hidden states (its config's ``d_model``)."""
    m = model
    while not hasattr(m, "config") and isinstance(getattr(m, "module", None), nn.Module):
        m = m.module  # DDP-style wrappers
    d = getattr(getattr(m, "config", None), "d_model", None)
    if not isinstance(d, int):
        raise ValueError(
            f"{type(model).__name__} has no config.d_model; the value head needs the hidden width"
        )
    return d


__all__ = ["SeparateCritic", "ValueHead", "hidden_size"]
