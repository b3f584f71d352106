"""Encoder-decoder with the shared pieces: seq2seq collator, SFT objective, generation, conformance."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from splice.data.examples import Example
from splice.data.seq2seq import Seq2SeqCollator
from splice.data.tokenizer import CharTokenizer
from splice.generation.sampling import SamplingConfig, generate
from splice.models.configs import EncoderDecoderConfig
from splice.models.encoder_decoder import EncoderDecoderLM
from splice.objectives.sft import SFTObjective
from splice.testing import CachedModelConformance
from splice.testing import specs as conformance_specs
from torch import Tensor, nn

pytestmark = pytest.mark.mha  # needs splice-mha; `nox -s core` deselects it


TOK = CharTokenizer()


def make_config(**overrides: Any) -> EncoderDecoderConfig:
    fields: dict[str, Any] = dict(
        vocab_size=TOK.vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        block={"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
        cross_attention={"type": "cross_attention", "n_heads": 4},
        max_source_len=16,
        max_target_len=24,
    )
    fields.update(overrides)
    return EncoderDecoderConfig.model_validate(fields)


EXAMPLES = [Example("12", "twelve"), Example("7", "seven"), Example("300", "three hundred")]


# --------------------------------------------------------------------------- collator
def test_collator_shapes_and_alignment() -> None:
    batch = Seq2SeqCollator(TOK, max_source_len=8, max_target_len=20)(EXAMPLES)
    assert batch["encoder_input_ids"].shape == (3, 3)
    assert batch["encoder_attention_mask"].tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    assert batch["encoder_input_ids"][1].tolist() == [*TOK.encode("7"), TOK.pad_id, TOK.pad_id]
    t = len("three hundred") + 2
    assert (
        batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, t)
    )
    row = batch["input_ids"][1].tolist()
    assert row[:7] == TOK.encode("seven", bos=True, eos=True)
    assert set(row[7:]) == {TOK.pad_id}
    # labels[t] is the target *for* input token t: bos has none, padding has none.
    assert batch["labels"][1].tolist() == [-100, *TOK.encode("seven", eos=True)] + [-100] * (t - 7)
    assert batch["attention_mask"][1].tolist() == [1] * 7 + [0] * (t - 7)


def test_collator_overflow_policy() -> None:
    strict = Seq2SeqCollator(TOK, max_source_len=2, max_target_len=20, overflow="error")
    with pytest.raises(ValueError, match="max_source_len=2"):
        strict(EXAMPLES)
    lenient = Seq2SeqCollator(TOK, max_source_len=2, max_target_len=20)
    with pytest.warns(UserWarning, match="truncated"):
        assert lenient(EXAMPLES)["encoder_input_ids"].shape == (3, 2)
    with pytest.raises(ValueError, match="empty source"):
        lenient([Example("", "zero")])
    with pytest.raises(ValueError, match="max_target_len"):
        Seq2SeqCollator(TOK, max_source_len=4, max_target_len=1)


# --------------------------------------------------------------------------- objective
def test_sft_objective_trains_the_encoder_decoder() -> None:
    torch.manual_seed(0)
    model = EncoderDecoderLM(make_config(share_embeddings=False))
    batch = Seq2SeqCollator(TOK, max_source_len=8, max_target_len=20)(EXAMPLES)
    objective = SFTObjective()
    first = objective.loss(model, batch)
    # Targets: every completion character plus eos (the label on bos is ignored).
    assert first.n_tokens == sum(len(ex.completion) + 1 for ex in EXAMPLES)
    first.loss.backward()
    enc_grad = sum(
        float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None
    )
    assert enc_grad > 0  # the loss reaches the encoder (through cross-attention only)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        objective.loss(model, batch).loss.backward()
        opt.step()
    last = objective.loss(model, batch)
    assert last.metrics["loss"] < 0.5 * first.metrics["loss"]


def test_objective_loss_depends_on_the_source() -> None:
    torch.manual_seed(0)
    model = EncoderDecoderLM(make_config()).eval()
    collate = Seq2SeqCollator(TOK, max_source_len=8, max_target_len=20)
    batch = collate(EXAMPLES)
    swapped = dict(batch)
    swapped["encoder_input_ids"] = batch["encoder_input_ids"].flip(0)
    swapped["encoder_attention_mask"] = batch["encoder_attention_mask"].flip(0)
    with torch.no_grad():
        a = SFTObjective().loss(model, batch).metrics["loss"]
        b = SFTObjective().loss(model, swapped).metrics["loss"]
    assert a != pytest.approx(b, abs=1e-6)


# --------------------------------------------------------------------------- generation
def _greedy_uncached(model: EncoderDecoderLM, src: Tensor, src_mask: Tensor, steps: int) -> Tensor:
    ids = torch.full((src.shape[0], 1), TOK.bos_id)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(ids, encoder_input_ids=src, encoder_attention_mask=src_mask).logits
            assert logits is not None
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, 1:]


@pytest.mark.parametrize("target", ["wrapper", "decoder"])
def test_generate_with_context_matches_uncached_greedy(target: str) -> None:
    torch.manual_seed(0)
    model = EncoderDecoderLM(make_config()).eval()
    src, src_mask = Seq2SeqCollator(TOK, max_source_len=8, max_target_len=20).sources(EXAMPLES)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
    runner: nn.Module = model if target == "wrapper" else model.decoder
    out = generate(
        runner,
        [[TOK.bos_id]] * 3,
        SamplingConfig(max_new_tokens=6),
        pad_id=TOK.pad_id,
        context=memory,
        context_mask=src_mask,
    )
    assert torch.equal(out.tokens, _greedy_uncached(model, src, src_mask, 6))
    # The returned log-probs are the model's own, recomputed by one teacher-forced pass.
    ids = torch.cat([torch.full((3, 1), TOK.bos_id), out.tokens], dim=1)
    with torch.no_grad():
        logits = model(ids[:, :-1], context=memory, context_mask=src_mask).logits
    assert logits is not None
    want = logits.log_softmax(-1).gather(-1, out.tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(out.logprobs, want, rtol=0, atol=1e-4)


def test_generation_length_is_checked_against_max_target_len() -> None:
    model = EncoderDecoderLM(make_config(max_target_len=8)).eval()
    src, mask = Seq2SeqCollator(TOK, max_source_len=8, max_target_len=8).sources(EXAMPLES[:1])
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(
            model,
            [[TOK.bos_id]],
            SamplingConfig(max_new_tokens=8),
            pad_id=TOK.pad_id,
            context=model.encode(src, mask),
            context_mask=mask,
        )


# --------------------------------------------------------------------------- conformance
class _WithFixedSource(nn.Module):
    """The model conditioned on a fixed random source, so ``model(ids, cache=...)`` probes work.

    Every row reads the same source: a row's outputs then do not depend on its index in
    the batch (the batch-composition check reorders rows)."""

    def __init__(self, model: EncoderDecoderLM, src: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("src", src, persistent=False)

    def new_cache(self, max_len: int | None = None) -> Any:
        return self.model.new_cache(max_len)

    def forward(self, input_ids: Tensor, **kwargs: Any) -> Any:
        src = self.src[:1].expand(input_ids.shape[0], -1)
        return self.model(input_ids, encoder_input_ids=src, **kwargs)


class _EncoderDecoderSpec(conformance_specs.ModelSpec):
    def build(self, config: Any, ctx: Any) -> nn.Module:
        model = super().build(config, ctx)
        src = torch.randint(
            3, int(config.vocab_size), (4, 5), generator=torch.Generator().manual_seed(5)
        )
        return _WithFixedSource(model, src)  # type: ignore[arg-type]


class TestEncoderDecoderConformance(CachedModelConformance):
    """The shared model suite (shapes, dtypes, gradients to every parameter incl. the encoder's,
    safetensors round-trip, JSON config, determinism, causal decoder, KV cache)."""

    @pytest.fixture(autouse=True)
    def _encoder_decoder_spec(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(conformance_specs.SPECS, "model", _EncoderDecoderSpec())

    def make_config(self) -> EncoderDecoderConfig:
        return make_config(d_model=16, share_embeddings=False)

    # Length limits size the caches and position tables up front; within them they do not
    # change a forward pass.
    config_fields_exempt = ("max_source_len", "max_target_len")
