"""precision="auto": bf16 only where the device multiplies bf16 natively; warnings otherwise.

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


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: value)
        monkeypatch.setattr(P, "_warned", set())
        monkeypatch.setattr(P, "bf16_slowdown", lambda: 42.0)

    return set_native


def autocast_dtype_seen(precision: str) -> tuple[str, set[torch.dtype]]:
    seen: set[torch.dtype] = set()

    class Spy(Regression):
        def loss(self, model, batch):
            seen.add(model(batch["x"]).dtype)
            return super().loss(model, batch)

    cfg = TrainConfig(steps=2, progress=False, precision=precision)
    trainer = Trainer(torch.nn.Linear(4, 1), Spy(), make_batches(), cfg)
    out = trainer.fit()
    return out["precision"], seen


def test_auto_is_the_default() -> None:
    assert TrainConfig().precision == "auto"


def test_auto_picks_bf16_on_a_native_cpu(native) -> None:
    native(True)
    assert P.resolve_precision("auto", "cpu") == "bf16"
    assert P.compute_dtype("cpu") == torch.bfloat16
    assert autocast_dtype_seen("auto") == ("bf16", {torch.bfloat16})


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
