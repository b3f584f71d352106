"""Vision-language models that splice visual tokens into the LM's sequence.

* ``LlavaVLM`` (the connector approach: LLaVA, BLIP-2): a vision encoder, a connector
  and a decoder LM; the connector's tokens replace the image placeholders.
* ``NativeVLM`` (early fusion): no separate encoder; a patch embedding writes one token
  per image patch into the same sequence, and the one decoder learns both.

Both take ``images (n_images, C, H, W)`` (or, from ``splice.generation.generate``, the
same tensor as ``context``; one image per prompt) and otherwise the ``DecoderLM``
signature. With a KV cache, images are read at the prefill only; decode steps carry no
placeholders. ``lm_head`` and ``new_cache`` are the LM's, so SFT and generation apply.
"""

from __future__ import annotations

from typing import Any

import torch
from splice.generation.kv_cache import KVCache
from splice.interfaces import BuildContext, ModelOutput
from splice.nn.modality import token_modality
from torch import Tensor, nn

from splice_vision.configs import LlavaConfig, NativeVLMConfig
from splice_vision.freezing import apply_trainable, count_parameters
from splice_vision.placeholders import splice_image_tokens
from splice_vision.vit import PatchEmbedding


def _build(kind: str, config: Any, ctx: Any = None) -> Any:
    from splice.registry import get_registry

    return get_registry().build(kind, config, ctx)


class _SplicingVLM(nn.Module):
    lm: nn.Module
    image_token_id: int

    @property
    def lm_head(self) -> nn.Module:
        return self.lm.lm_head  # type: ignore[return-value]

    def new_cache(self, max_len: int | None = None) -> KVCache:
        return self.lm.new_cache(max_len)  # type: ignore[no-any-return,operator]

    def image_tokens(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        input_ids: Tensor,
        *,
        images: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cache: KVCache | None = None,
        **lm_kwargs: Any,
    ) -> ModelOutput:
        """``input_ids (B, T)`` with placeholders, ``images (n_images, C, H, W)`` -> LM output.

        ``lm_kwargs`` go to ``DecoderLM.forward`` (``attention_mask``, ``positions``,
        ``return_logits``, ...). ``context`` is accepted as ``images`` (generation).
        """
        if images is None:
            images = context
        slots = input_ids == self.image_token_id
        embeds = self.lm.embed_tokens(input_ids.masked_fill(slots, 0))  # type: ignore[operator]
        if cache is None or cache.length == 0:  # decode steps add no image
            if images is not None:
                embeds = splice_image_tokens(
                    embeds, input_ids, self.image_tokens(images), self.image_token_id
                )
            elif bool(slots.any()):
                raise ValueError(
                    f"the prompts hold {int(slots.sum())} image placeholder tokens but no "
                    "images were given"
                )
        # Layers that route by modality (modality-isolated MoE experts) read which tokens
        # are image tokens; decode steps are text only.
        with token_modality(slots.long() if bool(slots.any()) else None):
            return self.lm(inputs_embeds=embeds, cache=cache, **lm_kwargs)  # type: ignore[no-any-return]

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        trainable, total = count_parameters(self)
        return trainable if trainable_only else total


class LlavaVLM(_SplicingVLM):
    """Encoder -> connector -> LM (see ``LlavaConfig``).

    Pretrained parts may be passed in (``encoder``, ``lm``, ``connector``); otherwise they
    are built from the config through the registry.
    """

    def __init__(
        self,
        config: LlavaConfig,
        *,
        encoder: nn.Module | None = None,
        connector: nn.Module | None = None,
        lm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.image_token_id = config.image_token_id
        self.encoder = encoder if encoder is not None else _build("encoder", config.encoder)
        self.lm = lm if lm is not None else _build("model", config.lm)
        d_enc, d_lm = self.encoder.config.d_model, self.lm.config.d_model
        self.connector = (
            connector
            if connector is not None
            else _build("connector", config.connector, BuildContext(d_model=d_lm, d_context=d_enc))
        )
        d_in, d_out = getattr(self.connector, "d_in", d_enc), getattr(self.connector, "d_out", d_lm)
        if d_in != d_enc:
            raise ValueError(f"connector input width {d_in} does not match the encoder's {d_enc}")
        if d_out != d_lm:
            raise ValueError(
                f"connector output width {d_out} does not match the language model's width {d_lm}"
            )
        apply_trainable(self, config.trainable)
        if config.lm_adapter is not None:  # freezes the LM's base weights, adds the adapter
            _build("adapter", config.lm_adapter).apply(self.lm)

    @property
    def tokens_per_image(self) -> int:
        n = self.encoder.config.n_patches
        if not self.config.patch_tokens_only:
            n += self.encoder.n_prefix
        return int(self.connector.tokens_for(n))

    def image_tokens(self, images: Tensor) -> Tensor:
        """``(n, C, H, W) -> (n, tokens_per_image, D)``."""
        frozen = not any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            feats = self.encoder(images)  # (n, 1 + N, D_enc)
        if self.config.patch_tokens_only:
            feats = feats[:, self.encoder.n_prefix :]
        return self.connector(feats)  # type: ignore[no-any-return]


class NativeVLM(_SplicingVLM):
    """One decoder over text tokens and image-patch tokens (see ``NativeVLMConfig``)."""

    def __init__(self, config: NativeVLMConfig, *, lm: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.image_token_id = config.image_token_id
        self.lm = lm if lm is not None else _build("model", config.lm)
        d = self.lm.config.d_model
        self.patch = PatchEmbedding(config.patch_size, config.in_channels, d, bias=True)
        # A learned vector per patch cell: the LM's own positions only give reading order.
        self.patch_pos = nn.Parameter(torch.randn(config.tokens_per_image, d) * 0.02)

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    def image_tokens(self, images: Tensor) -> Tensor:
        size = self.config.image_size
        if images.dim() == 4 and tuple(images.shape[2:]) != (size, size):
            raise ValueError(
                f"image size {images.shape[2]}x{images.shape[3]} does not match the model's "
                f"image_size {size}x{size}"
            )
        return self.patch(images) + self.patch_pos  # type: ignore[no-any-return]


def build_llava(config: LlavaConfig, ctx: object = None) -> LlavaVLM:
    return LlavaVLM(config)


def build_native(config: NativeVLMConfig, ctx: object = None) -> NativeVLM:
    return NativeVLM(config)


__all__ = ["LlavaVLM", "NativeVLM", "build_llava", "build_native"]
