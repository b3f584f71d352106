"""A bad config fails at validation, and the error names the field; configs round-trip JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from splice import registry
from splice.models.configs import DecoderConfig, LayerOverride
from splice.nn.configs import MLPConfig, PreNormBlockConfig, RMSNormConfig, SwiGLUConfig

pytestmark = pytest.mark.mha  # needs splice-mha; `nox -s core` deselects it


def decoder(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "type": "decoder",
        "vocab_size": 32,
        "d_model": 64,
        "n_layers": 4,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
    }
    config.update(changes)
    return config


def block(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}}
    config.update(changes)
    return config


def only_error(exc: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    """(dotted location, message) of the single error pydantic reported."""
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return ".".join(map(str, errors[0]["loc"])), errors[0]["msg"]


# -- bad values -----------------------------------------------------------------------
@pytest.mark.parametrize("field", ["d_model", "vocab_size", "n_layers", "max_seq_len"])
@pytest.mark.parametrize("value", [-1, 0])
def test_non_positive_size_names_the_field(field, value):
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(decoder(**{field: value}))
    assert only_error(exc) == (field, "Input should be greater than 0")


def test_negative_size_in_a_nested_component_names_the_path():
    cfg = decoder(block=block(channel_mixer={"type": "mlp", "hidden_dim": -1}))
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(cfg)
    assert only_error(exc) == ("block.channel_mixer.hidden_dim", "Input should be greater than 0")


def test_heads_not_dividing_width_names_n_heads():
    cfg = decoder(block=block(token_mixer={"type": "mha", "n_heads": 3}))
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(cfg)
    _, message = only_error(exc)
    assert "block.token_mixer.n_heads: 3 heads do not divide d_model=64" in message


def test_heads_not_dividing_width_in_an_override_names_the_override():
    override = {"every": 2, "block": block(token_mixer={"type": "mha", "n_heads": 5})}
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(decoder(overrides=[override]))
    assert "overrides.0.block.token_mixer.n_heads: 5 heads" in only_error(exc)[1]


def test_kv_heads_not_dividing_heads_names_n_kv_heads():
    from splice_mha.configs import MHAConfig

    with pytest.raises(ValidationError) as exc:
        MHAConfig(n_heads=4, n_kv_heads=3)
    assert "n_kv_heads=3 must divide n_heads=4" in only_error(exc)[1]


def test_override_layer_out_of_range_names_the_layer():
    override = {"layers": [1, 7], "block": block()}
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(decoder(overrides=[override]))
    assert "overrides.0.layers: [7] out of range for n_layers=4" in only_error(exc)[1]


def test_override_without_selector_is_rejected():
    with pytest.raises(ValidationError, match="needs `layers` or `every`"):
        LayerOverride.model_validate({"block": block()})


@pytest.mark.parametrize("dropout", [-0.1, 1.0])
def test_dropout_out_of_range_names_the_field(dropout):
    with pytest.raises(ValidationError) as exc:
        MLPConfig(dropout=dropout)
    assert only_error(exc)[0] == "dropout"


def test_bad_literal_names_the_field_and_the_choices():
    with pytest.raises(ValidationError) as exc:
        MLPConfig.model_validate({"activation": "swish"})
    location, message = only_error(exc)
    assert location == "activation"
    assert "Input should be 'gelu', 'gelu_tanh', " in message and "or 'silu'" in message


def test_assignment_is_validated_too():
    cfg = DecoderConfig.model_validate(decoder())
    with pytest.raises(ValidationError) as exc:
        cfg.d_model = -1
    assert only_error(exc)[0] == "d_model"


# -- unknown fields -------------------------------------------------------------------
def test_unknown_top_level_field_is_rejected_by_name():
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(decoder(d_modle=64))
    assert only_error(exc) == ("d_modle", "Extra inputs are not permitted")


def test_unknown_nested_field_is_rejected_with_its_path():
    cfg = decoder(block=block(channel_mixer={"type": "swiglu", "hiden_dim": 128}))
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(cfg)
    assert only_error(exc) == ("block.channel_mixer.hiden_dim", "Extra inputs are not permitted")


def test_unknown_keyword_is_rejected_in_python_too():
    with pytest.raises(ValidationError) as exc:
        RMSNormConfig(epsilon=1e-5)  # type: ignore[call-arg]
    assert only_error(exc)[0] == "epsilon"


# -- unknown tags and malformed component values ------------------------------------------
def test_unknown_tag_lists_registered_tags():
    cfg = decoder(block=block(channel_mixer={"type": "geglu"}))
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(cfg)
    location, message = only_error(exc)
    assert location == "block.channel_mixer"
    assert "unknown channel_mixer type 'geglu'" in message
    assert "registered channel_mixer types: [" in message  # plugins may add more (moe)
    assert "'mlp'" in message and "'swiglu'" in message
    assert "`splice plugins` lists them" in message


def test_unknown_tag_of_a_known_plugin_says_what_to_install(monkeypatch):
    monkeypatch.setitem(registry.INSTALL_HINTS, "channel_mixer", {"flashmix": "splice-flashmix"})
    cfg = decoder(block=block(channel_mixer={"type": "flashmix", "n_experts": 4}))
    with pytest.raises(ValidationError) as exc:
        DecoderConfig.model_validate(cfg)
    location, message = only_error(exc)
    assert location == "block.channel_mixer"
    assert "unknown channel_mixer type 'flashmix'" in message
    assert "Install the plugin that provides it, splice-flashmix" in message
    assert "`uv add --find-links wheels splice-flashmix`" in message


def test_tag_of_another_kind_is_explained():
    with pytest.raises(ValidationError) as exc:
        PreNormBlockConfig.model_validate(block(channel_mixer={"type": "mha", "n_heads": 4}))
    assert "'mha' is registered as a token_mixer, not a channel_mixer" in only_error(exc)[1]


def test_config_instance_of_another_kind_is_rejected():
    with pytest.raises(ValidationError) as exc:
        PreNormBlockConfig(token_mixer=MLPConfig())
    location, message = only_error(exc)
    assert location == "token_mixer"
    assert "unknown token_mixer type 'mlp'" in message


def test_component_dict_without_type_is_rejected():
    with pytest.raises(ValidationError) as exc:
        PreNormBlockConfig.model_validate(block(channel_mixer={"hidden_dim": 8}))
    assert only_error(exc) == (
        "channel_mixer",
        "Value error, a channel_mixer config needs a 'type' field naming a registered channel_mixer",
    )


def test_component_of_wrong_python_type_is_rejected():
    with pytest.raises(ValidationError) as exc:
        PreNormBlockConfig.model_validate(block(norm=3))
    assert only_error(exc)[0] == "norm"
    assert "expected a norm config (instance or dict with 'type'), got int" in only_error(exc)[1]


def test_bare_tag_string_means_all_defaults():
    cfg = PreNormBlockConfig.model_validate(block(channel_mixer="swiglu", norm="rmsnorm"))
    assert cfg.channel_mixer == SwiGLUConfig()
    assert cfg.norm == RMSNormConfig()


# -- JSON round trip -----------------------------------------------------------------------
def composed() -> DecoderConfig:
    from splice_mha.configs import MHAConfig

    """Llama-ish base block, a GELU MLP and post-norm on odd layers, GQA + QK-norm."""
    return DecoderConfig(
        vocab_size=100,
        d_model=64,
        n_layers=4,
        max_seq_len=128,
        block=PreNormBlockConfig(
            token_mixer=MHAConfig(n_heads=8, n_kv_heads=2, qk_norm=True),
            channel_mixer=SwiGLUConfig(hidden_dim=96),
            norm=RMSNormConfig(eps=1e-5),
        ),
        overrides=[
            LayerOverride(
                every=2,
                start=1,
                block={
                    "type": "post_norm",
                    "token_mixer": {"type": "mha", "n_heads": 4},
                    "channel_mixer": {"type": "mlp", "activation": "relu", "multiple": 2.0},
                },
            )
        ],
        positional={"type": "learned"},
        tie_embeddings=False,
    )


def test_config_json_config_is_identical():
    from splice_mha.configs import MHAConfig

    cfg = composed()
    text = cfg.model_dump_json()
    again = DecoderConfig.model_validate_json(text)
    assert again == cfg
    assert again.model_dump_json() == text
    assert type(again.block.token_mixer) is MHAConfig  # concrete classes, not the base
    assert again.block.token_mixer.n_kv_heads == 2
    assert type(again.block_for(1).channel_mixer) is MLPConfig
    assert again.block_for(1).type == "post_norm"


def test_json_keeps_every_subclass_field():
    dumped = json.loads(composed().model_dump_json())
    assert dumped["block"]["token_mixer"]["qk_norm"] is True
    assert dumped["block"]["channel_mixer"] == {
        "type": "swiglu",
        "hidden_dim": 96,
        "multiple": 8.0 / 3.0,
        "bias": False,
    }
    assert dumped["overrides"][0]["block"]["channel_mixer"]["activation"] == "relu"


def test_python_dict_round_trip_is_identical():
    cfg = composed()
    assert DecoderConfig.model_validate(cfg.model_dump()) == cfg
