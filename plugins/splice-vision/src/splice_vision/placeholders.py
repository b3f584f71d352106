"""Image placeholders in a token sequence: expansion, splicing of visual tokens, loss masking.

A prompt marks each image with one placeholder id; ``expand_image_tokens`` repeats it
``tokens_per_image`` times (what LLaVA's processor does), so the text positions after an
image already account for its tokens. The model then writes the visual tokens over the
placeholders' embeddings (``splice_image_tokens``): images fill the placeholders in
reading order, row by row. Placeholders are ordinary positions for attention masks and
positions, and never targets of the loss (``mask_image_labels``).
"""

from __future__ import annotations

from torch import Tensor

IGNORE_INDEX = -100


def expand_image_tokens(ids: list[int], image_token_id: int, tokens_per_image: int) -> list[int]:
    """Each placeholder in ``ids`` becomes ``tokens_per_image`` placeholders."""
    out: list[int] = []
    for i in ids:
        out.extend([i] * tokens_per_image if i == image_token_id else [i])
    return out


def splice_image_tokens(
    embeds: Tensor, input_ids: Tensor, image_tokens: Tensor, image_token_id: int
) -> Tensor:
    """Write visual tokens over the placeholder positions of ``embeds``.

    Args:
        embeds: ``(B, T, D)`` token embeddings of ``input_ids``.
        input_ids: ``(B, T)`` with ``tokens_per_image`` placeholders per image.
        image_tokens: ``(n_images, N', D)`` connector output, images in reading order.

    Returns:
        ``(B, T, D)``, a new tensor (gradients flow to both inputs).

    Raises:
        ValueError: the visual tokens' width is not the LM's, or the number of placeholders
            is not ``n_images * N'`` (both counts named).
    """
    n_img, per_image, width = image_tokens.shape
    if width != embeds.shape[-1]:
        raise ValueError(
            f"connector output width {width} does not match the language model's width "
            f"{embeds.shape[-1]}"
        )
    slots = input_ids == image_token_id  # (B, T)
    n_slots = int(slots.sum())
    if n_slots != n_img * per_image:
        raise ValueError(
            f"the prompts hold {n_slots} image placeholder tokens ({n_slots / per_image:g} "
            f"images of {per_image} tokens) but {n_img} images were given "
            f"({n_img * per_image} tokens); expand each image placeholder to {per_image} "
            "tokens with expand_image_tokens"
        )
    return embeds.masked_scatter(slots.unsqueeze(-1), image_tokens.to(embeds.dtype))


def mask_image_labels(labels: Tensor, input_ids: Tensor, image_token_id: int) -> Tensor:
    """``labels`` with ``-100`` wherever ``input_ids`` holds an image placeholder."""
    return labels.masked_fill(input_ids == image_token_id, IGNORE_INDEX)


__all__ = ["IGNORE_INDEX", "expand_image_tokens", "mask_image_labels", "splice_image_tokens"]
