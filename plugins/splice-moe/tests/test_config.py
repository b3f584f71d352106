"""Bad MoE settings fail at validation with errors naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from splice.models.build import build_model
from splice.models.configs import DecoderConfig
from splice_moe.configs import MoEConfig
from splice_moe.dispatch import capacity_of
from splice_moe.testing import moe_decoder


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n_experts": 4, "top_k": 5}, "top_k=5 exceeds n_experts=4"),
        ({"n_experts": 0}, "n_experts\n  Input should be greater than 0"),
        ({"capacity_factor": 0}, "capacity_factor\n  Input should be greater than 0"),
        ({"capacity_factor": -1.5}, "capacity_factor\n  Input should be greater than 0"),
        ({"n_shared": 0, "shared_hidden": 32}, "shared_hidden=32 is set but n_shared=0"),
        ({"n_shared": 3, "shared_hidden": 32}, "shared_hidden=32 does not split into n_shared=3"),
        ({"top_k": 0}, "top_k\n  Input should be greater than 0"),
        ({"scoring": "relu"}, "scoring\n  Input should be 'softmax' or 'sigmoid'"),
    ],
)
def test_bad_values_name_the_field(fields, message):
    with pytest.raises(ValidationError) as info:
        MoEConfig(**fields)
    assert message in str(info.value)


def test_errors_inside_a_model_config_carry_the_path():
    data = moe_decoder({"n_experts": 2}, every_other=True).model_dump(mode="json")
    data["overrides"][0]["block"]["channel_mixer"]["top_k"] = 3
    with pytest.raises(ValidationError) as info:
        DecoderConfig.model_validate(data)
    text = str(info.value)
    assert "overrides.0.block.channel_mixer" in text and "top_k=3 exceeds n_experts=2" in text


def test_capacity_of_rejects_nonpositive_factor_used_directly():
    with pytest.raises(ValueError, match=r"capacity_factor=0\.0 must be > 0"):
        capacity_of(0.0, 10, 2, 4)
    assert capacity_of(None, 10, 2, 4) is None and capacity_of(1.0, 10, 2, 4) == 5


def test_config_round_trips_and_builds():
    cfg = moe_decoder({"n_experts": 4, "n_shared": 2, "shared_hidden": 48, "scoring": "sigmoid"})
    again = type(cfg).model_validate_json(cfg.model_dump_json())
    assert again == cfg
    model = build_model(again)
    ffn = model.blocks[0].ffn
    assert ffn.shared.gate.weight.shape == (48, 16) and ffn.experts.gate_up.shape[0] == 4
