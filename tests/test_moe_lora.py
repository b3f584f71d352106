"""LoRA on MoE expert weights: splice-lora wraps the per-expert linear layers of an MoE
layer built with ``expert_layout="modules"``, only the adapters train, the router still
dispatches through them, and merging reproduces the adapted outputs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("splice_moe", reason="needs splice-moe (the MoE layer)")
pytest.importorskip("splice_lora", reason="needs splice-lora (the LoRA adapters)")

from splice.adapters import adapters_disabled
from splice.models.build import build_model
from splice.objectives.sft import SFTObjective
from splice_lora.adapter import apply_lora
from splice_lora.configs import LoRAConfig
from splice_lora.layers import LoRALinear

V, D = 32, 16


def _model():
    torch.manual_seed(0)
    moe = {"type": "moe", "n_experts": 4, "top_k": 2, "n_shared": 1, "expert_layout": "modules"}
    return build_model(
        {
            "type": "decoder",
            "vocab_size": V,
            "d_model": D,
            "n_layers": 2,
            "max_seq_len": 16,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": 2},
                "channel_mixer": moe,
            },
        }
    )


def test_lora_targets_expert_weights_and_trains() -> None:
    torch.set_num_threads(1)
    model = _model()
    apply_lora(
        model, LoRAConfig(r=4, target_regex=r".*\.ffn\.experts\.experts\.\d+\.(gate|up|down)")
    )
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2 * 4 * 3  # 2 layers x 4 experts x gate/up/down
    assert all(".ffn.experts.experts." in n for n in wrapped)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".experts.experts." in n for n in trainable)

    ids = torch.randint(1, V, (8, 12), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids.clone()}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    objective = SFTObjective()
    losses = []
    for _ in range(15):
        out = objective.loss(model, batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] - 0.05  # the expert adapters learn
    for n, p in model.named_parameters():  # base weights, router included, untouched
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    model.eval()
    with torch.no_grad():
        adapted = model(ids).logits
        with adapters_disabled(model):
            base = model(ids).logits
    assert (adapted - base).abs().max() > 1e-3  # the routed experts carry the adaptation
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.merge()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, adapted, atol=1e-5, rtol=1e-5)
