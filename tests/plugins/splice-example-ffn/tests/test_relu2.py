"""splice's conformance suite, run on this plugin's channel mixer (like PEFT's common tester).

Run from this directory with the plugin installed: ``pytest tests``.
"""

from __future__ import annotations

import torch
from splice.interfaces import BuildContext
from splice.testing import ChannelMixerConformance
from splice_example_ffn.configs import ReLU2Config
from splice_example_ffn.ffn import build_relu2


class TestReLU2(ChannelMixerConformance):
    def make_config(self) -> ReLU2Config:
        return ReLU2Config(multiple=2.0)


class TestReLU2WithBias(ChannelMixerConformance):
    config_fields_exempt = ("multiple",)  # hidden_dim is set, which overrides multiple

    def make_config(self) -> ReLU2Config:
        return ReLU2Config(hidden_dim=24, bias=True)


def test_matches_the_formula():
    torch.manual_seed(0)
    ffn = build_relu2(ReLU2Config(hidden_dim=8), BuildContext(d_model=4))
    x = torch.randn(2, 3, 4)
    expected = torch.clamp(x @ ffn.up.weight.T, min=0) ** 2 @ ffn.down.weight.T
    torch.testing.assert_close(ffn(x), expected)
