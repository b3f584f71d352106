"""Pydantic config base classes and interface-typed fields resolved through the registry.

A component config is a pydantic model with ``type: Literal["<tag>"]``. A field
typed by interface (``TokenMixerField``, ``ChannelMixerField``, ...) accepts a
config instance, or a dict / JSON object carrying ``"type"``; the tag is looked
up in the registry and the dict validated by the registered config class.
Serialisation keeps the concrete subclass, so ``Config -> JSON -> Config`` is
lossless.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
)


class SpliceConfig(BaseModel):
    """Base of every splice config: unknown fields are errors, assignments are validated,
    a number field refuses ``true``/``false`` (pydantic would read ``steps=true`` as 1), and
    a float field refuses NaN and ±inf (``eps=Infinity`` would validate and train on)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and _numeric_not_bool(field.annotation):
                raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _numeric_not_bool(annotation: Any) -> bool:
    """Whether a field type takes int/float but not bool (``PositiveInt | None``: yes)."""
    seen: set[Any] = set()

    def walk(t: Any) -> None:
        origin = typing.get_origin(t)
        if origin is Annotated:
            walk(typing.get_args(t)[0])
        elif origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(t):
                walk(arg)
        elif origin is Literal:
            seen.update(type(a) for a in typing.get_args(t))
        else:
            seen.add(t)

    walk(annotation)
    return bool(seen & {int, float}) and not seen & {bool, Any, object}


class ComponentConfig(SpliceConfig):
    """A config for a registered component; subclasses narrow ``type`` to ``Literal["tag"]``."""

    type: str


def _resolver(kind: str) -> Any:
    def resolve(value: Any) -> Any:
        if isinstance(value, ComponentConfig):
            from splice.registry import get_registry

            reg = get_registry().get(kind, value.type)
            if not isinstance(value, reg.config_cls):
                raise ValueError(
                    f"{type(value).__name__} has type {value.type!r} but the registered "
                    f"{kind} config for that tag is {reg.config_cls.__name__}"
                )
            return value
        if isinstance(value, str):  # a bare tag: all defaults
            value = {"type": value}
        if isinstance(value, dict):
            if "type" not in value:
                raise ValueError(f"a {kind} config needs a 'type' field naming a registered {kind}")
            from splice.registry import get_registry

            reg = get_registry().get(kind, str(value["type"]))
            return reg.config_cls.model_validate(value)
        raise ValueError(
            f"expected a {kind} config (instance or dict with 'type'), got {type(value).__name__}"
        )

    return resolve


def component_field(kind: str) -> Any:
    """The annotation of a config field holding a component of ``kind``."""
    return Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(_resolver(kind))]


TokenMixerField = component_field("token_mixer")
ChannelMixerField = component_field("channel_mixer")
BlockField = component_field("block")
NormField = component_field("norm")
PositionalField = component_field("positional")
ModelField = component_field("model")
AdapterField = component_field("adapter")
QuantizerField = component_field("quantizer")
ObjectiveField = component_field("objective")
RegularizerField = component_field("regularizer")
ConnectorField = component_field("connector")
EncoderField = component_field("encoder")
RewardField = component_field("reward")
PreferenceLossField = component_field("preference_loss")
AdvantageEstimatorField = component_field("advantage_estimator")
PolicyLossField = component_field("policy_loss")
RetrieverField = component_field("retriever")
TaskField = component_field("task")
