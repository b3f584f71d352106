"""A third-party plugin adds a DPO-style loss by registering one function, without touching
splice-dpo, and ``splice run``'s machinery trains with it from config."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("splice_dpo", reason="needs splice-dpo (the dpo objective that uses the loss)")

from splice.config import ComponentConfig
from splice.data.arithmetic import ArithmeticTask
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.training.experiment import run_experiment
from splice_dpo.data import PreferenceExample, write_preference_jsonl

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


class SquaredSigmoidConfig(ComponentConfig):
    """A made-up loss: ``(1 - σ(βΔ))²`` (any function of the pair's log-probs will do)."""

    type: Literal["test_squared_sigmoid"] = "test_squared_sigmoid"
    beta: float = 0.5


CALLS: list[int] = []


def squared_sigmoid(logps: Any, config: SquaredSigmoidConfig) -> torch.Tensor:
    """The whole plugin: per-pair losses ``(B,)`` from the splice-dpo log-prob bundle."""
    CALLS.append(int(logps.chosen.shape[0]))
    chosen = logps.chosen - logps.ref_chosen
    rejected = logps.rejected - logps.ref_rejected
    return (1 - F.sigmoid(config.beta * (chosen - rejected))) ** 2


class ThirdPartyPlugin:
    @hookimpl
    def register_preference_losses(self, register: Any) -> None:
        register(SquaredSigmoidConfig, squared_sigmoid)


@pytest.fixture
def plugin() -> Any:
    reg = get_registry()
    reg.register_plugin(
        ThirdPartyPlugin(), name="test-third-party-loss", distribution="splice-test-loss"
    )
    yield
    reg.unregister_plugin("test-third-party-loss")


def test_registered_loss_trains_from_config(tmp_path: Path, plugin: Any) -> None:
    torch.set_num_threads(1)
    pairs = [
        PreferenceExample(ex.prompt, ex.completion, str(int(ex.answer) + 3), ex.answer)
        for ex in ArithmeticTask("+").sample("train", 24, seed=2)
    ]
    write_preference_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = {
        "name": "third-party-loss",
        "model": {
            "type": "decoder",
            "vocab_size": 52,
            "d_model": 32,
            "n_layers": 1,
            "max_seq_len": 32,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        },
        "data": {
            "task": {"type": "preference_jsonl", "train": str(tmp_path / "pairs.jsonl")},
            "max_len": 32,
        },
        "objective": {"type": "dpo", "loss": {"type": "test_squared_sigmoid", "beta": 1.0}},
        "train": {
            "steps": 15,
            "batch_size": 8,
            "log_every": 1,
            "progress": False,
            "num_threads": 1,
            "precision": "float32",  # the first loss is checked exactly (bf16 moves it)
            "optimizer": {"lr": 5e-3},
        },
        "eval": {"loss_batches": 0, "exact_match_examples": 0},
        "output_dir": str(tmp_path / "run"),
    }
    report = run_experiment(cfg)
    # The first call is the 2-pair probe that finds the loss reads the reference (the config
    # declares no needs_reference); every training call sees a batch of 8 pairs.
    assert CALLS[0] == 2 and set(CALLS[1:]) == {8}
    rows = [
        json.loads(x) for x in (Path(report["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    ]
    rows = [r for r in rows if r["kind"] == "train"]
    # Δ = 0 at the start: (1 - 1/2)². In bf16 the policy's and the reference's forwards (one
    # concatenated batch against separate ones) round differently: Δ is only ~0 there.
    tol = 1e-6 if report["precision"] == "float32" else 2e-2
    assert rows[0]["loss"] == pytest.approx(0.25, abs=tol)
    assert rows[-1]["loss"] < 0.2
    assert rows[-1]["rewards/margin"] > 0 and rows[-1]["rewards/accuracy"] > 0.5
    assert math.isfinite(rows[-1]["logps/chosen"])


def test_unknown_loss_names_the_registered_ones() -> None:
    from pydantic import ValidationError
    from splice_dpo.configs import DPOConfig

    with pytest.raises(ValidationError, match=r"unknown preference_loss type 'nope'.*'sigmoid'"):
        DPOConfig(loss={"type": "nope"})
