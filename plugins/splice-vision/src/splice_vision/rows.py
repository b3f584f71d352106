"""Run an encoder's last block at the one position that is read out (class or end-of-text token).

CLIP's image embedding reads the class token after the last block, its text embedding the
end-of-text token. Every other position of the last block is computed and thrown away:
its keys and values are needed (the read-out token attends to them), but its query, its
attention output, its output projection and its MLP are not -- about 10/12 of the block's
matmuls. ``block_rows`` computes the keys and values of every position and the rest for
one row per sequence, giving the same values as ``block(x, inputs)`` at those rows.
"""

from __future__ import annotations

import torch
from splice.interfaces import AttentionInputs
from splice.nn.blocks import PreNormBlock, run_channel_mixer
from splice.nn.fused import FusedLinears
from splice_mha.attention import CrossAttention, MultiHeadAttention
from torch import Tensor

_KV = FusedLinears("k_proj", "v_proj")


def _prunable(block: object, inputs: AttentionInputs) -> bool:
    """A pre-norm block with plain self-attention (no RoPE, QK-norm, cache, cross-attention)."""
    mixer = getattr(block, "mixer", None)
    return (
        type(block) is PreNormBlock
        and block.cross is None
        and isinstance(mixer, MultiHeadAttention)
        and not isinstance(mixer, CrossAttention)
        and mixer.rotary is None
        and mixer.q_norm is None
        and inputs.cache is None
    )


def _row_mask(inputs: AttentionInputs, index: Tensor, s: int) -> Tensor | None:
    """``(B, 1, 1, S)`` keys each read-out row may attend to, or None for all of them."""
    if inputs.attn_mask is not None:  # (B, 1, T, S): that row of the full mask
        rows = torch.arange(index.shape[0], device=index.device)
        return inputs.attn_mask[rows, :, index].unsqueeze(2)
    if inputs.is_causal and not bool((index == s - 1).all()):
        return (torch.arange(s, device=index.device) <= index[:, None])[:, None, None, :]
    return None  # bidirectional, or every row is the last one (sees every key)


def block_rows(block: torch.nn.Module, x: Tensor, inputs: AttentionInputs, index: Tensor) -> Tensor:
    """``block(x, inputs)[b, index[b]]`` for every ``b``: ``x (B, T, D), index (B,) -> (B, D)``.

    Other blocks (another token mixer, RoPE, cross-attention, a cache) run whole and
    the rows are picked from their output.
    """
    b = x.shape[0]
    rows = torch.arange(b, device=x.device)
    if not _prunable(block, inputs):
        return block(x, inputs)[rows, index]  # type: ignore[no-any-return]
    assert isinstance(block, PreNormBlock) and isinstance(block.mixer, MultiHeadAttention)
    mix = block.mixer
    h = block.norm1(x)  # (B, T, D): every position's keys and values are read
    kv = _KV.joint(mix, h)
    if kv is None:  # an adapter or hook on k/v: call the modules
        k, v = mix.k_proj(h), mix.v_proj(h)
    else:
        k, v = kv.split_with_sizes([mix.k_proj.out_features, mix.v_proj.out_features], dim=-1)
    x_r = x[rows, index].unsqueeze(1)  # (B, 1, D)
    q = mix.split_heads(mix.q_proj(h[rows, index].unsqueeze(1)), mix.n_heads)  # (B, H, 1, d)
    k, v = mix.split_heads(k, mix.n_kv_heads), mix.split_heads(v, mix.n_kv_heads)  # (B, H_kv, T, d)
    attended = mix.attend(q, k, v, _row_mask(inputs, index, x.shape[1]), False)  # (B, 1, H d)
    x_r = x_r + block.residual_dropout(mix.o_proj(attended))
    y = x_r + block.residual_dropout(run_channel_mixer(block.ffn, block.norm2(x_r), inputs))
    return y.squeeze(1)


__all__ = ["block_rows"]
