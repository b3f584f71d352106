"""Modality-isolated MoE inside the native (early-fusion) VLM: the VLM marks its image-patch
tokens, the MoE layers route them only to the image experts and the text tokens only to the
text experts, and the model trains (splice-vision + splice-moe installed)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("splice_moe", reason="needs splice-moe (the MoE layer)")
pytest.importorskip("splice_vision", reason="needs splice-vision (the native VLM)")

from splice.objectives.sft import SFTObjective
from splice.registry import get_registry
from splice_moe.layer import MoELayer
from splice_vision.configs import NativeVLMConfig
from splice_vision.placeholders import expand_image_tokens

V, IMG, D = 40, 39, 32
MOE = {"type": "moe", "n_experts": 5, "top_k": 2, "modality_experts": [3, 2], "n_shared": 1,
       "expert_hidden": 16, "aux_loss_weight": 0.01, "orthogonal_loss_weight": 0.01}  # fmt: skip


def _vlm():
    torch.manual_seed(0)
    lm = {
        "type": "decoder", "vocab_size": V, "d_model": D, "n_layers": 2, "max_seq_len": 64,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4},
                  "channel_mixer": MOE},
    }  # fmt: skip
    cfg = NativeVLMConfig.model_validate({"lm": lm, "image_token_id": IMG, "patch_size": 8})
    return get_registry().build("model", cfg)


def _batch():
    ids = torch.tensor([expand_image_tokens([1, 4, IMG, 5, 6, 7], IMG, 16)] * 2)  # (2, 21)
    return ids, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_image_tokens_use_only_image_experts():
    model = _vlm()
    ids, images = _batch()
    layers = [m for m in model.modules() if isinstance(m, MoELayer)]
    for layer in layers:
        layer.track_stats = True
    with torch.no_grad():
        model.eval()(ids, images=images)
    n_image, n_text = int((ids == IMG).sum()), int((ids != IMG).sum())
    for layer in layers:
        s = layer.stats(reset=True)
        text_load = sum(s[f"load.{e}"] for e in range(3)).item()
        assert text_load == pytest.approx(n_text / (n_text + n_image))  # k per token both ways
    # the output before the image does not depend on the image experts; after it, it does
    with torch.no_grad():
        before = model(ids, images=images).logits
        for layer in layers:
            layer.experts.gate_up[3:].mul_(4.0)
        after = model(ids, images=images).logits
    torch.testing.assert_close(after[:, :2], before[:, :2])
    assert (after[:, -1] - before[:, -1]).abs().max() > 1e-4


def test_vlm_with_isolated_experts_trains():
    model = _vlm().train()
    ids, images = _batch()
    labels = ids.masked_fill(ids == IMG, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = SFTObjective().loss(model, {"input_ids": ids, "labels": labels, "images": images})
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
