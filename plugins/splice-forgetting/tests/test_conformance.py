"""splice-forgetting's regularizers pass splice.testing's RegularizerConformance."""

from __future__ import annotations

from typing import Any

from splice.testing import RegularizerConformance
from splice_forgetting.configs import EWCConfig, KLReferenceConfig, L2SPConfig
from torch import nn

from .conftest import _make_batch, _make_model


class _OnTinyDecoder(RegularizerConformance):
    def make_model(self) -> nn.Module:
        return _make_model()

    def make_batch(self) -> dict[str, Any]:
        return _make_batch()


class TestL2SP(_OnTinyDecoder):
    def make_config(self) -> Any:
        return L2SPConfig(weight=1.0)


class TestEWC(_OnTinyDecoder):
    def make_config(self) -> Any:
        return EWCConfig(weight=100.0, n_batches=2)


class TestKLReference(_OnTinyDecoder):
    zero_atol = 1e-5  # a KL of identical distributions, up to float rounding

    def make_config(self) -> Any:
        return KLReferenceConfig(weight=1.0)
