"""DecoderLM: conformance, weight tying, per-layer overrides, positions, packing, padding."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from splice.models.build import build_model
from splice.models.configs import DecoderConfig, LayerOverride
from splice.models.decoder import DecoderLM
from splice.nn.configs import (
    LearnedPositionalConfig,
    MLPConfig,
    PostNormBlockConfig,
    PreNormBlockConfig,
    RMSNormConfig,
    SinusoidalPositionalConfig,
    SwiGLUConfig,
)
from splice.nn.ffn import MLP, SwiGLU
from splice.nn.positional import LearnedPositional, RotaryEmbedding, SinusoidalPositional
from splice.testing import CachedModelConformance

pytestmark = pytest.mark.mha  # needs splice-mha; `nox -s core` deselects it


V, D = 40, 32
POSITIONALS = {
    "rope": {"type": "rope"},
    "sinusoidal": SinusoidalPositionalConfig(),
    "learned": LearnedPositionalConfig(),
}


def config(positional: Any = None, **kw: Any) -> DecoderConfig:
    args: dict[str, Any] = dict(
        vocab_size=V,
        d_model=D,
        n_layers=2,
        max_seq_len=64,
        block=PreNormBlockConfig(
            token_mixer={"type": "mha", "n_heads": 4, "n_kv_heads": 2},
            channel_mixer=SwiGLUConfig(),
            norm=RMSNormConfig(),
        ),
        final_norm=RMSNormConfig(),
    )
    if positional is not None:
        args["positional"] = positional
    args.update(kw)
    return DecoderConfig(**args)


def build(cfg: DecoderConfig, seed: int = 0) -> DecoderLM:
    torch.manual_seed(seed)
    model = build_model(cfg)
    assert isinstance(model, DecoderLM)
    return model.eval()


class TestRoPEDecoder(CachedModelConformance):
    def make_config(self) -> DecoderConfig:
        return config()


class TestSinusoidalPostNormDecoder(CachedModelConformance):
    def make_config(self) -> DecoderConfig:
        return config(
            SinusoidalPositionalConfig(),
            tie_embeddings=False,
            block=PostNormBlockConfig(token_mixer={"type": "mha", "n_heads": 2}),
        )


class TestLearnedDecoderWithOverrides(CachedModelConformance):
    def make_config(self) -> DecoderConfig:
        return config(
            LearnedPositionalConfig(),
            n_layers=3,
            overrides=[
                LayerOverride(
                    every=2,
                    start=1,
                    block=PreNormBlockConfig(
                        token_mixer={"type": "mha", "n_heads": 4, "n_kv_heads": 1},
                        channel_mixer=MLPConfig(),
                    ),
                )
            ],
        )


# --------------------------------------------------------------------------- weight tying
def test_tied_weights_share_one_tensor_and_untied_do_not() -> None:
    tied, untied = build(config()), build(config(tie_embeddings=False))
    assert tied.lm_head.weight is tied.embed.weight
    assert untied.lm_head.weight is not untied.embed.weight
    assert tied.num_parameters() == untied.num_parameters() - V * D
    # The head's gradient lands on the shared embedding matrix.
    tied.train()
    tied(torch.tensor([[1, 2, 3]])).logits[0, -1, 7].backward()  # type: ignore[index]
    assert tied.embed.weight.grad is not None and tied.embed.weight.grad[7].abs().sum() > 0


# --------------------------------------------------------------------------- per-layer overrides
def test_override_every_other_layer_changes_the_built_modules() -> None:
    cfg = config(
        n_layers=5,
        overrides=[
            LayerOverride(
                every=2,
                start=1,
                block=PreNormBlockConfig(
                    token_mixer={"type": "mha", "n_heads": 4}, channel_mixer=MLPConfig(multiple=2.0)
                ),
            ),
            LayerOverride(
                layers=[4], block=PostNormBlockConfig(token_mixer={"type": "mha", "n_heads": 2})
            ),
        ],
    )
    model = build(cfg)
    ffn_types = [type(b.ffn) for b in model.blocks]
    assert ffn_types == [SwiGLU, MLP, SwiGLU, MLP, MLP]
    assert [type(b).__name__ for b in model.blocks] == ["PreNormBlock"] * 4 + ["PostNormBlock"]
    assert model.blocks[1].ffn.up.out_features == 2 * D  # the override's own settings
    assert model.blocks[1].mixer.n_kv_heads == 4 and model.blocks[0].mixer.n_kv_heads == 2
    assert model.blocks[4].mixer.n_heads == 2


def test_override_layer_out_of_range_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"overrides\.0\.layers"):
        config(overrides=[LayerOverride(layers=[7], block=config().block)])


# --------------------------------------------------------------------------- positions
def test_sinusoidal_table_is_the_original_formula() -> None:
    model = build(config(SinusoidalPositionalConfig()))
    assert isinstance(model.pos_embed, SinusoidalPositional) and model.rotary is None
    table = model.pos_embed.table
    for p in (0, 1, 5, 63):
        for i in range(D // 2):
            angle = p / 10000 ** (2 * i / D)
            assert math.isclose(table[p, 2 * i].item(), math.sin(angle), abs_tol=1e-5)
            assert math.isclose(table[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-5)
    assert "pos_embed.table" not in model.state_dict()  # fixed, not a weight


def test_learned_positions_are_a_trained_parameter() -> None:
    model = build(config(LearnedPositionalConfig()))
    assert isinstance(model.pos_embed, LearnedPositional) and model.rotary is None
    assert model.state_dict()["pos_embed.weight"].shape == (64, D)


def test_rope_lives_in_attention_not_in_the_embeddings() -> None:
    model = build(config())
    assert isinstance(model.rotary, RotaryEmbedding) and model.pos_embed is None
    assert all(b.mixer.rotary is model.rotary for b in model.blocks)


@pytest.mark.parametrize("name", list(POSITIONALS))
def test_shifting_positions_matters_only_for_absolute_encodings(name: str) -> None:
    model = build(config(POSITIONALS[name]))
    ids = torch.tensor([[3, 9, 4, 1, 5]])
    pos = torch.arange(5)[None]
    a = model(ids, positions=pos).logits
    b = model(ids, positions=pos + 7).logits
    diff = (a - b).abs().max().item()  # type: ignore[operator]
    if name == "rope":  # attention scores depend on relative positions only
        assert diff <= 1e-5
    else:
        assert diff > 1e-3


# --------------------------------------------------------------------------- packing and padding
@pytest.mark.parametrize("name", list(POSITIONALS))
def test_packed_documents_equal_separate_runs(name: str) -> None:
    model = build(config(POSITIONALS[name]))
    docs = [[5, 6, 7], [8, 9, 10, 11], [12, 2]]
    ids = torch.tensor([[tok for d in docs for tok in d]])
    doc_ids = torch.tensor([[i for i, d in enumerate(docs) for _ in d]])
    positions = torch.tensor([[p for d in docs for p in range(len(d))]])
    packed = model(ids, positions=positions, doc_ids=doc_ids).logits[0]  # type: ignore[index]
    start = 0
    for d in docs:
        alone = model(torch.tensor([d])).logits[0]  # type: ignore[index]
        assert (packed[start : start + len(d)] - alone).abs().max().item() <= 1e-5
        start += len(d)
    # Without doc_ids the later documents would see the earlier ones.
    leaky = model(ids, positions=positions).logits[0]  # type: ignore[index]
    assert (leaky[3:] - packed[3:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("name", list(POSITIONALS))
def test_branches_sharing_a_prefix_equal_separate_runs(name: str) -> None:
    """``branch_ids``: two continuations after one copy of a prefix, each seeing the prefix
    and itself only, give the logits of each full sequence run alone (with another
    prefix-sharing document packed after them in the same row)."""
    model = build(config(POSITIONALS[name]))
    prefix, first, second = [5, 6, 7], [8, 9], [10, 11, 12]
    other = [13, 14]
    ids = torch.tensor([prefix + first + second + other])
    positions = torch.tensor([[0, 1, 2, 3, 4, 3, 4, 5, 0, 1]])
    branch_ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 0, 1]])
    doc_ids = torch.tensor([[0] * 8 + [1] * 2])
    out = model(ids, positions=positions, doc_ids=doc_ids, branch_ids=branch_ids).logits[0]  # type: ignore[index]
    for seq, rows in (
        (prefix + first, [0, 1, 2, 3, 4]),
        (prefix + second, [0, 1, 2, 5, 6, 7]),
        (other, [8, 9]),
    ):
        alone = model(torch.tensor([seq])).logits[0]  # type: ignore[index]
        assert (out[rows] - alone).abs().max().item() <= 1e-5
    # Without branch_ids the second continuation would see the first.
    leaky = model(ids, positions=positions, doc_ids=doc_ids).logits[0]  # type: ignore[index]
    assert (leaky[5:8] - out[5:8]).abs().max().item() > 1e-4


@pytest.mark.parametrize("name", list(POSITIONALS))
def test_left_padded_batch_equals_unpadded_rows(name: str) -> None:
    model = build(config(POSITIONALS[name]))
    rows = [[4, 5, 6, 7, 8], [9, 10]]
    ids = torch.tensor([rows[0], [0, 0, 0, *rows[1]]])
    mask = torch.tensor([[1] * 5, [0, 0, 0, 1, 1]])
    out = model(ids, attention_mask=mask).logits
    for i, row in enumerate(rows):
        alone = model(torch.tensor([row])).logits[0]  # type: ignore[index]
        assert (out[i, -len(row) :] - alone).abs().max().item() <= 1e-5  # type: ignore[index]


def test_cached_decoding_of_a_left_padded_batch_equals_the_full_pass() -> None:
    model = build(config())
    ids = torch.tensor([[4, 5, 6, 7, 8, 11, 12], [0, 0, 9, 10, 13, 14, 15]])
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    full = model(ids, attention_mask=mask).logits
    cache = model.new_cache(16)
    steps = [model(ids[:, :4], attention_mask=mask[:, :4], cache=cache).logits]
    for t in range(4, 7):
        steps.append(model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache).logits)
    inc = torch.cat(steps, dim=1)  # type: ignore[arg-type]
    real = mask.bool()
    assert (inc[real] - full[real]).abs().max().item() <= 1e-5  # type: ignore[index]
