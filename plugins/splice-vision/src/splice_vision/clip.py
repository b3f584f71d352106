"""CLIP: a ViT and a text transformer projected into one space, trained contrastively.

Also the two ways CLIP is used without training: zero-shot classification (the class
whose prompt embedding is nearest to the image's) and image<->text retrieval recall@k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splice_vision.configs import CLIPConfig
from splice_vision.losses import infonce_loss, siglip_loss
from splice_vision.text import TextEncoder
from splice_vision.vit import ViT


@dataclass
class CLIPOutput:
    """``loss`` (scalar), ``logits_per_image (B, B)``, ``image_embeds``/``text_embeds (B, E)``."""

    loss: Tensor
    logits_per_image: Tensor
    image_embeds: Tensor
    text_embeds: Tensor


class CLIP(nn.Module):
    """``forward(images (B, C, H, W), input_ids (B, T)) -> CLIPOutput`` (see ``CLIPConfig``)."""

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = ViT(config.vision)
        self.text = TextEncoder(config.text)
        self.visual_projection = nn.Linear(config.vision.d_model, config.embed_dim, bias=False)
        self.text_projection = nn.Linear(config.text.d_model, config.embed_dim, bias=False)
        nn.init.normal_(self.visual_projection.weight, std=config.vision.d_model**-0.5)
        nn.init.normal_(self.text_projection.weight, std=config.text.d_model**-0.5)
        if config.loss == "infonce":
            init = math.log(1 / config.init_temperature)
            self.logit_bias = None
        else:
            init = config.init_logit_scale
            self.logit_bias = nn.Parameter(torch.tensor(config.init_logit_bias))
        self.logit_scale = nn.Parameter(torch.tensor(float(init)))

    def scale(self) -> Tensor:
        """The logit scale ``exp(s)``, clamped at ``max_logit_scale`` (CLIP: 100)."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def encode_image(self, images: Tensor, *, normalize: bool = True) -> Tensor:
        """``(B, C, H, W) -> (B, E)`` projected (and by default L2-normalised) embeddings."""
        pooled = self.vision.encode(images)  # (B, D_v)
        emb = self.visual_projection(pooled)
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_text(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, normalize: bool = True
    ) -> Tensor:
        """``(B, T) -> (B, E)`` projected (and by default L2-normalised) embeddings."""
        emb = self.text_projection(self.text(input_ids, attention_mask))
        return F.normalize(emb, dim=-1) if normalize else emb

    def forward(
        self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> CLIPOutput:
        if images.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"{images.shape[0]} images but {input_ids.shape[0]} texts; CLIP needs pairs"
            )
        img = self.encode_image(images)
        txt = self.encode_text(input_ids, attention_mask)
        if self.logit_bias is None:
            loss, logits = infonce_loss(img, txt, self.scale())
        else:
            loss, logits = siglip_loss(img, txt, self.scale(), self.logit_bias)
        return CLIPOutput(loss, logits, img, txt)


@torch.no_grad()
def zero_shot_classify(
    model: CLIP, images: Tensor, class_ids: Tensor, class_mask: Tensor | None = None
) -> Tensor:
    """``(B,)`` index of the class prompt (``class_ids (K, T)``) nearest to each image."""
    img = model.encode_image(images)  # (B, E)
    txt = model.encode_text(class_ids, class_mask)  # (K, E)
    return (img @ txt.t()).argmax(dim=-1)


def recall_at_k(
    image: Tensor, text: Tensor, *, ks: tuple[int, ...] = (1, 5), match: Tensor | None = None
) -> dict[str, float]:
    """Image->text and text->image retrieval recall@k over ``N`` pairs.

    Args:
        image, text: ``(N, E)`` normalised embeddings, row ``i`` of each a pair.
        match: ``(N, N)`` bool, True where text ``j`` is a right answer for image ``i``
            (defaults to the diagonal; pass "same caption" when captions repeat).

    Returns:
        ``{"i2t_r1": ..., "t2i_r1": ..., "i2t_r5": ..., ...}`` in [0, 1].
    """
    sim = image @ text.t()  # (N, N)
    n = sim.shape[0]
    if match is None:
        match = torch.eye(n, dtype=torch.bool, device=sim.device)
    out: dict[str, float] = {}
    for k in ks:
        top_t = sim.topk(min(k, n), dim=1).indices  # (N, k) texts per image
        top_i = sim.t().topk(min(k, n), dim=1).indices  # (N, k) images per text
        out[f"i2t_r{k}"] = float(match.gather(1, top_t).any(dim=1).float().mean())
        out[f"t2i_r{k}"] = float(match.t().gather(1, top_i).any(dim=1).float().mean())
    return out


def build_clip(config: CLIPConfig, ctx: object = None) -> CLIP:
    return CLIP(config)


__all__ = ["CLIP", "CLIPOutput", "build_clip", "recall_at_k", "zero_shot_classify"]
