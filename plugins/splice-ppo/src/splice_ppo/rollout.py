"""Turn generated completions into the padded sequences PPO scores and trains on.

Each row is ``left-padded prompt (P) + completion (L)``, so every completion starts at
column ``P`` and the model's outputs at columns ``P-1 .. P+L-2`` predict its tokens: a
slice ``[:, P-1:]`` of the ``(N, P+L-1)`` log-prob grid is the ``(N, L)`` per-token layout
that GAE and the losses use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from splice.generation.sampling import GenerationOutput, left_pad
from torch import Tensor


@dataclass
class Sequences:
    """Prompt + completion rows, one per generated sample.

    Attributes:
        input_ids: ``(N, P + L)`` long.
        attention_mask: ``(N, P + L)`` long, 1 on real prompt tokens and generated tokens.
        positions: ``(N, P + L)`` long, counting real tokens only (as during generation).
        score_mask: ``(N, P + L)`` bool, True on generated tokens (what ``token_logprobs`` scores).
        completion_mask: ``(N, L)`` bool, the generated tokens in the per-token layout.
        prompt_width: ``P``.
    """

    input_ids: Tensor
    attention_mask: Tensor
    positions: Tensor
    score_mask: Tensor
    completion_mask: Tensor
    prompt_width: int

    def model_inputs(self) -> dict[str, Any]:
        return {"attention_mask": self.attention_mask, "positions": self.positions}


def build_sequences(prompts: list[list[int]], out: GenerationOutput, *, pad_id: int) -> Sequences:
    """Join each generated row to its (left-padded) prompt.

    Args:
        prompts: the ``B`` prompts given to ``generate``.
        out: ``generate``'s output, ``N = B * n`` rows (``out.prompt_index`` maps row -> prompt).
        pad_id: padding id (never attended, never scored).
    """
    device = out.tokens.device
    ids, pmask = left_pad(prompts, pad_id, device)  # (B, P)
    ids, pmask = ids[out.prompt_index], pmask[out.prompt_index]  # (N, P)
    cmask = out.mask.bool()  # (N, L)
    input_ids = torch.cat([ids, out.tokens], dim=1)  # (N, P + L)
    attention_mask = torch.cat([pmask, cmask.long()], dim=1)
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    score_mask = torch.cat([torch.zeros_like(pmask, dtype=torch.bool), cmask], dim=1)
    return Sequences(input_ids, attention_mask, positions, score_mask, cmask, ids.shape[1])


__all__ = ["Sequences", "build_sequences"]
