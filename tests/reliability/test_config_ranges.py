"""Numbers that must be finite or bounded are refused at validation, naming the field:
``eps=Infinity`` used to validate and run, ``train.num_threads=100000`` segfaulted."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError
from splice.cli import main
from splice.rewards.configs import RewardTermConfig
from splice.training.configs import OptimizerConfig, TrainConfig


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "Infinity", "NaN"])
def test_non_finite_floats_are_refused(value):
    with pytest.raises(ValidationError, match="eps"):
        OptimizerConfig(eps=value)
    with pytest.raises(ValidationError, match="lr"):
        OptimizerConfig(lr=value)
    with pytest.raises(ValidationError, match="max_grad_norm"):
        TrainConfig(max_grad_norm=value)
    with pytest.raises(ValidationError, match="weight"):  # a float with no other bound
        RewardTermConfig(reward={"type": "format"}, weight=value)


def test_num_threads_is_bounded():
    TrainConfig(num_threads=64)
    with pytest.raises(ValidationError, match="num_threads"):
        TrainConfig(num_threads=100000)
    with pytest.raises(ValidationError, match="num_threads"):
        TrainConfig(num_threads=0)


def test_the_cli_names_the_field(tiny_recipe, tmp_path, capsys):
    for override, field in (
        ("train.optimizer.eps=Infinity", "train.optimizer.eps"),
        ("train.num_threads=100000", "train.num_threads"),
    ):
        assert main(["run", str(tiny_recipe), "--output-dir", str(tmp_path / "r"),
                     "--set", override]) == 2  # fmt: skip
        assert field.split(".")[-1] in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
