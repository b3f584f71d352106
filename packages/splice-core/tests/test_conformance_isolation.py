"""Packing and left-padding isolation: a leaky causal convolution fails, a careful one passes.

The convolution is the third-party token mixer of the outside trial: a causal depthwise
convolution over time. Ignoring document boundaries and padding it passes every other
conformance check (it is causal, deterministic, saves its state), yet changes a packed or
left-padded sequence's outputs. The careful version masks padding and restarts at each
document (``positions == 0``), and passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
import torch
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.interfaces import AttentionInputs, BuildContext, TokenMixer
from splice.registry import get_registry
from splice.testing import check_position_mixing
from splice.testing.isolation import check_packing_isolation, check_padding_isolation
from splice.testing.suites import TokenMixerConformance
from torch import Tensor, nn

CTX = BuildContext(d_model=8, max_seq_len=32)


class ConvMixerConfig(ComponentConfig):
    type: Literal["test_causal_conv"] = "test_causal_conv"
    width: int = 3
    careful: bool = False


class CausalConv(TokenMixer):
    """``y_t = sum_k w_k * x_{t-k}`` per channel; ``careful`` stops at document starts and
    skips padded keys (the information attention gets from ``AttentionInputs``)."""

    def __init__(self, d: int, width: int, careful: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, d) / width)
        self.careful = careful

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        y = torch.zeros_like(x)
        for k in range(self.weight.shape[0]):
            shifted = torch.nn.functional.pad(x, (0, 0, k, 0))[:, : x.shape[1]]  # x_{t-k}
            if self.careful:  # x_{t-k} belongs to this sequence only if t-k is no earlier
                ok = inputs.positions >= k  # than its document's (or prompt's) first token
                shifted = shifted * ok[..., None]
            y = y + shifted * self.weight[k]
        return y


class _Plugin:
    @staticmethod
    @hookimpl
    def register_token_mixers(register: Any) -> None:
        register(ConvMixerConfig, lambda cfg, ctx: CausalConv(ctx.d_model, cfg.width, cfg.careful))


@pytest.fixture(autouse=True)
def conv_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="conformance_conv")
    yield
    reg.unregister_plugin("conformance_conv")


def test_the_leaky_convolution_passes_the_causality_check() -> None:
    check_position_mixing(ConvMixerConfig(), CTX, expect="causal")  # why this needed new checks


def test_leaking_across_packed_documents_is_caught() -> None:
    with pytest.raises(AssertionError, match="leaks across document boundaries"):
        check_packing_isolation(ConvMixerConfig(), CTX)


def test_leaking_through_left_padding_is_caught() -> None:
    with pytest.raises(AssertionError, match="padding leaks into real tokens"):
        check_padding_isolation(ConvMixerConfig(), CTX)


def test_a_mixer_that_honours_positions_passes_both() -> None:
    check_packing_isolation(ConvMixerConfig(careful=True), CTX)
    check_padding_isolation(ConvMixerConfig(careful=True), CTX)


class TestCarefulConvSuite(TokenMixerConformance):
    """The whole token-mixer suite, isolation included, on the careful convolution."""

    dtypes = (torch.float32,)
    # `careful` matters only on packed or left-padded rows (the isolation tests show it).
    config_fields_exempt = ("careful",)

    def make_config(self) -> ConvMixerConfig:
        return ConvMixerConfig(careful=True)

    def make_context(self) -> BuildContext:
        return CTX

    @pytest.fixture(autouse=True)
    def _plugin(self, conv_plugin: None) -> None:
        return None
