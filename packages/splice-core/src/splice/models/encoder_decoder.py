"""Encoder-decoder transformer: a bidirectional encoder and a cross-attending ``DecoderLM``.

The encoder reads the whole source at once; every source token attends to every
other real source token (no causal mask), so its output at position ``i`` depends
on tokens after ``i`` too. The decoder is the ordinary causal ``DecoderLM`` whose
blocks carry a cross-attention sub-layer: queries from the target prefix, keys and
values from the encoder output (``context``), with source padding masked out.
Like ``DecoderLM``, it never imports a plugin: all parts come from the registry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from splice.generation.kv_cache import KVCache
from splice.interfaces import BuildContext, ModelOutput
from splice.models.common import attention_inputs, build_positions, init_weights, sum_aux
from splice.models.configs import EncoderDecoderConfig
from splice.models.decoder import DecoderLM
from splice.nn.dropout import dropout_or_identity
from splice.nn.embedding import Embedding


class TransformerEncoder(nn.Module):
    """``src_ids (B, S), src_mask (B, S) -> memory (B, S, D)`` with bidirectional self-attention."""

    def __init__(self, config: EncoderDecoderConfig, embed: nn.Embedding | None = None) -> None:
        from splice.registry import get_registry

        super().__init__()
        reg = get_registry()
        block_cfg = config.encoder_block_config()
        base = BuildContext(
            d_model=config.d_model,
            max_seq_len=config.max_source_len,
            n_layers=config.encoder_layers,
            causal=False,
        )
        self.rotary, self.pos_embed = build_positions(config.positional, base, block_cfg)
        self.embed = embed if embed is not None else Embedding(config.vocab_size, config.d_model)
        self.drop = dropout_or_identity(config.embedding_dropout)
        self.blocks = nn.ModuleList(
            reg.build("block", block_cfg, replace(base, layer_idx=i, rotary=self.rotary))
            for i in range(config.encoder_layers)
        )
        self.final_norm = reg.build("norm", config.final_norm, base)

    def forward(self, src_ids: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """Encode a (right- or left-) padded source batch.

        Args:
            src_ids: ``(B, S)`` source token ids.
            src_mask: ``(B, S)`` 1 for real tokens, 0 for padding; None = no padding.
                Positions count real tokens only, so padding never shifts them.

        Returns:
            ``(B, S, D)`` normalised encoder states; rows at padding positions are
            meaningless and must be masked by the reader (cross-attention's ``context_mask``).
        """
        return self.encode_with_aux(src_ids, src_mask)[0]

    def encode_with_aux(
        self, src_ids: Tensor, src_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``forward`` plus the summed auxiliary loss of the encoder's channel mixers (MoE)."""
        b, s = src_ids.shape
        inputs = attention_inputs(
            batch=b,
            t=s,
            device=src_ids.device,
            causal=False,
            positions=None,
            attention_mask=src_mask,
            doc_ids=None,
            cache=None,
        )
        if self.rotary is not None:
            inputs.rope = self.rotary.cos_sin(inputs.positions)
        x = self.embed(src_ids)  # (B, S, D)
        if self.pos_embed is not None:
            x = x + self.pos_embed(inputs.positions)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, inputs)
        return self.final_norm(x), sum_aux(inputs.aux_losses)


class EncoderDecoderLM(nn.Module):
    """Encoder + cross-attending decoder.

    ``forward(input_ids (B, T), encoder_input_ids=(B, S), encoder_attention_mask=(B, S))
    -> ModelOutput(logits (B, T, V), hidden (B, T, D))``. Pass a precomputed ``context``
    (from :meth:`encode`) instead of the source to reuse one encoding across decoding steps;
    ``new_cache`` is the decoder's, so ``splice.generation.sampling.generate(model, prompts,
    sampling, pad_id=..., context=memory, context_mask=src_mask)`` decodes with a KV cache.
    """

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder = DecoderLM(config.decoder_config())
        # Built after the decoder so a shared embedding is the decoder's (tied to its lm_head).
        shared = self.decoder.embed if config.share_embeddings else None
        self.encoder = TransformerEncoder(config, embed=shared)
        init_weights(self.encoder, config.init_std)

    @property
    def lm_head(self) -> nn.Linear:
        """The decoder's vocabulary projection (objectives project ``hidden`` chunk-wise)."""
        return self.decoder.lm_head

    def new_cache(self, max_len: int | None = None) -> KVCache:
        """The decoder's self-attention KV cache (cross-attention K/V are recomputed from context)."""
        return self.decoder.new_cache(max_len)

    def encode(self, src_ids: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """``(B, S)`` source ids and padding mask -> ``(B, S, D)`` encoder output."""
        return self.encoder(src_ids, src_mask)  # type: ignore[no-any-return]

    def forward(
        self,
        input_ids: Tensor | None = None,
        *,
        encoder_input_ids: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        **decoder_kwargs: Any,
    ) -> ModelOutput:
        """Decode ``input_ids`` conditioned on a source.

        Args:
            input_ids: ``(B, T)`` target prefix (teacher forcing: bos + target).
            encoder_input_ids: ``(B, S)`` source ids; encoded here when ``context`` is None.
            encoder_attention_mask: ``(B, S)`` source padding mask (1 real, 0 pad).
            context: ``(B, S, D)`` precomputed encoder output (skips the encoder).
            context_mask: ``(B, S)`` padding mask of ``context``; defaults to
                ``encoder_attention_mask``.
            **decoder_kwargs: passed to ``DecoderLM.forward`` (``attention_mask`` for target
                padding, ``positions``, ``cache``, ``return_logits``, ...).

        Raises:
            ValueError: neither ``encoder_input_ids`` nor ``context`` given.
        """
        encoder_aux: Tensor | None = None
        if context is None:
            if encoder_input_ids is None:
                raise ValueError(
                    "EncoderDecoderLM needs the source: give encoder_input_ids (B, S) "
                    "or a precomputed context (B, S, D) from encode()"
                )
            context, encoder_aux = self.encoder.encode_with_aux(
                encoder_input_ids, encoder_attention_mask
            )
        if context_mask is None:
            context_mask = encoder_attention_mask
        out: ModelOutput = self.decoder(
            input_ids, context=context, context_mask=context_mask, **decoder_kwargs
        )
        if encoder_aux is not None:  # e.g. MoE balancing losses of the encoder's layers
            out.aux_loss = encoder_aux if out.aux_loss is None else out.aux_loss + encoder_aux
        return out

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        """Distinct parameters (a shared embedding counts once)."""
        # ``parameters()`` already yields a shared tensor once.
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def build_encoder_decoder(config: EncoderDecoderConfig, ctx: object = None) -> EncoderDecoderLM:
    return EncoderDecoderLM(config)


__all__ = ["EncoderDecoderLM", "TransformerEncoder", "build_encoder_decoder"]
