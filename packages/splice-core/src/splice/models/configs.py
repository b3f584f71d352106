"""Model configs (torch-free)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from splice.config import (
    BlockField,
    ComponentConfig,
    NormField,
    PositionalField,
    SpliceConfig,
    TokenMixerField,
)
from splice.nn.configs import LayerNormConfig, RoPEConfig


class LayerOverride(SpliceConfig):
    """Use ``block`` instead of the model's default block on some layers.

    Either list ``layers`` explicitly, or give ``every`` (and ``start``) to pick
    layers ``start, start+every, ...`` — e.g. ``every=2, start=1`` for an MoE FFN
    on every other layer.
    """

    block: BlockField
    layers: list[NonNegativeInt] = Field(default_factory=list)
    every: PositiveInt | None = None
    start: NonNegativeInt = 0

    @model_validator(mode="after")
    def _one_selector(self) -> LayerOverride:
        if not self.layers and self.every is None:
            raise ValueError("a layer override needs `layers` or `every`")
        return self

    def selects(self, layer: int) -> bool:
        if layer in self.layers:
            return True
        return (
            self.every is not None
            and layer >= self.start
            and (layer - self.start) % self.every == 0
        )


def check_block(block: Any, *, d_model: int, where: str) -> None:
    """Ask a block's sub-configs whether they can be built at width ``d_model``."""
    for name in ("token_mixer", "cross_attention", "channel_mixer"):
        sub = getattr(block, name, None)
        check = getattr(sub, "check_compatible", None)
        if check is not None:
            try:
                check(d_model=d_model)
            except ValueError as exc:
                raise ValueError(f"{where}.{name}.{exc}") from None


class DecoderConfig(ComponentConfig):
    """A decoder-only language model (GPT / Llama family).

    ``tokens -> embed (+ additive positions) -> n_layers x block -> final_norm -> lm_head``.
    """

    type: Literal["decoder"] = "decoder"
    vocab_size: PositiveInt
    d_model: PositiveInt
    n_layers: PositiveInt
    max_seq_len: PositiveInt = 512
    block: BlockField
    overrides: list[LayerOverride] = Field(default_factory=list)
    positional: PositionalField = RoPEConfig()
    final_norm: NormField = LayerNormConfig()
    tie_embeddings: bool = True
    init_std: float = Field(default=0.02, gt=0.0)
    embedding_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_layers(self) -> DecoderConfig:
        check_block(self.block, d_model=self.d_model, where="block")
        for i, ov in enumerate(self.overrides):
            bad = [layer for layer in ov.layers if layer >= self.n_layers]
            if bad:
                raise ValueError(
                    f"overrides.{i}.layers: {bad} out of range for n_layers={self.n_layers}"
                )
            check_block(ov.block, d_model=self.d_model, where=f"overrides.{i}.block")
        return self

    def block_for(self, layer: int) -> Any:
        """The block config of ``layer``: the last override that selects it, else ``block``."""
        chosen = self.block
        for ov in self.overrides:
            if ov.selects(layer):
                chosen = ov.block
        return chosen


class PretrainedModelConfig(ComponentConfig):
    """A decoder loaded from a Hugging Face checkpoint folder (Llama, Qwen2, GPT-2).

    ``config.json`` gives the architecture and ``model.safetensors`` (or shards) the weights;
    see ``splice.hf`` and docs/loading-models.md. The model is returned in train mode.

    Attributes:
        path: the checkpoint folder.
        dtype: ``"auto"`` keeps the checkpoint's dtype; ``"float32"`` (default) trains in fp32.
    """

    type: Literal["pretrained"] = "pretrained"
    path: str
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"


class EncoderDecoderConfig(ComponentConfig):
    """An encoder-decoder transformer (the original Transformer / T5 / BART family).

    ``source -> embed -> encoder_layers x block (bidirectional) -> encoder_norm -> memory``;
    ``target -> DecoderLM whose blocks add cross_attention over memory -> logits``.

    ``block`` is the self-attention block of both stacks (give ``encoder_block`` to use a
    different one in the encoder); the decoder's copy gets ``cross_attention`` added, e.g.
    ``{"type": "cross_attention", "n_heads": 4}`` from splice-mha.

    Attributes:
        vocab_size: shared by source and target (one tokenizer).
        max_source_len / max_target_len: longest source and target sequences.
        share_embeddings: one token embedding for encoder, decoder (and the tied lm_head).
    """

    type: Literal["encoder_decoder"] = "encoder_decoder"
    vocab_size: PositiveInt
    d_model: PositiveInt
    encoder_layers: PositiveInt
    decoder_layers: PositiveInt
    block: BlockField
    cross_attention: TokenMixerField
    encoder_block: BlockField | None = None
    max_source_len: PositiveInt = 512
    max_target_len: PositiveInt = 512
    positional: PositionalField = RoPEConfig()
    final_norm: NormField = LayerNormConfig()
    share_embeddings: bool = True
    tie_embeddings: bool = True
    init_std: float = Field(default=0.02, gt=0.0)
    embedding_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> EncoderDecoderConfig:
        enc = self.encoder_block_config()
        if getattr(enc, "cross_attention", None) is not None:
            raise ValueError(
                "encoder_block.cross_attention: the encoder attends only to its own source; "
                "expected None (cross-attention belongs to the decoder)"
            )
        check_block(enc, d_model=self.d_model, where="encoder_block")
        check = getattr(self.cross_attention, "check_compatible", None)
        if check is not None:
            try:
                check(d_model=self.d_model)
            except ValueError as exc:
                raise ValueError(f"cross_attention.{exc}") from None
        return self

    @property
    def max_seq_len(self) -> int:
        """Longest decoder sequence (what generation checks prompt + new tokens against)."""
        return self.max_target_len

    def encoder_block_config(self) -> Any:
        """The encoder's block: ``encoder_block`` if given, else ``block``."""
        return self.encoder_block if self.encoder_block is not None else self.block

    def decoder_config(self) -> DecoderConfig:
        """The ``DecoderConfig`` of the decoder stack: ``block`` plus ``cross_attention``."""
        return DecoderConfig(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            n_layers=self.decoder_layers,
            max_seq_len=self.max_target_len,
            block=self.block.model_copy(update={"cross_attention": self.cross_attention}),
            positional=self.positional,
            final_norm=self.final_norm,
            tie_embeddings=self.tie_embeddings,
            init_std=self.init_std,
            embedding_dropout=self.embedding_dropout,
        )


__all__ = ["EncoderDecoderConfig"]
