"""The conformance checks fail, naming the problem, on deliberately broken components."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
import torch
from pydantic import Field
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.interfaces import BuildContext, ChannelMixer
from splice.nn.configs import MLPConfig
from splice.registry import get_registry
from splice.testing import (
    check_config_roundtrip,
    check_determinism,
    check_gradients,
    check_output,
    check_position_mixing,
    check_state_dict_roundtrip,
    run_all,
)
from torch import Tensor, nn

CTX = BuildContext(d_model=8, max_seq_len=16)


class BrokenConfig(ComponentConfig):
    type: Literal["broken_ffn"] = "broken_ffn"
    flaw: str = "none"
    note: str = Field(default="", exclude=True)  # silently dropped from JSON


class BrokenFFN(ChannelMixer):
    """A linear layer with one chosen flaw."""

    def __init__(self, d: int, flaw: str) -> None:
        super().__init__()
        self.flaw = flaw
        self.lin = nn.Linear(d, d)
        self.unused = nn.Parameter(torch.ones(d))  # only read by flaw != "unused_param"
        if flaw == "unseeded_init":  # draws from its own, unseeded generator
            g = torch.Generator().manual_seed(torch.seed())
            with torch.no_grad():
                self.lin.weight.copy_(torch.randn(d, d, generator=g))
        # A weight kept out of the state dict: a fresh build cannot recover it.
        self.register_buffer("hidden_scale", torch.rand(d) + 0.5, persistent=flaw != "not_saved")

    def forward(self, x: Tensor) -> Tensor:
        y = self.lin(x) * self.hidden_scale
        if self.flaw != "unused_param":
            y = y + self.unused
        if self.flaw == "detached_input":
            y = self.lin(x.detach()) + self.unused
        if self.flaw == "mixes_positions":
            y = y.cumsum(dim=1)
        if self.flaw == "float32_output":
            y = y.float()
        return y


class _Plugin:
    @staticmethod
    @hookimpl
    def register_channel_mixers(register: Any) -> None:
        register(BrokenConfig, lambda cfg, ctx: BrokenFFN(ctx.d_model, cfg.flaw))


@pytest.fixture(autouse=True)
def broken_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="conformance_broken")
    yield
    reg.unregister_plugin("conformance_broken")


def test_a_sound_component_passes_everything() -> None:
    run_all(BrokenConfig(), CTX, position_mixing="pointwise")
    run_all(MLPConfig(), CTX, position_mixing="pointwise")


def test_detached_input_is_caught() -> None:
    with pytest.raises(AssertionError, match=r"(zero|no) gradient (on|reached) input 'x'"):
        check_gradients(BrokenConfig(flaw="detached_input"), CTX)


def test_unused_parameter_is_caught_unless_allowed() -> None:
    with pytest.raises(AssertionError, match="parameter 'unused'"):
        check_gradients(BrokenConfig(flaw="unused_param"), CTX)
    check_gradients(BrokenConfig(flaw="unused_param"), CTX, may_skip=("unused",))


def test_position_mixing_is_caught() -> None:
    with pytest.raises(AssertionError, match="pointwise"):
        check_position_mixing(BrokenConfig(flaw="mixes_positions"), CTX, expect="pointwise")
    # cumsum over positions is causal but not bidirectional
    check_position_mixing(BrokenConfig(flaw="mixes_positions"), CTX, expect="causal")
    with pytest.raises(AssertionError, match="bidirectional"):
        check_position_mixing(BrokenConfig(flaw="mixes_positions"), CTX, expect="bidirectional")


def test_wrong_output_dtype_is_caught() -> None:
    check_output(BrokenConfig(flaw="float32_output"), CTX)
    with pytest.raises(AssertionError, match="dtype"):
        check_output(BrokenConfig(flaw="float32_output"), CTX, dtype=torch.bfloat16)


def test_state_outside_the_state_dict_is_caught(tmp_path: Any) -> None:
    with pytest.raises(AssertionError, match="safetensors round-trip"):
        check_state_dict_roundtrip(BrokenConfig(flaw="not_saved"), CTX, tmp_dir=tmp_path)


def test_unseeded_initialisation_is_caught() -> None:
    with pytest.raises(AssertionError, match="differs under the same seed"):
        check_determinism(BrokenConfig(flaw="unseeded_init"), CTX)


def test_config_that_loses_a_field_in_json_is_caught() -> None:
    check_config_roundtrip(BrokenConfig(flaw="x"))
    with pytest.raises(AssertionError, match="changed through JSON"):
        check_config_roundtrip(BrokenConfig(note="lost"))
