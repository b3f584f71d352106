"""Configs of the core's objectives (torch-free, so the registry can load them cheaply)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from splice.config import ComponentConfig, ObjectiveField, RegularizerField, SpliceConfig


class SFTConfig(ComponentConfig):
    """Supervised fine-tuning: next-token cross-entropy on completion tokens only.

    Attributes:
        chunk_size: project hidden states to the vocabulary this many tokens at a time, so the
            full ``(N, V)`` logits tensor is never held (forward or backward); None = one chunk.
        aux_loss_weight: multiplier of the model's auxiliary loss (e.g. MoE balancing), if any.
    """

    type: Literal["sft"] = "sft"
    chunk_size: PositiveInt | None = None
    aux_loss_weight: float = Field(default=1.0, ge=0.0)


class ObjectiveTermConfig(SpliceConfig):
    """One term of a ``weighted_sum`` objective: exactly one of ``objective``,
    ``regularizer`` or ``aux_loss``, times ``weight``.

    Attributes:
        objective: an objective config (its ``loss``).
        regularizer: a regularizer config (its ``penalty``; set up at the starting weights).
        aux_loss: the model's auxiliary loss (MoE load balancing) from the step's first
            forward with gradient: no extra forward. Give the objectives
            ``aux_loss_weight=0`` then, or it is counted twice.
        weight: the term's multiplier.
        name: the name its value is logged under (``term/<name>``); defaults to the tag
            (``aux_loss`` for the auxiliary loss).
    """

    objective: ObjectiveField | None = None
    regularizer: RegularizerField | None = None
    aux_loss: bool = False
    weight: float = 1.0
    name: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ObjectiveTermConfig:
        given = [self.objective is not None, self.regularizer is not None, self.aux_loss]
        if sum(given) != 1:
            raise ValueError(
                "a weighted_sum term needs exactly one of 'objective', 'regularizer' or "
                f"'aux_loss: true', got {sum(given)}"
            )
        return self

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        if self.objective is not None:
            return str(self.objective.type)
        if self.regularizer is not None:
            return str(self.regularizer.type)
        return "aux_loss"


class WeightedSumConfig(ComponentConfig):
    """An objective that is a weighted sum of objectives, regularizers and the MoE auxiliary
    loss, e.g. ``0.8·DPO + 0.2·SFT + 0.1·KL-to-base + 0.01·aux``; each term's (unweighted)
    value is logged as ``term/<name>`` and its own metrics as ``<name>/<metric>``.

    Attributes:
        terms: the terms, evaluated in order on the same batch.
    """

    type: Literal["weighted_sum"] = "weighted_sum"
    terms: list[ObjectiveTermConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> WeightedSumConfig:
        names = [t.label for t in self.terms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"term names must be unique, {dup} repeat; set `name` on them")
        return self
