"""Flamingo-style cross-attention VLM: gated cross-attention blocks inside a decoder LM.

Before every ``cross_every``-th LM layer sits a ``GatedCrossAttentionBlock``:

    x = x + tanh(a) * cross_attn(norm(x), image features)
    x = x + tanh(b) * mlp(norm(x))

with ``a = b = 0`` at initialisation, so the model computes exactly what the LM computes
(bit for bit: ``x + 0 * y == x``) until training opens the gates. Text tokens attend to
the image features of their own row. In generation the features' K/V are projected once
per prompt and kept in the layer's ``CrossKVCache``; the image is encoded once too.
"""

from __future__ import annotations

from typing import Any

import torch
from splice.generation.kv_cache import KVCache
from splice.interfaces import AttentionInputs, Block, BuildContext, ModelOutput
from torch import Tensor, nn

from splice_vision._build import build, layer_norm
from splice_vision.configs import FlamingoConfig
from splice_vision.freezing import apply_trainable, count_parameters


class GatedCrossAttentionBlock(nn.Module):
    """``x (B, T, D)``, context ``(B, S, D_ctx)`` -> ``(B, T, D)``, identity while gates are 0."""

    def __init__(self, d_model: int, d_context: int, n_heads: int) -> None:
        super().__init__()
        ctx = BuildContext(d_model=d_model, d_context=d_context, causal=False)
        self.norm_attn = layer_norm(d_model, 1e-5)
        self.attn = build("token_mixer", {"type": "cross_attention", "n_heads": n_heads}, ctx)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.norm_ffn = layer_norm(d_model, 1e-5)
        self.ffn = build("channel_mixer", {"type": "mlp"}, ctx)
        self.ffn_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        x = x + torch.tanh(self.attn_gate) * self.attn(self.norm_attn(x), inputs)
        return x + torch.tanh(self.ffn_gate) * self.ffn(self.norm_ffn(x))  # type: ignore[no-any-return]


class FlamingoLayer(Block):
    """An LM block preceded by a gated cross-attention block: ``block(xattn(x), inputs)``."""

    def __init__(self, xattn: GatedCrossAttentionBlock, block: nn.Module) -> None:
        super().__init__()
        self.xattn = xattn
        self.block = block

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        cross = AttentionInputs(
            inputs.positions,
            None,
            False,
            getattr(inputs.cache, "cross", None),  # the context's K/V, once per prompt
            inputs.context,
            inputs.context_mask,
            inputs.aux_losses,
        )
        return self.block(self.xattn(x, cross), inputs)  # type: ignore[no-any-return]


class FlamingoVLM(nn.Module):
    """``forward(input_ids (B, T), images=(B, C, H, W)) -> ModelOutput`` (see ``FlamingoConfig``).

    Pretrained ``encoder`` and ``lm`` may be passed in; the gated blocks are inserted into
    ``lm.blocks`` in place (so load LM weights before wrapping).
    """

    def __init__(
        self,
        config: FlamingoConfig,
        *,
        encoder: nn.Module | None = None,
        lm: nn.Module | None = None,
    ) -> None:
        from splice.registry import get_registry

        super().__init__()
        reg = get_registry()
        self.config = config
        self.encoder = encoder if encoder is not None else reg.build("encoder", config.encoder)
        self.lm = lm if lm is not None else reg.build("model", config.lm)
        d_lm, d_enc = self.lm.config.d_model, self.encoder.config.d_model
        for i in range(0, len(self.lm.blocks), config.cross_every):
            xattn = GatedCrossAttentionBlock(d_lm, d_enc, config.n_heads)
            self.lm.blocks[i] = FlamingoLayer(xattn, self.lm.blocks[i])
        apply_trainable(self, config.trainable)

    @property
    def lm_head(self) -> nn.Module:
        return self.lm.lm_head  # type: ignore[return-value]

    @property
    def tokens_per_image(self) -> int:
        """Tokens an image adds to the LM's sequence: none (it is read by cross-attention)."""
        return 0

    def new_cache(self, max_len: int | None = None) -> KVCache:
        return self.lm.new_cache(max_len)  # type: ignore[no-any-return,operator]

    def encode_images(self, images: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, 1 + N, D_enc)`` features the cross-attention reads."""
        frozen = not any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return self.encoder(images)  # type: ignore[no-any-return]

    def forward(
        self,
        input_ids: Tensor,
        *,
        images: Tensor | None = None,
        context: Tensor | None = None,
        cache: KVCache | None = None,
        **lm_kwargs: Any,
    ) -> ModelOutput:
        """``context`` is accepted as ``images`` (``splice.generation.generate`` passes it)."""
        if images is None:
            images = context
        features = None
        cached = cache is not None and cache.length > 0 and cache.cache_cross
        if not cached:  # decode steps reuse the K/V cached at the prefill
            if images is None:
                raise ValueError("a flamingo model needs images (B, C, H, W); none were given")
            if images.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"{images.shape[0]} images for {input_ids.shape[0]} prompts; "
                    "a flamingo model reads one image per prompt"
                )
            features = self.encode_images(images)
        return self.lm(input_ids, context=features, cache=cache, **lm_kwargs)  # type: ignore[no-any-return]

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        trainable, total = count_parameters(self)
        return trainable if trainable_only else total


def build_flamingo(config: FlamingoConfig, ctx: object = None) -> FlamingoVLM:
    return FlamingoVLM(config)


__all__ = ["FlamingoLayer", "FlamingoVLM", "GatedCrossAttentionBlock", "build_flamingo"]
