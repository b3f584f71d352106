"""Each planted fault of issue #23 is caught by the conformance suite a plugin author runs.

Every faulty component here passes the checks that existed before (shapes, dtypes,
gradients, state dict, JSON, determinism, position mixing on initial weights); the suites
(``ChannelMixerConformance``, ``TokenMixerConformance``) now fail each one, naming the
problem. The real components pass the same suites (``test_nn_conformance.py``, the
plugins' conformance tests).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import torch
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.interfaces import (
    AttentionInputs,
    BuildContext,
    ChannelMixer,
    Connector,
    TokenMixer,
)
from splice.registry import get_registry
from splice.testing import (
    ChannelMixerConformance,
    ConnectorConformance,
    TokenMixerConformance,
    check_gradients,
    check_output,
    check_position_mixing,
    check_state_dict_roundtrip,
    run_suite,
)
from torch import Tensor, nn

CTX = BuildContext(d_model=8, max_seq_len=32)


class FaultyFFNConfig(ComponentConfig):
    type: Literal["test_faulty_ffn"] = "test_faulty_ffn"
    fault: Literal["none", "batch_mean", "log_length", "plain_list", "ignores_fields"] = "none"
    bias: bool = True
    multiple: float = 2.0


class FaultyFFN(ChannelMixer):
    """``down(gelu(up(x)))`` with one planted fault."""

    def __init__(self, d: int, cfg: FaultyFFNConfig) -> None:
        super().__init__()
        honour = cfg.fault != "ignores_fields"
        hidden = int((cfg.multiple if honour else 2.0) * d)
        bias = cfg.bias if honour else True
        self.fault = cfg.fault
        self.up, self.down = nn.Linear(d, hidden, bias=bias), nn.Linear(hidden, d, bias=bias)
        # The plain-list fault: a weight the optimizer and the state dict never see.
        self.scales = [nn.Parameter(torch.ones(d))] if cfg.fault == "plain_list" else []

    def forward(self, x: Tensor) -> Tensor:
        y = self.down(torch.nn.functional.gelu(self.up(x)))
        if self.fault == "batch_mean":  # normalises over the rows of the batch
            y = y - y.mean(dim=0, keepdim=True)
        if self.fault == "log_length":  # depends on how long the sequence is
            y = y * math.log(x.shape[1] + 1)
        if self.fault == "plain_list":
            y = y * self.scales[0].to(y.dtype)
        return y


class LeakyConvConfig(ComponentConfig):
    type: Literal["test_leaky_conv"] = "test_leaky_conv"
    width: int = 3


class LeakyConv(TokenMixer):
    """A causal depthwise convolution whose history taps start at zero (tap 0 is random):
    as initialised it is pointwise, so packing and padding look isolated; once trained the
    taps read across document and padding boundaries, which it never masks."""

    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width, d))
        with torch.no_grad():
            self.weight[0] = torch.randn(d)

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        y = torch.zeros_like(x)
        for k in range(self.weight.shape[0]):
            y = y + torch.nn.functional.pad(x, (0, 0, k, 0))[:, : x.shape[1]] * self.weight[k]
        return y


class _Plugin:
    @staticmethod
    @hookimpl
    def register_channel_mixers(register: Any) -> None:
        register(FaultyFFNConfig, lambda cfg, ctx: FaultyFFN(ctx.d_model, cfg))

    @staticmethod
    @hookimpl
    def register_token_mixers(register: Any) -> None:
        register(LeakyConvConfig, lambda cfg, ctx: LeakyConv(ctx.d_model, cfg.width))


@pytest.fixture(autouse=True)
def faulty_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="planted_faults")
    yield
    reg.unregister_plugin("planted_faults")


def _suite_for(base: type, config: Any) -> Any:
    class Suite(base):  # type: ignore[misc, valid-type]
        dtypes = (torch.float32,)

        def make_config(self) -> Any:
            return config

        def make_context(self) -> BuildContext:
            return CTX

    return Suite()


def _fails(suite: Any, test: str, match: str, tmp_path: Any = None) -> None:
    method = getattr(suite, test)
    with pytest.raises(AssertionError, match=match):
        method(tmp_path) if tmp_path is not None else method()


def _old_checks_pass(config: Any, tmp_path: Any) -> None:
    """What the suites checked before: the fault slips through all of it."""
    check_output(config, CTX)
    check_gradients(config, CTX)
    check_state_dict_roundtrip(config, CTX, tmp_dir=tmp_path)


def test_the_sound_ffn_passes_the_whole_channel_mixer_suite(tmp_path: Any) -> None:
    suite = _suite_for(ChannelMixerConformance, FaultyFFNConfig())
    for name in dir(suite):
        if name.startswith("test_"):
            method = getattr(suite, name)
            takes_tmp = "tmp_path" in inspect.signature(method).parameters
            method(tmp_path) if takes_tmp else method()


def test_a_mixer_subtracting_the_batch_mean_is_caught(tmp_path: Any) -> None:
    config = FaultyFFNConfig(fault="batch_mean")
    _old_checks_pass(config, tmp_path)
    check_position_mixing(config, CTX, expect="pointwise")  # it is pointwise in time
    suite = _suite_for(ChannelMixerConformance, config)
    _fails(suite, "test_a_row_is_independent_of_the_batch", "across the batch dimension")


def test_a_mixer_scaling_by_log_length_is_caught(tmp_path: Any) -> None:
    config = FaultyFFNConfig(fault="log_length")
    _old_checks_pass(config, tmp_path)
    check_position_mixing(config, CTX, expect="pointwise")
    suite = _suite_for(ChannelMixerConformance, config)
    _fails(suite, "test_outputs_do_not_depend_on_later_length", "depends on the sequence length")


def test_a_parameter_in_a_plain_list_is_caught(tmp_path: Any) -> None:
    config = FaultyFFNConfig(fault="plain_list")
    _old_checks_pass(config, tmp_path)
    check_output(config, CTX, dtype=torch.bfloat16)  # cast to the output dtype: no dtype error
    suite = _suite_for(ChannelMixerConformance, config)
    _fails(suite, "test_every_tensor_is_a_parameter_or_buffer", r"\['scales\[0\]'\]")


def test_ignored_config_fields_are_caught(tmp_path: Any) -> None:
    config = FaultyFFNConfig(fault="ignores_fields")
    _old_checks_pass(config, tmp_path)
    suite = _suite_for(ChannelMixerConformance, config)
    _fails(suite, "test_config_fields_are_honoured", r"\['bias=True', 'multiple=2.0'\]")


def test_a_leaky_convolution_with_zero_initialised_taps_is_caught(tmp_path: Any) -> None:
    config = LeakyConvConfig()
    _old_checks_pass(config, tmp_path)
    # As initialised the taps are zero: isolation would hold. Trained (perturbed) weights leak.
    suite = _suite_for(TokenMixerConformance, config)
    _fails(suite, "test_packed_documents_do_not_see_each_other", "leaks across document")
    _fails(suite, "test_left_padding_is_invisible", "padding leaks into real tokens")
    suite.test_position_mixing()  # causal: the leak is not a causality bug


class FaultyConnectorConfig(ComponentConfig):
    type: Literal["test_faulty_connector"] = "test_faulty_connector"
    fault: Literal["none", "batch_mean"] = "none"


class FaultyConnector(Connector):
    """A linear projector ``(B, N, 12) -> (B, N, 8)``; ``batch_mean`` centres over images."""

    def __init__(self, d_in: int, d_out: int, fault: str) -> None:
        super().__init__()
        self.proj, self.fault = nn.Linear(d_in, d_out), fault

    def forward(self, features: Tensor) -> Tensor:
        y = self.proj(features)
        return y - y.mean(0, keepdim=True) if self.fault == "batch_mean" else y


class _ConnectorPlugin:
    @staticmethod
    @hookimpl
    def register_connectors(register: Any) -> None:
        register(
            FaultyConnectorConfig,
            lambda cfg, ctx: FaultyConnector(ctx.d_context, ctx.d_model, cfg.fault),
        )


def test_a_connector_mixing_images_of_a_batch_is_caught(tmp_path: Any) -> None:
    reg = get_registry()
    reg.register_plugin(_ConnectorPlugin, name="planted_connector")
    try:

        class Suite(ConnectorConformance):
            dtypes = (torch.float32,)

            def make_config(self) -> Any:
                return FaultyConnectorConfig(fault=fault)

        fault = "none"
        run_suite(Suite(), tmp_path)
        fault = "batch_mean"
        with pytest.raises(AssertionError, match="across the batch dimension"):
            Suite().test_a_row_is_independent_of_the_batch()
    finally:
        reg.unregister_plugin("planted_connector")
