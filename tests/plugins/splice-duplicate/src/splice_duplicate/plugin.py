"""Registers a second ``relu2`` channel mixer: a duplicate tag must be an error."""

from __future__ import annotations

from typing import Any, Literal

from splice.config import ComponentConfig
from splice.hookspecs import hookimpl


class OtherReLU2Config(ComponentConfig):
    type: Literal["relu2"] = "relu2"


@hookimpl
def register_channel_mixers(register: Any) -> None:
    register(OtherReLU2Config, "splice_duplicate.plugin:OtherReLU2Config")
