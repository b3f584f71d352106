"""``PositionalConformance``: every registered positional encoding passes it, and each
check catches the planted fault it names (a broken encoding registered as a plugin would
be), with a message naming the encoding's tag, plugin and module."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, Literal

import pytest
import torch
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.nn.positional import AdditivePositional, RotaryEmbedding
from splice.registry import get_registry
from splice.testing.positional import PositionalConformance
from torch import Tensor, nn


# -- every registered encoding, one suite class per tag (a new registration is covered) -----
def _suite_for_tag(tag: str) -> type:
    config_cls = get_registry().get("positional", tag).config_cls
    return type(
        f"TestPositional_{tag}",
        (PositionalConformance,),
        {"make_config": lambda self: config_cls()},
    )


for _tag in get_registry().tags("positional"):
    globals()[f"TestPositional_{_tag}"] = _suite_for_tag(_tag)


# -- planted faults ------------------------------------------------------------------------
Fault = Literal[
    "none", "constant", "batch_mean", "length_scaled", "plain_list", "ignores_scale",
    "not_a_positional", "offset_from_first",
]  # fmt: skip


class FaultyConfig(ComponentConfig):
    type: Literal["test_faulty_pos"] = "test_faulty_pos"
    fault: Fault = "none"
    scale: float = 1.0


class FaultyLearned(AdditivePositional):
    """A learned table (``scale * weight[p]``), wrong in one way."""

    def __init__(self, d: int, n: int, config: FaultyConfig) -> None:
        super().__init__()
        self.fault, self.scale = config.fault, config.scale
        self.weight = nn.Parameter(torch.randn(n, d))
        self.extra = [nn.Parameter(torch.ones(d))] if config.fault == "plain_list" else []

    def forward(self, positions: Tensor) -> Tensor:
        scale = 1.0 if self.fault == "ignores_scale" else self.scale
        if self.fault == "constant":
            positions = torch.zeros_like(positions)
        if self.fault == "offset_from_first":  # positions relative to the window's start
            positions = positions - positions[:, :1]
        out = scale * self.weight[positions]
        if self.fault == "batch_mean":
            out = out - out.mean(0, keepdim=True) + self.weight[0]
        if self.fault == "length_scaled":
            out = out * math.log(positions.shape[1] + 1)
        if self.fault == "plain_list":
            out = out * self.extra[0]
        return out


class NotPositional(nn.Module):
    """Right shapes and values, but neither additive nor rotary: a model drops it."""

    def __init__(self, d: int, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, d))

    def forward(self, positions: Tensor) -> Tensor:
        return self.weight[positions]


class RotaryFaultConfig(ComponentConfig):
    type: Literal["test_faulty_rope"] = "test_faulty_rope"
    fault: Literal["none", "absolute_scale", "rotate_only"] = "none"
    theta: float = 10000.0


class FaultyRotary(RotaryEmbedding):
    """``absolute_scale``: scales by the position (not a rotation, not relative);
    ``rotate_only``: overrides ``rotate`` alone, so the model's ``rotate_heads`` path differs."""

    def __init__(self, head_dim: int, n: int, config: RotaryFaultConfig) -> None:
        super().__init__(head_dim, n, theta=config.theta)
        self.fault = config.fault

    def rotate_heads(self, x: Tensor, positions: Tensor, cos_sin: Any = None) -> Tensor:
        out = super().rotate_heads(x, positions, cos_sin)
        if self.fault == "absolute_scale":
            out = out * (1 + 0.1 * positions[:, None, :, None].to(out.dtype))
        return out

    def rotate(self, q: Tensor, k: Tensor, positions: Tensor, cos_sin: Any = None) -> Any:
        if self.fault == "rotate_only":
            return super().rotate(q, k, positions + 1, cos_sin=None)
        return super().rotate(q, k, positions, cos_sin)


def build_faulty(config: FaultyConfig, ctx: Any) -> nn.Module:
    if config.fault == "not_a_positional":
        return NotPositional(ctx.d_model, ctx.max_seq_len)
    return FaultyLearned(ctx.d_model, ctx.max_seq_len, config)


class _Plugin:
    @staticmethod
    @hookimpl
    def register_positional_encodings(register: Any) -> None:
        register(FaultyConfig, build_faulty)
        register(
            RotaryFaultConfig,
            lambda cfg, ctx: FaultyRotary(int(ctx.extra["head_dim"]), ctx.max_seq_len, cfg),
        )


@pytest.fixture
def faulty_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="positional_faults", distribution="positional-faults")
    yield
    reg.unregister_plugin("positional_faults")


def _suite(config: Any) -> Any:
    # fault is the planted switch: another value plants another fault.
    return type(
        "Suite",
        (PositionalConformance,),
        {"make_config": lambda self: config, "config_fields_exempt": ("fault",)},
    )()


def _run(suite: Any, tmp_path: Any) -> None:
    for name in dir(suite):
        if name.startswith("test_"):
            method = getattr(suite, name)
            try:
                method(tmp_path) if "safetensors" in name else method()
            except BaseException as exc:
                if type(exc).__name__ != "Skipped":
                    raise


@pytest.mark.parametrize("config", [FaultyConfig(), RotaryFaultConfig()])
def test_the_sound_encodings_pass(faulty_plugin: None, config: Any, tmp_path: Any) -> None:
    _run(_suite(config), tmp_path)


@pytest.mark.parametrize(
    ("config", "test", "match"),
    [
        (FaultyConfig(fault="not_a_positional"), "test_is_a_type_the_model_uses", "silently drops"),
        (FaultyConfig(fault="constant"), "test_positions_are_told_apart", "get the same encoding"),
        (FaultyConfig(fault="batch_mean"), "test_a_position_is_encoded_alone", "left-padded row"),
        (FaultyConfig(fault="length_scaled"), "test_a_position_is_encoded_alone", "length-5"),
        (FaultyConfig(fault="offset_from_first"), "test_a_position_is_encoded_alone", "4..11"),
        (FaultyConfig(fault="plain_list"), "test_every_tensor_is_a_parameter_or_buffer", "extra"),
        (FaultyConfig(fault="ignores_scale"), "test_config_fields_are_honoured", "scale=1.0"),
        (RotaryFaultConfig(fault="absolute_scale"), "test_rotary_is_a_relative_rotation", "norm"),
        (RotaryFaultConfig(fault="rotate_only"), "test_rotary_paths_agree", "differs from rotate"),
    ],
)
def test_each_planted_fault_is_caught_and_named(
    faulty_plugin: None, config: Any, test: str, match: str
) -> None:
    where = f"positional {config.type!r} of plugin 'positional_faults' (positional-faults), module {__name__}: "
    with pytest.raises(AssertionError, match=re.escape(where) + ".*" + match):
        getattr(_suite(config), test)()


def test_a_lazy_factory_is_named_by_its_module() -> None:
    from splice.nn.configs import RoPEConfig
    from splice.testing.naming import describe

    assert describe("positional", RoPEConfig()) == (
        "positional 'rope' of plugin 'core' (splice-core), module splice.nn.positional"
    )
    assert "not registered" in describe("positional", FaultyConfig())  # no plugin loaded
