"""Contrastive image-text losses: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def infonce_loss(image: Tensor, text: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric cross-entropy over the similarity matrix (CLIP).

    Args:
        image, text: ``(B, E)`` L2-normalised embeddings; row ``i`` of each is a pair.
        scale: the (clamped) logit scale ``1 / T``.

    Returns:
        ``(loss, logits_per_image (B, B))``: the mean of image->text and text->image
        cross-entropies with the diagonal as targets.
    """
    logits = scale * image @ text.t()  # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    return loss, logits


def siglip_loss(image: Tensor, text: Tensor, scale: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """SigLIP: every pair is a binary problem, ``-log sigmoid(z_ij (t x_i.y_j + b))``.

    ``z_ij = 1`` on the diagonal, ``-1`` elsewhere; summed over pairs, divided by ``B``
    (as in the paper), so no softmax couples the batch.
    """
    logits = scale * image @ text.t() + bias  # (B, B)
    signs = 2 * torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype) - 1
    loss = -F.logsigmoid(signs * logits).sum() / logits.shape[0]
    return loss, logits


__all__ = ["infonce_loss", "siglip_loss"]
