"""Supervised fine-tuning: next-token cross-entropy on completion tokens only.

The batch comes from ``splice.data.collate``: ``labels`` are aligned with
``input_ids`` and ``-100`` where no loss is wanted, so position ``t``'s output is
scored against ``labels[t + 1]``. Only positions with a target are projected to the
vocabulary (prompt and padding positions never produce logits), in chunks when
``chunk_size`` is set. The loss is the mean over target tokens, plus
``aux_loss_weight * aux_loss`` when the model reports one (MoE balancing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from torch import Tensor, nn

from splice.interfaces import LossOutput
from splice.objectives.chunked_ce import IGNORE_INDEX, linear_cross_entropy
from splice.objectives.configs import SFTConfig

#: Batch keys forwarded to the model when present (decoder, packing, encoder-decoder, vision).
MODEL_INPUT_KEYS = (
    "attention_mask",
    "positions",
    "doc_ids",
    "branch_ids",
    "encoder_input_ids",
    "encoder_attention_mask",
    "context",
    "context_mask",
    "images",
)


def shifted_targets(labels: Tensor, doc_ids: Tensor | None = None) -> Tensor:
    """``(B, T)`` aligned labels -> ``(B, T-1)`` targets of positions ``0..T-2``.

    With ``doc_ids`` (packing), a target in a different document from its input
    position is dropped, so a document's last token never predicts the next one's first.
    """
    targets = labels[:, 1:]
    if doc_ids is not None:
        crosses = doc_ids[:, 1:] != doc_ids[:, :-1]
        targets = targets.masked_fill(crosses, IGNORE_INDEX)
    return targets


def lm_head_of(model: nn.Module) -> nn.Module:
    """The vocabulary projection of ``model``, looking through DDP-style ``.module`` wrappers."""
    m = model
    while not hasattr(m, "lm_head") and hasattr(m, "module"):
        m = cast(nn.Module, m.module)  # DDP/FSDP-style wrappers keep the model in .module
    head = getattr(m, "lm_head", None)
    if not isinstance(head, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `lm_head` module; SFT needs one")
    return head


class SFTObjective:
    """``loss(model, batch) -> LossOutput``: token-weighted mean CE over completion tokens.

    Metrics: ``loss`` (what is optimised: CE + weighted aux loss), ``ce_loss`` (mean CE per
    target token; ``exp(ce_loss)`` is the perplexity), ``tokens`` (number of target tokens),
    and ``aux_loss`` when the model reports one. ``LossOutput.n_tokens`` is the token count,
    for token-weighted averaging across micro-batches or ranks.
    """

    def __init__(self, config: SFTConfig | None = None) -> None:
        self.config = config or SFTConfig()

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput:
        if "input_ids" not in batch or "labels" not in batch:
            raise ValueError(
                f"an SFT batch needs 'input_ids' and 'labels', got keys {sorted(batch)}"
            )
        kwargs = {k: batch[k] for k in MODEL_INPUT_KEYS if batch.get(k) is not None}
        out = model(batch["input_ids"], return_logits=False, **kwargs)
        targets = shifted_targets(batch["labels"], batch.get("doc_ids"))  # (B, T-1)
        keep = targets != IGNORE_INDEX
        hidden = out.hidden[:, :-1][keep]  # (N, D): only positions that have a target
        n_tokens = int(keep.sum())
        if n_tokens == 0:
            # Nothing to learn (every completion truncated away): a zero that still
            # touches the graph, so backward and DDP see every used parameter.
            ce = out.hidden.sum() * 0.0
        else:
            ce_sum = linear_cross_entropy(
                hidden, lm_head_of(model), targets[keep], chunk_size=self.config.chunk_size
            )
            ce = ce_sum / n_tokens
        loss = ce
        metrics = {"ce_loss": float(ce.detach()), "tokens": float(n_tokens)}
        if out.aux_loss is not None:
            loss = loss + self.config.aux_loss_weight * out.aux_loss
            metrics["aux_loss"] = float(out.aux_loss.detach())
        metrics["loss"] = float(loss.detach())
        return LossOutput(loss=loss, metrics=metrics, n_tokens=n_tokens)


def build_sft(config: SFTConfig, ctx: object = None) -> SFTObjective:
    return SFTObjective(config)


__all__ = [
    "MODEL_INPUT_KEYS",
    "SFTConfig",
    "SFTObjective",
    "build_sft",
    "lm_head_of",
    "shifted_targets",
]
