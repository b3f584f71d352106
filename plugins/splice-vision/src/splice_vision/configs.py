"""Configs of splice-vision's components (torch-free, so loading the plugin stays light).

Kinds: ``encoder`` (``vit``), ``connector`` (``linear_projector``, ``mlp_projector``,
``qformer``), ``model`` (``clip``, ``llava``, ``flamingo``, ``native_vlm``), ``task``
(``shapes``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from splice.config import AdapterField, ComponentConfig, ConnectorField, EncoderField, ModelField

Activation = Literal["gelu", "gelu_tanh", "quick_gelu", "relu", "silu"]


def _encoder_block(
    *, n_heads: int, hidden: int, activation: str, eps: float, bias: bool = True
) -> dict[str, Any]:
    """A pre-norm transformer block of the core (attention from splice-mha), as a dict."""
    return {
        "type": "pre_norm",
        "token_mixer": {"type": "mha", "n_heads": n_heads, "bias": bias},
        "channel_mixer": {"type": "mlp", "hidden_dim": hidden, "activation": activation},
        "norm": {"type": "layernorm", "eps": eps},
    }


class _Tower:
    """``block_config`` of a tower config (fields ``n_heads``, ``d_model``, ``mlp_hidden``,
    ``activation``, ``norm_eps``): the core block every layer is built from."""

    def block_config(self: Any) -> dict[str, Any]:
        return _encoder_block(
            n_heads=self.n_heads,
            hidden=self.mlp_hidden or 4 * self.d_model,
            activation=self.activation,
            eps=self.norm_eps,
        )


# --------------------------------------------------------------------------- encoders
class ViTConfig(_Tower, ComponentConfig):
    """A Vision Transformer (Dosovitskiy et al., 2020).

    ``image (B, C, H, W) -> conv patch embedding (kernel = stride = patch_size)
    -> [class token] + positions -> [pre-norm] -> n_layers x pre-norm block -> final norm``,
    giving ``(B, 1 + N, D)`` features, ``N = (H / patch) * (W / patch)``.

    Attributes:
        positions: ``learned`` (one vector per grid cell, interpolated bicubically for
            another image size) or ``sincos`` (fixed 2-D sine-cosine, recomputed per size).
        pre_norm: a LayerNorm before the blocks (CLIP's ``ln_pre``).
        conv_bias: bias on the patch projection (ViT: yes; CLIP: no).
        pool: what ``pooled`` returns: the class token or the mean of the patch tokens.
    """

    type: Literal["vit"] = "vit"
    image_size: PositiveInt = 32
    patch_size: PositiveInt = 4
    in_channels: PositiveInt = 3
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4
    mlp_hidden: PositiveInt | None = None
    activation: Activation = "gelu"
    norm_eps: PositiveFloat = 1e-6
    positions: Literal["learned", "sincos"] = "learned"
    class_token: bool = True
    pre_norm: bool = False
    conv_bias: bool = True
    pool: Literal["cls", "mean"] = "cls"

    @model_validator(mode="after")
    def _check(self) -> ViTConfig:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} does not divide d_model={self.d_model}")
        if self.pool == "cls" and not self.class_token:
            raise ValueError("pool='cls' needs class_token=True; use pool='mean' without one")
        return self

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class TextEncoderConfig(_Tower, ComponentConfig):
    """CLIP's text tower: a causal transformer over tokens with learned positions.

    The embedding of a text is the final-normed hidden state at its end-of-text token:
    the first ``eos_token_id`` in the row, or (``eos_token_id=None``, OpenAI CLIP's rule)
    the position of the largest token id.
    """

    type: Literal["clip_text"] = "clip_text"
    vocab_size: PositiveInt = 64
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4
    max_len: PositiveInt = 32
    mlp_hidden: PositiveInt | None = None
    activation: Activation = "gelu"
    norm_eps: PositiveFloat = 1e-5
    eos_token_id: NonNegativeInt | None = None


# --------------------------------------------------------------------------- CLIP
class CLIPConfig(ComponentConfig):
    """A dual encoder trained contrastively (Radford et al., 2021; SigLIP: Zhai et al., 2023).

    Attributes:
        embed_dim: width of the shared image-text space (both projections, no bias).
        loss: ``infonce`` (symmetric cross-entropy over the batch's similarity matrix) or
            ``siglip`` (a sigmoid loss on every image-text pair, with a learned bias).
        init_temperature: initial ``T`` (logit scale ``1/T`` is learned in log space).
        max_logit_scale: the learned scale is clamped to this (CLIP: 100).
        init_logit_scale / init_logit_bias: SigLIP's starting ``log t`` and ``b``.
    """

    type: Literal["clip"] = "clip"
    vision: ViTConfig = Field(default_factory=lambda: ViTConfig(pre_norm=True, conv_bias=False))
    text: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    embed_dim: PositiveInt = 64
    loss: Literal["infonce", "siglip"] = "infonce"
    init_temperature: PositiveFloat = 0.07
    max_logit_scale: PositiveFloat = 100.0
    init_logit_scale: float = 2.302585  # log 10
    init_logit_bias: float = -10.0


# --------------------------------------------------------------------------- connectors
class LinearProjectorConfig(ComponentConfig):
    """LLaVA v1: one linear map from encoder width to the LM's width."""

    type: Literal["linear_projector"] = "linear_projector"


class MLPProjectorConfig(ComponentConfig):
    """LLaVA-1.5: ``Linear -> GELU -> Linear`` from encoder width to the LM's width."""

    type: Literal["mlp_projector"] = "mlp_projector"
    hidden_dim: PositiveInt | None = None


class QFormerConfig(ComponentConfig):
    """BLIP-2's Q-Former: ``n_queries`` learned queries cross-attend to the image features.

    Each layer: self-attention among the queries, cross-attention to the features, MLP
    (core pre-norm blocks with a ``cross_attention`` sub-layer); a final linear map to the
    LM width. Always gives ``n_queries`` visual tokens, whatever the image's patch count.
    """

    type: Literal["qformer"] = "qformer"
    n_queries: PositiveInt = 8
    d_model: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 4

    def block_config(self) -> dict[str, Any]:
        block = _encoder_block(
            n_heads=self.n_heads, hidden=4 * self.d_model, activation="gelu", eps=1e-6
        )
        block["cross_attention"] = {"type": "cross_attention", "n_heads": self.n_heads}
        return block


# --------------------------------------------------------------------------- VLMs
Trainable = Literal["all", "connector", "connector+lm", "cross_attention", "lm"]


class LlavaConfig(ComponentConfig):
    """Encoder -> connector -> decoder LM, image tokens spliced in at placeholders.

    Attributes:
        encoder: the vision encoder (``vit``).
        connector: ``linear_projector``, ``mlp_projector`` or ``qformer``.
        lm: the language model (``decoder``); its vocabulary holds ``image_token_id``.
        image_token_id: the placeholder id; a prompt holds ``tokens_per_image`` of them
            per image (``expand_image_tokens`` writes them).
        patch_tokens_only: drop the class token from the encoder output (LLaVA does).
        trainable: freezing policy: ``connector`` (LLaVA stage 1), ``connector+lm``
            (stage 2), ``lm`` or ``all``.
        lm_adapter: an adapter applied to the LM after the policy (e.g.
            ``{"type": "lora", "r": 8}`` with splice-lora installed): the LM's base weights
            are frozen and only the adapter learns there (with ``connector+lm``: LoRA
            instruction tuning, connector fully trained).
    """

    type: Literal["llava"] = "llava"
    encoder: EncoderField  # type: ignore[valid-type]
    connector: ConnectorField  # type: ignore[valid-type]
    lm: ModelField  # type: ignore[valid-type]
    image_token_id: NonNegativeInt
    patch_tokens_only: bool = True
    trainable: Trainable = "connector+lm"
    lm_adapter: AdapterField | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _check(self) -> LlavaConfig:
        _check_image_token(self.image_token_id, self.lm)
        if self.trainable == "cross_attention":
            raise ValueError("trainable='cross_attention' is for flamingo models")
        return self


class FlamingoConfig(ComponentConfig):
    """A decoder LM with gated cross-attention blocks over image features (Flamingo).

    A ``GatedCrossAttentionBlock`` (tanh-gated cross-attention + tanh-gated MLP, gates at
    0) runs before every ``cross_every``-th LM layer, so at initialisation the model is
    the LM exactly. ``trainable='cross_attention'`` freezes the LM and the encoder.
    """

    type: Literal["flamingo"] = "flamingo"
    encoder: EncoderField  # type: ignore[valid-type]
    lm: ModelField  # type: ignore[valid-type]
    cross_every: PositiveInt = 1
    n_heads: PositiveInt = 4
    trainable: Trainable = "cross_attention"

    @model_validator(mode="after")
    def _check(self) -> FlamingoConfig:
        if self.trainable in ("connector", "connector+lm"):
            raise ValueError(
                f"trainable={self.trainable!r}: a flamingo model has no connector; "
                "expected 'cross_attention', 'lm' or 'all'"
            )
        return self


class NativeVLMConfig(ComponentConfig):
    """Early fusion: image patches are linearly embedded as tokens of the LM's own sequence.

    No separate vision encoder: a conv patch embedding (plus a learned 2-D position per
    patch) writes one token per patch at the image placeholders, and the one decoder is
    trained on text and images together from the start.
    """

    type: Literal["native_vlm"] = "native_vlm"
    lm: ModelField  # type: ignore[valid-type]
    image_token_id: NonNegativeInt
    image_size: PositiveInt = 32
    patch_size: PositiveInt = 8
    in_channels: PositiveInt = 3

    @model_validator(mode="after")
    def _check(self) -> NativeVLMConfig:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}"
            )
        _check_image_token(self.image_token_id, self.lm)
        return self

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _check_image_token(image_token_id: int, lm: Any) -> None:
    vocab = getattr(lm, "vocab_size", None)
    if isinstance(vocab, int) and image_token_id >= vocab:
        raise ValueError(
            f"image_token_id={image_token_id} is outside the LM's vocabulary (vocab_size={vocab})"
        )


# --------------------------------------------------------------------------- data
class ShapesTaskConfig(ComponentConfig):
    """Synthetic scenes of coloured shapes, generated in code (see ``splice_vision.data``).

    Attributes:
        image_size: side of the square RGB images.
        max_count: scenes hold 1..max_count copies of one shape.
        noise: std of the Gaussian pixel noise added to every image.
    """

    type: Literal["shapes"] = "shapes"
    image_size: PositiveInt = 32
    max_count: int = Field(default=3, ge=1, le=3)
    noise: float = Field(default=0.05, ge=0.0)


__all__ = [
    "CLIPConfig",
    "FlamingoConfig",
    "LinearProjectorConfig",
    "LlavaConfig",
    "MLPProjectorConfig",
    "NativeVLMConfig",
    "QFormerConfig",
    "ShapesTaskConfig",
    "TextEncoderConfig",
    "ViTConfig",
]
