"""Pieces shared by model families: positions, masks, attention inputs, init."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from splice.generation.kv_cache import KVCache
from splice.interfaces import AttentionInputs, BuildContext, PooledAuxLoss, aux_losses_total
from splice.nn.masks import build_attention_mask
from splice.nn.positional import AdditivePositional, NoPositional, RotaryEmbedding


def head_dim_of(block: Any, d_model: int) -> int | None:
    """Head size of a block's token mixer, if it declares one (needed to size RoPE)."""
    fn = getattr(block.token_mixer, "head_dim_for", None)
    return int(fn(d_model)) if fn is not None else None


def build_positions(
    positional_cfg: Any, ctx: BuildContext, block: Any
) -> tuple[RotaryEmbedding | None, AdditivePositional | None]:
    """Build the model's positional encoding as ``(rotary, additive)``; at most one is set.

    RoPE is handed to attention (``BuildContext.rotary``) and sized by the block's head
    dim; an additive encoding is added to the token embeddings; ``none`` gives neither.
    """
    from splice.registry import get_registry

    head_dim = head_dim_of(block, ctx.d_model)
    ctx.extra["head_dim"] = head_dim if head_dim is not None else ctx.d_model
    pos = get_registry().build("positional", positional_cfg, ctx)
    if isinstance(pos, RotaryEmbedding):
        return pos, None
    if isinstance(pos, AdditivePositional) and not isinstance(pos, NoPositional):
        return None, pos
    return None, None


def default_positions(
    batch: int, t: int, *, past: int, attention_mask: Tensor | None, device: torch.device
) -> Tensor:
    """``(B, T)`` positions: ``past..past+T-1``, or counted over real tokens when left-padded."""
    if attention_mask is not None:
        pos = attention_mask.long().cumsum(-1) - 1  # (B, S)
        return pos.clamp(min=0)[:, -t:]
    return torch.arange(past, past + t, device=device).expand(batch, t)


def attention_inputs(
    *,
    batch: int,
    t: int,
    device: torch.device,
    causal: bool,
    positions: Tensor | None,
    attention_mask: Tensor | None,
    doc_ids: Tensor | None,
    cache: KVCache | None,
    branch_ids: Tensor | None = None,
    context: Tensor | None = None,
    context_mask: Tensor | None = None,
) -> AttentionInputs:
    """Build the ``AttentionInputs`` of one forward pass, choosing the cheapest mask.

    Args:
        attention_mask: ``(B, S)`` bool/int key padding over cache + new tokens (1 = real).
        doc_ids: ``(B, T)`` document index per token for packed sequences.
        branch_ids: ``(B, T)`` branch per token for prefix sharing (0 = the shared prefix;
            see ``splice.nn.masks.build_attention_mask``).
        context_mask: ``(B, S_ctx)`` key padding of the cross-attention context.
    """
    past = cache.length if cache is not None else 0
    s = past + t
    if attention_mask is not None and attention_mask.shape[-1] != s:
        raise ValueError(
            f"attention_mask has length {attention_mask.shape[-1]}, expected cache+input length {s}"
        )
    if positions is None:
        positions = default_positions(
            batch, t, past=past, attention_mask=attention_mask, device=device
        )
    mask: Tensor | None = None
    is_causal = causal
    packed = doc_ids is not None or branch_ids is not None
    if attention_mask is not None or packed or (past > 0 and t > 1 and causal):
        if packed and past > 0:
            raise ValueError("doc_ids / branch_ids (packing) cannot be combined with a KV cache")
        mask = build_attention_mask(
            t=t,
            s=s,
            causal=causal,
            key_padding=attention_mask.bool() if attention_mask is not None else None,
            doc_ids=doc_ids,
            branch_ids=branch_ids,
            device=device,
        )
        is_causal = False
    elif past > 0:  # one new token sees every cached key
        is_causal = False
    ctx_mask = None
    if context_mask is not None:
        ctx_mask = context_mask.bool()[:, None, None, :].expand(batch, 1, t, context_mask.shape[-1])
    return AttentionInputs(
        positions=positions,
        attn_mask=mask,
        is_causal=is_causal,
        cache=None,
        context=context,
        context_mask=ctx_mask,
    )


def init_weights(module: nn.Module, std: float) -> None:
    """Normal(0, std) for linear and embedding weights, zeros for biases (GPT-2 init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)


def sum_aux(losses: list[Tensor | PooledAuxLoss]) -> Tensor | None:
    """The model's aux loss: plain terms summed, pooled terms pooled over layers."""
    return aux_losses_total(losses)
