"""Encoder-decoder: shapes, bidirectional encoder, causal decoder, padding, gradients."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from splice.models.build import build_model
from splice.models.configs import EncoderDecoderConfig
from splice.models.encoder_decoder import EncoderDecoderLM

pytestmark = pytest.mark.mha  # needs splice-mha; `nox -s core` deselects it


V, D = 23, 32


def make_config(**overrides: object) -> EncoderDecoderConfig:
    fields: dict[str, object] = dict(
        vocab_size=V,
        d_model=D,
        encoder_layers=2,
        decoder_layers=2,
        block={"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
        cross_attention={"type": "cross_attention", "n_heads": 4},
        max_source_len=32,
        max_target_len=32,
    )
    fields.update(overrides)
    return EncoderDecoderConfig.model_validate(fields)


@pytest.fixture
def model() -> EncoderDecoderLM:
    torch.manual_seed(0)
    return EncoderDecoderLM(make_config()).eval()


def rand_ids(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V, shape, generator=g)


def test_output_shapes_and_registry_build() -> None:
    torch.manual_seed(0)
    built = build_model(make_config().model_dump())
    assert isinstance(built, EncoderDecoderLM)
    src, tgt = rand_ids(3, 7), rand_ids(3, 5, seed=2)
    memory = built.encode(src)
    assert memory.shape == (3, 7, D)
    out = built(tgt, encoder_input_ids=src)
    assert out.logits is not None and out.logits.shape == (3, 5, V)
    assert out.hidden.shape == (3, 5, D)
    # Every decoder block has a cross-attention sub-layer; no encoder block does.
    assert all(b.cross is not None for b in built.decoder.blocks)
    assert all(b.cross is None for b in built.encoder.blocks)


def test_config_round_trips_through_json() -> None:
    cfg = make_config(positional={"type": "learned"})
    again = EncoderDecoderConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    assert again.decoder_config().block.cross_attention.type == "cross_attention"


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="cross_attention"):
        make_config(cross_attention={"type": "cross_attention", "n_heads": 5})
    with pytest.raises(ValidationError, match=r"encoder_block\.cross_attention"):
        make_config(
            encoder_block={
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": 4},
                "cross_attention": {"type": "cross_attention", "n_heads": 4},
            }
        )


def test_encoder_is_bidirectional(model: EncoderDecoderLM) -> None:
    src = rand_ids(2, 8)
    changed = src.clone()
    changed[:, -1] = (changed[:, -1] + 1 - 3) % (V - 3) + 3  # a different real token
    with torch.no_grad():
        a, b = model.encode(src), model.encode(changed)
    # The first position sees the last one: its output moves.
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4


def test_decoder_is_causal(model: EncoderDecoderLM) -> None:
    src, tgt = rand_ids(2, 6), rand_ids(2, 7, seed=3)
    changed = tgt.clone()
    changed[:, 4] = (changed[:, 4] + 1 - 3) % (V - 3) + 3
    with torch.no_grad():
        a = model(tgt, encoder_input_ids=src).logits
        b = model(changed, encoder_input_ids=src).logits
    assert a is not None and b is not None
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-6)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-4


def test_decoder_depends_on_every_source_token(model: EncoderDecoderLM) -> None:
    src, tgt = rand_ids(2, 6), rand_ids(2, 3, seed=3)
    changed = src.clone()
    changed[:, -1] = (changed[:, -1] + 1 - 3) % (V - 3) + 3
    with torch.no_grad():
        a = model(tgt, encoder_input_ids=src).logits
        b = model(tgt, encoder_input_ids=changed).logits
    assert a is not None and b is not None
    # Even the first target position sees the whole source through cross-attention.
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("positional", ["rope", "learned", "sinusoidal"])
def test_source_padding_does_not_change_real_outputs(positional: str) -> None:
    torch.manual_seed(0)
    model = EncoderDecoderLM(make_config(positional={"type": positional})).eval()
    src, tgt = rand_ids(1, 5), rand_ids(1, 4, seed=3)
    # Right padding with garbage ids (not pad_id) proves the mask, not the embedding, hides them.
    padded = torch.cat([src, rand_ids(1, 3, seed=9)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    with torch.no_grad():
        mem = model.encode(src)
        mem_pad = model.encode(padded, mask)
        ref = model(tgt, encoder_input_ids=src).logits
        out = model(tgt, encoder_input_ids=padded, encoder_attention_mask=mask).logits
    torch.testing.assert_close(mem_pad[:, :5], mem, rtol=0, atol=1e-5)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_batch_with_mixed_lengths_and_target_padding(model: EncoderDecoderLM) -> None:
    """Row 1 of a padded batch equals row 1 run alone (source and target both padded)."""
    src = rand_ids(2, 6)
    tgt = rand_ids(2, 5, seed=3)
    src_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    tgt_mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2])
    with torch.no_grad():
        batched = model(
            tgt, encoder_input_ids=src, encoder_attention_mask=src_mask, attention_mask=tgt_mask
        ).logits
        alone = model(tgt[1:, :3], encoder_input_ids=src[1:, :4]).logits
    assert batched is not None and alone is not None
    torch.testing.assert_close(batched[1:, :3], alone, rtol=0, atol=1e-5)


def test_precomputed_context_equals_encoding_inline(model: EncoderDecoderLM) -> None:
    src, tgt = rand_ids(2, 6), rand_ids(2, 4, seed=3)
    mask = torch.ones_like(src)
    with torch.no_grad():
        inline = model(tgt, encoder_input_ids=src, encoder_attention_mask=mask).logits
        memory = model.encode(src, mask)
        reused = model(tgt, context=memory, context_mask=mask).logits
    torch.testing.assert_close(inline, reused)


def test_missing_source_is_a_clear_error(model: EncoderDecoderLM) -> None:
    with pytest.raises(ValueError, match="encoder_input_ids"):
        model(rand_ids(1, 3))


def test_gradients_reach_encoder_through_cross_attention() -> None:
    torch.manual_seed(0)
    model = EncoderDecoderLM(make_config(share_embeddings=False))
    src, tgt = rand_ids(2, 6), rand_ids(2, 4, seed=3)
    out = model(tgt, encoder_input_ids=src)
    assert out.logits is not None
    out.logits.square().mean().backward()
    # With unshared embeddings the encoder is reached only through cross-attention.
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for blk in model.decoder.blocks:
        assert blk.cross.k_proj.weight.grad.abs().sum() > 0


def test_shared_embeddings_are_one_tensor() -> None:
    torch.manual_seed(0)
    shared = EncoderDecoderLM(make_config())
    separate = EncoderDecoderLM(make_config(share_embeddings=False))
    assert shared.encoder.embed.weight is shared.decoder.embed.weight
    assert shared.lm_head.weight is shared.decoder.embed.weight
    assert separate.num_parameters() - shared.num_parameters() == V * D


def test_cached_decoding_matches_full_forward(model: EncoderDecoderLM) -> None:
    """Step-by-step decoding with the decoder's KV cache and a fixed context == one full pass."""
    src, tgt = rand_ids(2, 6), rand_ids(2, 5, seed=3)
    with torch.no_grad():
        memory = model.encode(src)
        full = model(tgt, context=memory).logits
        cache = model.new_cache(16)
        steps = [model(tgt[:, i : i + 1], context=memory, cache=cache).logits for i in range(5)]
    assert full is not None
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)  # type: ignore[arg-type]


def _generate_counting_flops(model: EncoderDecoderLM, *, cache_cross: bool, steps: int):
    """Greedy tokens and total FLOPs of ``generate`` with the cross K/V cache on or off."""
    from splice.generation.kv_cache import KVCache
    from splice.generation.sampling import SamplingConfig, generate
    from torch.utils.flop_counter import FlopCounterMode

    n_layers = len(model.decoder.blocks)
    model.new_cache = lambda max_len=None: KVCache(  # type: ignore[method-assign]
        n_layers, max_len or 32, cache_cross=cache_cross
    )
    src = rand_ids(2, 9, seed=5)
    with torch.no_grad():
        memory = model.encode(src)
    counter = FlopCounterMode(display=False)
    with counter:
        out = generate(
            model,
            [[1, 4, 5], [1, 7]],
            SamplingConfig(max_new_tokens=steps),
            pad_id=0,
            context=memory,
        )
    return out.tokens, counter.get_total_flops()


def test_cross_attention_kv_is_projected_once_per_prompt(model: EncoderDecoderLM) -> None:
    from splice.generation.kv_cache import KVCache

    """Caching the context's K/V gives the same tokens and saves exactly their projections.

    Without the cache every decode step projects the (B, S, D) context to K and V in every
    decoder layer again: 2 matmuls of 2*B*S*D*D FLOPs per layer per step.
    """
    steps = 6
    cached, flops_cached = _generate_counting_flops(model, cache_cross=True, steps=steps)
    recomputed, flops_recomputed = _generate_counting_flops(model, cache_cross=False, steps=steps)
    assert cached.tolist() == recomputed.tolist()
    b, s, layers = 2, 9, 2
    per_step = layers * 2 * (2 * b * s * D * D)
    assert flops_recomputed - flops_cached == (steps - 1) * per_step
    # the prefill fills each layer's cross-attention cache with the context's K/V
    cache = KVCache(2, 32)
    with torch.no_grad():
        memory = model.encode(rand_ids(2, 9, seed=5))
        model(torch.tensor([[1, 4, 5]]), context=memory[:1], cache=cache)
        assert cache.layers[0].cross.k is not None and cache.layers[0].cross.k.shape[2] == 9
