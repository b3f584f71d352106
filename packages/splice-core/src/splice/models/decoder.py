"""Decoder-only language model assembled from a ``DecoderConfig``.

It never imports a plugin: every block part is built through the registry.
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from splice.generation.kv_cache import KVCache
from splice.interfaces import BuildContext, ModelOutput
from splice.models.common import attention_inputs, build_positions, init_weights, sum_aux
from splice.models.configs import DecoderConfig
from splice.nn.dropout import dropout_or_identity
from splice.nn.embedding import Embedding
from splice.nn.fused import FusedLinears


class DecoderLM(nn.Module):
    """``input_ids (B, T) -> ModelOutput(logits (B, T, V), hidden (B, T, D), aux_loss)``."""

    def __init__(self, config: DecoderConfig) -> None:
        from splice.registry import get_registry

        super().__init__()
        reg = get_registry()
        self.config = config
        base = BuildContext(
            d_model=config.d_model,
            max_seq_len=config.max_seq_len,
            n_layers=config.n_layers,
            causal=True,
        )
        self.rotary, self.pos_embed = build_positions(config.positional, base, config.block)
        self.embed = Embedding(config.vocab_size, config.d_model)
        self.drop = dropout_or_identity(config.embedding_dropout)
        self.blocks = nn.ModuleList(
            reg.build("block", config.block_for(i), replace(base, layer_idx=i, rotary=self.rotary))
            for i in range(config.n_layers)
        )
        self.final_norm = reg.build("norm", config.final_norm, base)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._head = FusedLinears("lm_head")  # a bare F.linear while decoding
        init_weights(self, config.init_std)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def new_cache(self, max_len: int | None = None) -> KVCache:
        """An empty KV cache sized for ``max_len`` positions (default: ``max_seq_len``)."""
        return KVCache(len(self.blocks), max_len or self.config.max_seq_len)

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        embeds: Tensor = self.embed(input_ids)  # (B, T, D)
        return embeds

    def forward(
        self,
        input_ids: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        positions: Tensor | None = None,
        attention_mask: Tensor | None = None,
        doc_ids: Tensor | None = None,
        branch_ids: Tensor | None = None,
        cache: KVCache | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        return_logits: bool = True,
    ) -> ModelOutput:
        """Run the decoder.

        Args:
            input_ids: ``(B, T)`` token ids (or give ``inputs_embeds (B, T, D)``, e.g. with
                image features spliced in by a connector).
            positions: ``(B, T)`` absolute positions; derived from the cache length and
                ``attention_mask`` when omitted.
            attention_mask: ``(B, S)`` 1 for real tokens, 0 for padding, over cache + input.
            doc_ids: ``(B, T)`` document ids of packed sequences (no cross-document attention).
            branch_ids: ``(B, T)`` prefix sharing within a document: 0 on the shared prefix,
                ``k > 0`` on continuation ``k``, which sees the prefix and itself only.
            cache: KV cache to read and extend (generation).
            context: ``(B, S_ctx, D_ctx)`` features for cross-attention blocks.
            context_mask: ``(B, S_ctx)`` padding mask of ``context``.
            return_logits: False to skip the vocabulary projection (chunked losses).
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            inputs_embeds = self.embed_tokens(input_ids)
        b, t, _ = inputs_embeds.shape
        inputs = attention_inputs(
            batch=b,
            t=t,
            device=inputs_embeds.device,
            causal=True,
            positions=positions,
            attention_mask=attention_mask,
            doc_ids=doc_ids,
            branch_ids=branch_ids,
            cache=cache,
            context=context,
            context_mask=context_mask,
        )
        if self.rotary is not None:  # gathered once here, not in every layer
            inputs.rope = self.rotary.cos_sin(inputs.positions)
        x = inputs_embeds
        if self.pos_embed is not None:
            x = x + self.pos_embed(inputs.positions)
        if self.training:  # dropout is the identity in eval mode
            x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, inputs.for_layer(cache.layers[i] if cache is not None else None))
        if cache is not None:
            cache.advance(t)
        hidden = self.final_norm(x)
        logits = self._head.one(self, hidden) if return_logits else None
        return ModelOutput(logits=logits, hidden=hidden, aux_loss=sum_aux(inputs.aux_losses))

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total


def build_decoder(config: DecoderConfig, ctx: object = None) -> DecoderLM:
    return DecoderLM(config)


__all__ = ["DecoderLM", "build_decoder"]
