"""What a vision-language model costs: FLOPs per answer (counted by
``torch.utils.flop_counter.FlopCounterMode`` over a real forward, not estimated) and the
language model that remains when the images are taken away (to score its text ability)."""

from __future__ import annotations

import copy

import torch
from splice_vision.flamingo import FlamingoLayer
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def forward_flops(model: nn.Module, input_ids: Tensor, images: Tensor) -> int:
    """FLOPs of one forward of ``model`` on ``input_ids (B, T)`` with ``images (B, 3, H, W)``:
    every matmul, convolution and attention the forward runs (vision encoder, connector or
    cross-attention, LM, LM head), as ``FlopCounterMode`` counts them (a multiply-add is 2)."""
    # A frozen copy: FlopCounterMode's module tracker hooks the gradient of any input that
    # requires one, and a learned query (Q-Former) passed on under no_grad has none to hook.
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        frozen(input_ids, images=images)
    return int(counter.get_total_flops())


def text_only_lm(model: nn.Module) -> nn.Module:
    """The LM a VLM runs on text without images: its ``lm`` with any gated cross-attention
    blocks removed (Flamingo wraps the LM's blocks; with no image those blocks are skipped,
    so what is left is the frozen LM). A copy: ``model`` is not changed."""
    lm = copy.deepcopy(model.lm)  # type: ignore[arg-type]
    for i, block in enumerate(lm.blocks):
        if isinstance(block, FlamingoLayer):
            lm.blocks[i] = block.block
    return lm


__all__ = ["forward_flops", "text_only_lm"]
