"""The config of the ``relu2`` channel mixer. Only pydantic here: no torch at import time."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveFloat, PositiveInt
from splice.config import ComponentConfig


class ReLU2Config(ComponentConfig):
    """Squared-ReLU MLP ``down(relu(up(x)) ** 2)`` (So et al., 2021, "Primer").

    The hidden width is ``hidden_dim`` if given, else ``multiple * d_model``.
    """

    type: Literal["relu2"] = "relu2"
    hidden_dim: PositiveInt | None = None
    multiple: PositiveFloat = 4.0
    bias: bool = False
