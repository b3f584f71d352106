"""splice-lora's adapter passes splice.testing's adapter suite."""

from __future__ import annotations

from typing import Any

from splice.testing import AdapterConformance
from splice_lora.configs import LoRAConfig


class TestLoRAAllLinear(AdapterConformance):
    def make_config(self) -> Any:
        return LoRAConfig(targets="all-linear", r=4, alpha=8)


class TestLoRAAttentionWithDropout(AdapterConformance):
    def make_config(self) -> Any:
        return LoRAConfig(targets="q,k,v,o", dropout=0.1)
