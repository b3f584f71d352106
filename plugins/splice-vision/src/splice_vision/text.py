"""CLIP's text tower: the core ``DecoderLM`` (causal, learned positions), pooled at end-of-text."""

from __future__ import annotations

import torch
from splice.models.common import attention_inputs
from splice.models.configs import DecoderConfig
from splice.models.decoder import DecoderLM
from torch import Tensor, nn

from splice_vision.configs import TextEncoderConfig
from splice_vision.rows import block_rows


class TextEncoder(nn.Module):
    """``input_ids (B, T) [, attention_mask (B, T)] -> pooled (B, D)``.

    The transformer is a core ``DecoderLM`` (its tied ``lm_head`` adds no parameters);
    the pooled vector is the final-normed hidden state at the end-of-text position (the last
    block and the final norm run at that position only).
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.lm = DecoderLM(
            DecoderConfig.model_validate(
                {
                    "vocab_size": config.vocab_size,
                    "d_model": config.d_model,
                    "n_layers": config.n_layers,
                    "max_seq_len": config.max_len,
                    "block": config.block_config(),
                    "positional": {"type": "learned"},
                    "final_norm": {"type": "layernorm", "eps": config.norm_eps},
                    "tie_embeddings": True,
                }
            )
        )

    def eot_positions(self, input_ids: Tensor) -> Tensor:
        """``(B,)`` index of each row's end-of-text token (first ``eos_token_id``, else argmax id)."""
        eos = self.config.eos_token_id
        if eos is None:
            return input_ids.argmax(dim=-1)
        hits = input_ids == eos
        if not bool(hits.any(dim=-1).all()):
            row = int((~hits.any(dim=-1)).nonzero()[0])
            raise ValueError(f"text row {row} has no end-of-text token (id {eos})")
        return hits.int().argmax(dim=-1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(
                f"text length {input_ids.shape[1]} exceeds the text encoder's max_len "
                f"{self.config.max_len}"
            )
        eot = self.eot_positions(input_ids)  # (B,)
        # Causal attention: no token after the last end-of-text can change any read-out
        # token, so the tower runs on the shortest prefix holding them all (padding skipped).
        keep = int(eot.max()) + 1
        input_ids = input_ids[:, :keep]
        attention_mask = attention_mask[:, :keep] if attention_mask is not None else None
        lm, (b, t) = self.lm, input_ids.shape
        # DecoderLM's forward up to its last block, which runs at the end-of-text token only
        # (splice_vision.rows): the other positions' outputs are never read.
        inputs = attention_inputs(
            batch=b,
            t=t,
            device=input_ids.device,
            causal=True,
            positions=torch.arange(t, device=input_ids.device).expand(b, t),
            attention_mask=attention_mask,
            doc_ids=None,
            cache=None,
        )
        x = lm.embed_tokens(input_ids)  # (B, T, D)
        if lm.pos_embed is not None:
            x = x + lm.pos_embed(inputs.positions)
        if lm.training:
            x = lm.drop(x)
        for block in lm.blocks[:-1]:
            x = block(x, inputs)
        return lm.final_norm(block_rows(lm.blocks[-1], x, inputs, eot))  # type: ignore[no-any-return]


__all__ = ["TextEncoder"]
