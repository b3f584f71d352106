"""Transformer blocks: pre-norm, post-norm and parallel residual layouts.

Each block holds a TokenMixer (``mixer``), an optional cross-attention TokenMixer
(``cross``, encoder-decoder decoders and gated VLMs), a ChannelMixer (``ffn``) and
norms. Sub-layers come from the registry, so any plugin's mixer can sit here.
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from splice.interfaces import AttentionInputs, Block, BuildContext, ChannelMixerOutput
from splice.nn.configs import ParallelBlockConfig, PostNormBlockConfig, PreNormBlockConfig
from splice.nn.dropout import dropout_or_identity


def run_channel_mixer(ffn: nn.Module, x: Tensor, inputs: AttentionInputs) -> Tensor:
    """Call a ChannelMixer and route an auxiliary loss, if it reports one, into ``inputs``."""
    out = ffn(x)
    if isinstance(out, ChannelMixerOutput):
        if out.aux_loss is not None:
            inputs.aux_losses.append(out.aux_loss)
        return out.hidden
    return out  # type: ignore[no-any-return]


class _BlockBase(Block):
    def __init__(
        self,
        config: PreNormBlockConfig | PostNormBlockConfig | ParallelBlockConfig,
        ctx: BuildContext,
    ) -> None:
        from splice.registry import get_registry

        super().__init__()
        reg = get_registry()
        self.mixer = reg.build("token_mixer", config.token_mixer, ctx)
        self.ffn = reg.build("channel_mixer", config.channel_mixer, ctx)
        self.norm1 = reg.build("norm", config.norm, ctx)
        self.norm2 = reg.build("norm", config.norm, ctx)
        self.cross: nn.Module | None = None
        self.norm_cross: nn.Module | None = None
        if config.cross_attention is not None:
            cross_ctx = replace(ctx, causal=False)
            self.cross = reg.build("token_mixer", config.cross_attention, cross_ctx)
            self.norm_cross = reg.build("norm", config.norm, ctx)
        self.drop = dropout_or_identity(config.dropout)

    def residual_dropout(self, h: Tensor) -> Tensor:
        """The block's dropout on a branch before it joins the residual stream (public:
        code that runs part of a block itself, as splice-vision's read-out rows do)."""
        # Dropout is the identity in eval mode: skip the module call (it shows at decode).
        return self.drop(h) if self.training else h

    def _cross_inputs(self, inputs: AttentionInputs) -> AttentionInputs:
        # Cross-attention keys come from the context, never from this layer's self-attention
        # cache: it gets the layer's CrossKVCache (context K/V projected once per prompt).
        return AttentionInputs(
            inputs.positions,
            None,
            False,
            getattr(inputs.cache, "cross", None),
            inputs.context,
            inputs.context_mask,
            inputs.aux_losses,
        )


class PreNormBlock(_BlockBase):
    """``h = x + mix(norm1(x))``; ``[h = h + cross(norm_c(h))]``; ``y = h + ffn(norm2(h))``."""

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        x = x + self.residual_dropout(self.mixer(self.norm1(x), inputs))
        if self.cross is not None and self.norm_cross is not None:
            x = x + self.residual_dropout(
                self.cross(self.norm_cross(x), self._cross_inputs(inputs))
            )
        y: Tensor = x + self.residual_dropout(run_channel_mixer(self.ffn, self.norm2(x), inputs))
        return y


class PostNormBlock(_BlockBase):
    """``h = norm1(x + mix(x))``; ``[h = norm_c(h + cross(h))]``; ``y = norm2(h + ffn(h))``."""

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        x = self.norm1(x + self.residual_dropout(self.mixer(x, inputs)))
        if self.cross is not None and self.norm_cross is not None:
            x = self.norm_cross(
                x + self.residual_dropout(self.cross(x, self._cross_inputs(inputs)))
            )
        y: Tensor = self.norm2(x + self.residual_dropout(run_channel_mixer(self.ffn, x, inputs)))
        return y


class ParallelBlock(_BlockBase):
    """``y = x + mix(norm1(x)) + ffn(norm1(x))``; ``norm2`` is unused (one shared norm)."""

    def __init__(self, config: ParallelBlockConfig, ctx: BuildContext) -> None:
        super().__init__(config, ctx)
        del self.norm2  # one norm feeds both branches

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        h = self.norm1(x)
        y: Tensor = (
            x
            + self.residual_dropout(self.mixer(h, inputs))
            + self.residual_dropout(run_channel_mixer(self.ffn, h, inputs))
        )
        if self.cross is not None and self.norm_cross is not None:
            y = y + self.residual_dropout(
                self.cross(self.norm_cross(y), self._cross_inputs(inputs))
            )
        return y


def build_pre_norm(config: PreNormBlockConfig, ctx: BuildContext) -> Block:
    return PreNormBlock(config, ctx)


def build_post_norm(config: PostNormBlockConfig, ctx: BuildContext) -> Block:
    return PostNormBlock(config, ctx)


def build_parallel(config: ParallelBlockConfig, ctx: BuildContext) -> Block:
    return ParallelBlock(config, ctx)
