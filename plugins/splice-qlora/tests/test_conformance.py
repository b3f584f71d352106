"""splice-qlora's quantizers and its QLoRA adapter pass splice.testing's suites."""

from __future__ import annotations

from typing import Any

from splice.testing import AdapterConformance, QuantizerConformance
from splice_qlora import configs as c


class TestNF4(QuantizerConformance):
    def make_config(self) -> Any:
        return c.NF4Config()


class TestFP4(QuantizerConformance):
    max_relative_error = 0.2  # FP4's grid is coarser than NF4's for normal weights

    def make_config(self) -> Any:
        return c.FP4Config()


class TestInt8(QuantizerConformance):
    max_relative_error = 0.05

    def make_config(self) -> Any:
        return c.Int8Config()


class TestQLoRA(AdapterConformance):
    identity_at_init = False  # the base is quantized: outputs move by the rounding error
    merge_atol = 0.05  # compute_dtype "auto" may be bf16: the merged weight is rounded to it

    def make_config(self) -> Any:
        return c.QLoRAConfig(targets="all-linear")
