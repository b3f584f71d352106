from __future__ import annotations

import pydantic
import pytest
from pydantic import TypeAdapter
from splice.config import RegularizerField
from splice.registry import get_registry
from splice_forgetting.configs import EWCConfig, KLReferenceConfig, L2SPConfig


def test_entry_point_registers_the_three_regularizers() -> None:
    info = get_registry().plugins["forgetting"]
    assert info.error is None
    assert sorted(info.registered["regularizer"]) == ["ewc", "kl_reference", "l2sp"]


@pytest.mark.parametrize(
    ("data", "cls"),
    [
        ({"type": "l2sp", "weight": 0.1}, L2SPConfig),
        ({"type": "ewc", "n_batches": 4, "normalize": "mean"}, EWCConfig),
        ({"type": "kl_reference", "estimator": "k3"}, KLReferenceConfig),
    ],
)
def test_dict_configs_resolve_and_round_trip(data, cls) -> None:
    adapter = TypeAdapter(RegularizerField)
    config = adapter.validate_python(data)
    assert isinstance(config, cls)
    assert adapter.validate_json(adapter.dump_json(config)) == config


def test_bad_option_names_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="direction"):
        TypeAdapter(RegularizerField).validate_python({"type": "kl_reference", "direction": "up"})
