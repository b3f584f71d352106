"""``EncoderConformance`` catches planted faults: a tiny patch encoder, registered as a
plugin would be, is wrong in one way per ``fault``, and the check that should notice fails
with a message naming the encoder's tag, plugin and module. (Every registered encoder runs
the suite in the repository's ``tests/test_registered_conformance.py``.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import torch
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.testing import run_suite
from splice.testing.encoders import EncoderConformance
from torch import Tensor, nn

Fault = Literal[
    "none", "batch_centred", "drops_a_patch", "float32_out", "plain_list", "ignores_bias",
    "encode_differs", "noisy", "unused_parameter",
]  # fmt: skip


class PatchConfig(ComponentConfig):
    type: Literal["test_patch_encoder"] = "test_patch_encoder"
    fault: Fault = "none"
    image_size: int = 8
    patch_size: int = 4
    in_channels: int = 3
    d_model: int = 8
    bias: bool = True

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class PatchEncoder(nn.Module):
    """``(B, C, H, W) -> (B, N, D)``: a patch conv, a GELU and a linear mix of channels."""

    def __init__(self, config: PatchConfig) -> None:
        super().__init__()
        self.config, self.fault = config, config.fault
        bias = True if config.fault == "ignores_bias" else config.bias
        p, d = config.patch_size, config.d_model
        self.patch = nn.Conv2d(config.in_channels, d, p, stride=p, bias=bias)
        self.mix = nn.Linear(d, d, bias=bias)
        self.scales = [nn.Parameter(torch.ones(d))] if config.fault == "plain_list" else []
        self.unused = nn.Parameter(torch.ones(d)) if config.fault == "unused_parameter" else None
        self.n_prefix = 0

    @property
    def tokens_per_image(self) -> int:
        return self.config.n_patches

    def forward(self, images: Tensor) -> Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)  # (B, N, D)
        x = self.mix(torch.nn.functional.gelu(x))
        if self.fault == "batch_centred":
            x = x - x.mean(0, keepdim=True)
        if self.fault == "drops_a_patch":
            x = x[:, :-1]
        if self.fault == "float32_out":
            x = x.float()
        if self.fault == "plain_list":
            x = x * self.scales[0].to(x.dtype)
        if self.fault == "noisy":
            x = x + 0.01 * torch.randn_like(x)
        return x

    def pooled(self, features: Tensor) -> Tensor:
        return features.mean(1)

    def encode(self, images: Tensor) -> Tensor:
        feats = self(images)
        return feats[:, 0] if self.fault == "encode_differs" else self.pooled(feats)


class _Plugin:
    @staticmethod
    @hookimpl
    def register_encoders(register: Any) -> None:
        register(PatchConfig, lambda config, ctx: PatchEncoder(config))


@pytest.fixture(autouse=True)
def faulty_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="encoder_faults", distribution="encoder-faults")
    yield
    reg.unregister_plugin("encoder_faults")


def _suite(fault: str) -> Any:
    # fault is the planted switch: another value plants another fault.
    return type(
        "Suite",
        (EncoderConformance,),
        {
            "make_config": lambda self: PatchConfig(fault=fault),
            "config_fields_exempt": ("fault",),
        },
    )()


def test_the_sound_encoder_passes_every_check() -> None:
    results = run_suite(_suite("none"))
    assert set(results.values()) == {"passed"} and len(results) == 9, results


@pytest.mark.parametrize(
    ("fault", "test", "match"),
    [
        ("batch_centred", "test_a_row_is_independent_of_the_batch", "mixes information"),
        ("drops_a_patch", "test_features_shape_dtype_and_values", r"expected \(2, 4, 8\)"),
        ("float32_out", "test_features_shape_dtype_and_values", "bfloat16 images"),
        ("plain_list", "test_every_tensor_is_a_parameter_or_buffer", "scales"),
        ("ignores_bias", "test_config_fields_are_honoured", "bias=True"),
        ("encode_differs", "test_encode_is_the_pooled_features", "differs from pooled"),
        ("noisy", "test_deterministic_under_seed", "different outputs"),
        ("unused_parameter", "test_gradients_reach_images_and_parameters", "'unused'"),
    ],
)
def test_each_planted_fault_is_caught_and_named(fault: str, test: str, match: str) -> None:
    where = (
        "encoder 'test_patch_encoder' of plugin 'encoder_faults' (encoder-faults), "
        f"module {__name__}: "
    )
    with pytest.raises(AssertionError, match=re.escape(where) + ".*" + match):
        getattr(_suite(fault), test)()
