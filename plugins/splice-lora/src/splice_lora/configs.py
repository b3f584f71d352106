"""``LoRAConfig``: which modules get a low-rank delta, its rank, scale, init and variants.

Torch-free, so ``splice plugins`` and config validation stay fast.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator
from splice.config import ComponentConfig

#: Shorthands for splice's module names (and the Hugging Face names they stand for).
SHORTHANDS: dict[str, str] = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
    "embed_tokens": "embed",
}
ALL_LINEAR = "all-linear"


class LoRAConfig(ComponentConfig):
    """A LoRA adapter: ``y = W x + s * B A dropout(x)`` on each target module.

    Attributes:
        name: the adapter's name; several named adapters can live on one model.
        r: rank of the delta (``A`` is ``(r, in)``, ``B`` is ``(out, r)``).
        alpha: scale numerator: ``s = alpha / r``, or ``alpha / sqrt(r)`` with ``rslora``.
        rslora: rank-stabilised scaling (Kalajdzievski 2023): the update's size stops
            shrinking as ``r`` grows.
        dropout: dropout on the adapter's input (training only).
        targets: module names (last dotted part, e.g. ``q_proj``; shorthands ``q,k,v,o``,
            Hugging Face names like ``gate_proj`` are mapped), as a list or a comma-separated
            string, or ``"all-linear"`` (every linear-like module except the output head).
            ``embed`` targets the token embedding.
        target_parameters: batched expert weights ``(E, out, in)`` to adapt with one
            low-rank delta per expert (PEFT's ``target_parameters``), by dotted-name suffix,
            e.g. ``["experts.gate_up", "experts.down"]``, or ``["experts"]`` for both. They
            add to ``targets`` (which may then be empty: ``targets=[]``).
        target_regex: a regular expression matched (in full) against dotted module names;
            when set it replaces ``targets``.
        init: ``"kaiming"`` (A Kaiming-uniform, B zero: starts as the base model),
            ``"gaussian"`` (A ~ N(0, 1/r), B zero), or ``"pissa"`` (A, B from the top ``r``
            singular directions of W, and W keeps the residual; Meng et al. 2024).
        dora: weight-decomposed LoRA (Liu et al. 2024): a trainable per-output magnitude
            times the normalised direction ``W + s B A``.
        lora_plus_ratio: LoRA+ (Hayou et al. 2024): B's learning rate is this times A's
            (through optimizer parameter groups); None keeps one learning rate.
    """

    type: Literal["lora"] = "lora"
    name: str = Field(default="default", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    r: PositiveInt = 8
    alpha: PositiveFloat = 16.0
    rslora: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    targets: list[str] | str = Field(default="q,v", validate_default=True)
    target_regex: str | None = None
    target_parameters: list[str] | None = None
    init: Literal["kaiming", "gaussian", "pissa"] = "kaiming"
    dora: bool = False
    lora_plus_ratio: PositiveFloat | None = None

    @field_validator("targets")
    @classmethod
    def _split_targets(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str):
            if value.strip() == ALL_LINEAR:
                return ALL_LINEAR
            value = value.split(",")
        return [v.strip() for v in value if v.strip()]

    @field_validator("target_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"target_regex {value!r} is not a valid regex: {err}") from None
        return value

    @model_validator(mode="after")
    def _dora_init(self) -> LoRAConfig:
        if not self.targets and not self.target_parameters and self.target_regex is None:
            raise ValueError(
                "targets: expected module names, e.g. 'q,v' or 'all-linear' "
                "(or target_parameters for batched expert weights)"
            )
        if self.dora and self.init == "pissa":
            raise ValueError("init='pissa' with dora=True is not supported; choose one")
        return self

    @property
    def scaling(self) -> float:
        """``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    def target_names(self) -> list[str] | str:
        """``targets`` with shorthands expanded (``"all-linear"`` unchanged)."""
        if isinstance(self.targets, str):
            return self.targets
        return [SHORTHANDS.get(t, t) for t in self.targets]


__all__ = ["ALL_LINEAR", "SHORTHANDS", "LoRAConfig"]
