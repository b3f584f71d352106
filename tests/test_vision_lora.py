"""LoRA (splice-lora) on the language model of a LLaVA-style VLM (splice-vision).

LLaVA stage 2 with a LoRA LM: the connector trains fully, the LM only through its
adapter, the vision encoder not at all.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("splice_lora", reason="splice-lora is not installed")
pytest.importorskip("splice_vision", reason="splice-vision is not installed")

from splice.adapters import adapters_disabled
from splice.registry import get_registry
from splice_vision.configs import LlavaConfig
from splice_vision.placeholders import expand_image_tokens

V, IMG = 40, 39


def build(lm_adapter: dict | None):
    torch.manual_seed(0)
    cfg = LlavaConfig.model_validate(
        {
            "encoder": {"type": "vit", "patch_size": 8, "d_model": 24, "n_heads": 4, "n_layers": 1},
            "connector": "mlp_projector",
            "lm": {
                "type": "decoder",
                "vocab_size": V,
                "d_model": 32,
                "n_layers": 2,
                "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
            },
            "image_token_id": IMG,
            "trainable": "connector+lm",
            "lm_adapter": lm_adapter,
        }
    )
    return get_registry().build("model", cfg)


def test_lora_on_the_vlm_language_model() -> None:
    model = build({"type": "lora", "r": 4, "targets": "q,v"})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.startswith("connector.") or "lora" in n}
    assert any(n.startswith("lm.") and "lora" in n for n in trainable)
    assert not any(n.startswith("encoder.") for n in trainable)

    ids = torch.tensor([expand_image_tokens([1, IMG, 5, 6, 7], IMG, 16)])
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        start = model(ids, images=images).logits
        with adapters_disabled(model):
            base = model(ids, images=images).logits
    torch.testing.assert_close(start, base, rtol=0, atol=0)  # LoRA B starts at zero

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(ids, images=images).logits.logsumexp(-1).mean().backward()
    opt.step()
    model.eval()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    with torch.no_grad():
        after = model(ids, images=images).logits
        with adapters_disabled(model):
            after_base = model(ids, images=images).logits
    assert not torch.allclose(after, after_base)  # the adapter now changes the LM
