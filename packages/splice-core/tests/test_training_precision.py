"""precision="auto": bf16 only where the device multiplies bf16 natively and the model is wide
enough to gain from it; SPLICE_AUTO_PRECISION forces it; warnings for emulated bf16.

The machine running the tests is one kind or the other; the probe is mocked for both, and
the real probe's answer is checked against /proc/cpuinfo's flags.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from splice.training import precision as P
from splice.training.configs import TrainConfig
from splice.training.trainer import Trainer

from .test_trainer import Regression, make_batches

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: value)
        monkeypatch.setattr(P, "_warned", set())
        monkeypatch.setattr(P, "bf16_slowdown", lambda: 42.0)
        monkeypatch.delenv(P.AUTO_PRECISION_ENV, raising=False)  # CI's bf16 pass sets it

    return set_native


def autocast_dtype_seen(precision: str, width: int = 4) -> tuple[str, set[torch.dtype]]:
    seen: set[torch.dtype] = set()

    class Spy(Regression):
        def loss(self, model, batch):
            seen.add(model(batch["x"]).dtype)
            return super().loss(model, batch)

    cfg = TrainConfig(steps=2, progress=False, precision=precision)
    # (4 -> width -> width -> 1): the width x width matrix is the typical matmul
    model = torch.nn.Sequential(
        *(torch.nn.Linear(a, b) for a, b in [(4, width), (width, width), (width, 1)])
    )
    trainer = Trainer(model, Spy(), make_batches(), cfg)
    out = trainer.fit()
    return out["precision"], seen


def test_auto_is_the_default() -> None:
    assert TrainConfig().precision == "auto"


def test_auto_picks_bf16_on_a_native_cpu_for_a_wide_model(native) -> None:
    native(True)
    assert P.resolve_precision("auto", "cpu") == "bf16"
    assert P.compute_dtype("cpu") == torch.bfloat16
    assert P.compute_dtype("cpu", width=P.AUTO_BF16_MIN_WIDTH) == torch.bfloat16
    wide = torch.nn.Linear(P.AUTO_BF16_MIN_WIDTH, P.AUTO_BF16_MIN_WIDTH)
    assert P.resolve_precision("auto", "cpu", wide) == "bf16"


def test_auto_keeps_float32_for_a_narrow_model_even_where_bf16_is_native(native) -> None:
    """Narrow matmuls run slower under bf16 autocast than in float32 (the casts dominate):
    ``auto`` must never make a run slower, so a tiny model trains in float32."""
    native(True)
    narrow = torch.nn.Linear(P.AUTO_BF16_MIN_WIDTH - 1, 4 * P.AUTO_BF16_MIN_WIDTH)
    assert P.resolve_precision("auto", "cpu", narrow) == "float32"
    assert P.compute_dtype("cpu", width=P.AUTO_BF16_MIN_WIDTH - 1) == torch.float32
    assert autocast_dtype_seen("auto") == ("float32", {torch.float32})


def test_the_trainer_passes_its_model_to_auto(native) -> None:
    native(True)
    assert autocast_dtype_seen("auto", width=4) == ("float32", {torch.float32})
    assert autocast_dtype_seen("auto", width=P.AUTO_BF16_MIN_WIDTH) == ("bf16", {torch.bfloat16})


def test_a_model_with_batched_experts_needs_twice_the_width(native) -> None:
    """Per-expert GEMMs lose more to bf16 casts: an MoE at d=256 ran 1.05x slower in bf16."""
    native(True)

    def moe(width: int) -> torch.nn.Module:
        m = torch.nn.Module()
        m.w = torch.nn.Parameter(torch.zeros(8, width, 3 * width))  # (E, d, h)
        return m

    assert P.resolve_precision("auto", "cpu", moe(P.AUTO_BF16_MIN_WIDTH)) == "float32"
    assert P.resolve_precision("auto", "cpu", moe(P.AUTO_BF16_MIN_WIDTH_EXPERTS)) == "bf16"


def test_matmul_width_reads_the_typical_weight_matrix() -> None:
    model = torch.nn.Sequential(
        torch.nn.Embedding(50_000, 8),  # gathered, not multiplied: left out
        torch.nn.Linear(8, 300),  # 2400 weights of width 8
        torch.nn.Linear(300, 300),  # 90000 weights of width 300: the median
        torch.nn.LayerNorm(300),  # 1-D: left out
    )
    assert P.matmul_width(model) == 300
    experts = torch.nn.Module()
    experts.w = torch.nn.Parameter(torch.zeros(16, 512, 48))  # (E, d, h): h is what multiplies
    assert P.matmul_width(experts) == 48
    assert P.matmul_width(torch.nn.LayerNorm(4)) == 0


@pytest.mark.parametrize("forced", ["float32", "bf16"])
def test_the_environment_forces_what_auto_resolves_to(native, monkeypatch, forced) -> None:
    native(forced == "float32")  # the opposite of what the machine would pick
    monkeypatch.setenv(P.AUTO_PRECISION_ENV, forced)
    wide = torch.nn.Linear(P.AUTO_BF16_MIN_WIDTH, P.AUTO_BF16_MIN_WIDTH)
    narrow = torch.nn.Linear(4, 4)
    for model in (None, wide, narrow):
        assert P.resolve_precision("auto", "cpu", model) == forced
    assert P.compute_dtype("cpu", width=4) == (
        torch.bfloat16 if forced == "bf16" else torch.float32
    )
    assert P.resolve_precision("float32", "cpu") == "float32"  # explicit settings still win
    expected = torch.bfloat16 if forced == "bf16" else torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # forcing auto is explicit: no emulation warning
        assert autocast_dtype_seen("auto") == (forced, {expected})


def test_a_bad_forced_value_names_the_variable(native, monkeypatch) -> None:
    native(True)
    monkeypatch.setenv(P.AUTO_PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match="SPLICE_AUTO_PRECISION='fp16'"):
        P.resolve_precision("auto", "cpu")


def test_auto_picks_float32_where_bf16_is_emulated(native) -> None:
    native(False)
    assert P.resolve_precision("auto", "cpu") == "float32"
    assert P.compute_dtype("cpu") == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        assert autocast_dtype_seen("auto") == ("float32", {torch.float32})


def test_explicit_bf16_where_emulated_warns_once_with_the_ratio(native) -> None:
    native(False)
    with pytest.warns(RuntimeWarning, match=r"42x slower than float32"):
        assert P.resolve_precision("bf16", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16", "cpu") == "bf16"  # once per process


def test_explicit_bf16_on_a_native_cpu_is_silent(native) -> None:
    native(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16", "cpu") == "bf16"
        assert P.resolve_precision("float32", "cpu") == "float32"


def test_the_real_probe_agrees_with_cpuinfo() -> None:
    flags = P._cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this platform to compare with")
    assert P.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_invalid_precision_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
