"""Per-token log-probabilities of given tokens under a language model.

Shared by every post-training objective (DPO, PPO, GRPO, KL penalties): they all need
``log p(token_t | tokens_<t)`` for the completion tokens of a batch. Only positions
that are scored are projected to the vocabulary, so prompts and padding cost no
``(B, T, V)`` logits tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from splice.objectives.sft import MODEL_INPUT_KEYS, lm_head_of


@dataclass
class TokenLogprobs:
    """Log-probs of the tokens ``input_ids[:, 1:]``, aligned with them.

    Attributes:
        logprobs: ``(B, T-1)`` float32; 0 where ``mask`` is False.
        mask: ``(B, T-1)`` bool, True where a token was scored.
        entropy: ``(B, T-1)`` float32 entropy of the predictive distribution (0 off-mask),
            or None when not asked for.
        aux_loss: the model's auxiliary loss of this forward (MoE balancing), or None.
        hidden: ``(B, T, D)`` the model's final hidden states of this forward (a value head
            on the policy trunk reads them: one forward gives log-probs and values), or None.
    """

    logprobs: Tensor
    mask: Tensor
    entropy: Tensor | None = None
    aux_loss: Tensor | None = None
    hidden: Tensor | None = None

    def sum(self) -> Tensor:
        """``(B,)`` summed log-prob of each row's scored tokens."""
        return self.logprobs.sum(-1)

    def count(self) -> Tensor:
        """``(B,)`` number of scored tokens of each row."""
        return self.mask.sum(-1)


def token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    score_mask: Tensor,
    *,
    with_entropy: bool = False,
    **model_inputs: Any,
) -> TokenLogprobs:
    """Log-probs of ``input_ids[:, 1:]`` where ``score_mask[:, 1:]`` is True.

    Args:
        model: a splice language model (``DecoderLM`` call signature, ``lm_head``).
        input_ids: ``(B, T)`` prompt + completion tokens (any padding).
        score_mask: ``(B, T)`` bool/int, True on the tokens to score (the completion);
            position 0 is never scored (nothing predicts it).
        with_entropy: also return the per-token entropy (PPO/GRPO metrics).
        **model_inputs: forwarded to the model (``attention_mask``, ``positions``, ...).

    Returns:
        ``TokenLogprobs`` with ``(B, T-1)`` tensors; gradients flow when grad is enabled.
    """
    if score_mask.shape != input_ids.shape:
        raise ValueError(
            f"score_mask shape {tuple(score_mask.shape)} != input_ids shape "
            f"{tuple(input_ids.shape)}"
        )
    out = model(input_ids, return_logits=False, **model_inputs)
    keep = score_mask[:, 1:].bool()  # (B, T-1)
    targets = input_ids[:, 1:][keep]  # (N,)
    hidden = out.hidden[:, :-1][keep]  # (N, D)
    logits = lm_head_of(model)(hidden).float()  # (N, V)
    logz = torch.logsumexp(logits, dim=-1)  # (N,)
    picked = logits.gather(-1, targets[:, None]).squeeze(-1) - logz  # (N,)
    logprobs = torch.zeros(keep.shape, dtype=torch.float32, device=logits.device)
    logprobs = logprobs.masked_scatter(keep, picked)
    entropy = None
    if with_entropy:
        p = torch.softmax(logits, dim=-1)
        ent = logz - (p * logits).sum(-1)  # (N,): H = log Z - E_p[logit]
        entropy = torch.zeros_like(logprobs).masked_scatter(keep, ent)
    return TokenLogprobs(
        logprobs=logprobs, mask=keep, entropy=entropy, aux_loss=out.aux_loss, hidden=out.hidden
    )


def batch_model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``batch`` a splice model's forward accepts (``MODEL_INPUT_KEYS``)."""
    return {k: batch[k] for k in MODEL_INPUT_KEYS if batch.get(k) is not None}


__all__ = ["TokenLogprobs", "batch_model_inputs", "token_logprobs"]
