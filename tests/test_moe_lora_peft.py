"""LoRA on the batched experts of an imported MoE checkpoint, in PEFT's format.

A tiny Qwen2-MoE checkpoint written by transformers is loaded into splice (experts stored
batched); LoRA adapts attention projections and every expert's ``gate_up`` / ``down`` with one
low-rank delta per expert, without switching to per-expert modules. It trains (only the
adapters move), merges to the same logits, and its adapter file loads with
``peft.PeftModel.from_pretrained`` onto the transformers model with the same logits; an
adapter PEFT wrote (``target_parameters``) loads into splice with the same logits as PEFT's.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("splice_moe", reason="needs splice-moe (the MoE layer)")
pytest.importorskip("splice_lora", reason="needs splice-lora (the LoRA adapters)")
transformers = pytest.importorskip("transformers", reason="transformers (peers group)")
peft = pytest.importorskip("peft", reason="peft (peers group)")

from splice.adapters import adapters_disabled  # noqa: E402
from splice.hf import load_pretrained  # noqa: E402
from splice.objectives.sft import SFTObjective  # noqa: E402
from splice_lora.adapter import apply_lora, merge_and_unload  # noqa: E402
from splice_lora.configs import LoRAConfig  # noqa: E402
from splice_lora.expert_weights import LoRAParameter  # noqa: E402
from splice_lora.layers import LoRALinear  # noqa: E402
from splice_lora.peft_format import load_peft_adapter, save_peft_adapter  # noqa: E402
from splice_moe.experts import GroupedExperts  # noqa: E402

VOCAB, TOL = 61, 1e-4
TARGETS = dict(targets=["q_proj", "gate"], target_parameters=["experts"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.Qwen2MoeConfig(
        vocab_size=VOCAB, hidden_size=36, intermediate_size=52, moe_intermediate_size=20,
        num_attention_heads=3, num_key_value_heads=1, num_hidden_layers=3, num_experts=5,
        num_experts_per_tok=2, shared_expert_intermediate_size=28, mlp_only_layers=[0],
        max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    path = tmp_path_factory.mktemp("qwen2_moe") / "hf"
    model.save_pretrained(path)
    return path


def _ids():
    return torch.randint(0, VOCAB, (4, 10), generator=torch.Generator().manual_seed(3))


def _hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_targets_name_the_mlp_gate_not_the_router(checkpoint):
    model, _ = load_pretrained(checkpoint, dtype=torch.float32)
    apply_lora(model, LoRAConfig(r=2, targets=["gate"]))
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert wrapped == {"blocks.0.ffn.gate", "blocks.1.ffn.shared.gate", "blocks.2.ffn.shared.gate"}
    router, _ = load_pretrained(checkpoint, dtype=torch.float32)
    apply_lora(router, LoRAConfig(r=2, targets=["router"]))
    assert {type(m).__name__ for n, m in router.named_modules() if n.endswith("router.gate")} == {
        "LoRALinear"
    }


def test_expert_lora_trains_merges_and_saves_for_peft(checkpoint, tmp_path):
    torch.manual_seed(0)
    model, _ = load_pretrained(checkpoint, dtype=torch.float32)
    model.train()
    apply_lora(model, LoRAConfig(r=3, alpha=6.0, **TARGETS))
    experts = [m for m in model.modules() if isinstance(m, GroupedExperts)]
    assert len(experts) == 2  # layer 0 is dense: the experts stay batched, no per-expert modules
    assert sum(isinstance(m, LoRAParameter) for m in model.modules()) == 4
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".experts.parametrizations.gate_up." in n for n in trainable)
    assert all("lora_" in n for n in trainable)

    ids = _ids()
    batch = {"input_ids": ids, "labels": ids.clone()}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    losses = []
    for _ in range(12):
        out = SFTObjective().loss(model, batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    model.eval()
    with torch.no_grad():
        adapted = model(ids).logits
        with adapters_disabled(model):
            base = model(ids).logits
    assert (adapted - base).abs().max() > 1e-2

    save_peft_adapter(model, tmp_path / "adapter")
    hf = peft.PeftModel.from_pretrained(_hf(checkpoint), tmp_path / "adapter").eval()
    with torch.no_grad():
        assert (hf(ids).logits - adapted).abs().max().item() <= TOL

    merged = merge_and_unload(model)
    assert not any(isinstance(m, LoRAParameter) for m in merged.modules())
    assert "blocks.1.ffn.experts.gate_up" in dict(merged.named_parameters())
    with torch.no_grad():
        assert (merged(ids).logits - adapted).abs().max().item() <= TOL


def test_peft_expert_adapter_loads_into_splice(checkpoint, tmp_path):
    torch.manual_seed(1)
    hf = peft.get_peft_model(
        _hf(checkpoint),
        peft.LoraConfig(r=2, lora_alpha=5, target_modules=["v_proj"],
                        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]),
    )  # fmt: skip
    with torch.no_grad():  # PEFT starts B at zero: give the deltas a size
        for n, p in hf.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.2)
    hf.eval().save_pretrained(tmp_path / "peft")
    model, _ = load_pretrained(checkpoint, dtype=torch.float32)
    load_peft_adapter(model, tmp_path / "peft")
    ids = _ids()
    with torch.no_grad():
        want, got = hf(ids).logits, model(ids).logits
        with hf.disable_adapter():
            base = hf(ids).logits
    assert (want - base).abs().max() > 1e-2
    assert (got - want).abs().max().item() <= TOL


def test_what_peft_cannot_express_is_refused(checkpoint):
    model, _ = load_pretrained(checkpoint, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"does not support \['dropout'\]"):
        apply_lora(model, LoRAConfig(r=2, dropout=0.1, targets=[], target_parameters=["experts"]))
    with pytest.raises(ValueError, match=r"'experts.up' matches no parameter.*experts.gate_up"):
        apply_lora(model, LoRAConfig(r=2, targets=[], target_parameters=["experts.up"]))


FAMILY_CONFIGS = {
    "deepseek_v3": lambda: transformers.DeepseekV3Config(
        vocab_size=VOCAB, hidden_size=36, intermediate_size=52, moe_intermediate_size=20,
        num_attention_heads=3, num_key_value_heads=3, num_hidden_layers=2, n_routed_experts=6,
        num_experts_per_tok=2, n_group=2, topk_group=1, first_k_dense_replace=1,
        kv_lora_rank=12, q_lora_rank=16, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=8,
        max_position_embeddings=64,
    ),
    "ernie4_5_moe": lambda: transformers.Ernie4_5_MoeConfig(
        vocab_size=VOCAB, hidden_size=36, intermediate_size=52, moe_intermediate_size=20,
        num_attention_heads=3, num_key_value_heads=1, num_hidden_layers=2, moe_num_experts=5,
        moe_k=2, moe_num_shared_experts=1, moe_layer_start_index=1, max_position_embeddings=64,
    ),
    "mixtral": lambda: transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=36, intermediate_size=20, num_attention_heads=3,
        num_key_value_heads=1, num_hidden_layers=2, num_local_experts=3, num_experts_per_tok=2,
        max_position_embeddings=64,
    ),
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_attention_and_expert_adapter_round_trips_through_peft(family, tmp_path):
    """Attention projections (MLA's and ERNIE's rotary ones included: their ``lora_B`` rows
    are permuted like the weights) plus the experts, both ways through PEFT."""
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(FAMILY_CONFIGS[family]()).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    model, _ = load_pretrained(tmp_path / "hf", dtype=torch.float32)
    # PEFT reads DeepSeek's and ERNIE's MLP projection names as the experts' (refused, see
    # below): there every attention projection; in Mixtral every linear but the router.
    targets = (
        {"targets": "all-linear"}
        if family == "mixtral"
        else {"targets": [], "target_regex": r".*\.mixer\..*"}
    )
    apply_lora(model, LoRAConfig(r=2, alpha=4.0, target_parameters=["experts"], **targets))
    assert not any(
        isinstance(m, LoRALinear) for n, m in model.named_modules() if n.endswith("router.gate")
    )
    with torch.no_grad():  # B starts at zero: give every delta a size
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.3)
    ids = _ids()
    with torch.no_grad():
        want = model.eval()(ids).logits
        with adapters_disabled(model):
            assert (model(ids).logits - want).abs().max() > 1e-2
    save_peft_adapter(model, tmp_path / "adapter")
    hf = peft.PeftModel.from_pretrained(_hf(tmp_path / "hf"), tmp_path / "adapter").eval()
    again, _ = load_pretrained(tmp_path / "hf", dtype=torch.float32)
    load_peft_adapter(again, tmp_path / "adapter")
    with torch.no_grad():
        assert (hf(ids).logits - want).abs().max().item() <= TOL
        assert (again.eval()(ids).logits - want).abs().max().item() <= TOL


def test_mlp_adapter_peft_would_misread_is_refused(tmp_path):
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(FAMILY_CONFIGS["deepseek_v3"]())
    hf_model.save_pretrained(tmp_path / "hf")
    model, _ = load_pretrained(tmp_path / "hf", dtype=torch.float32)
    apply_lora(model, LoRAConfig(r=2, targets="all-linear", target_parameters=["experts"]))
    with pytest.raises(ValueError, match="PEFT reads gate_proj/up_proj/down_proj targets"):
        save_peft_adapter(model, tmp_path / "adapter")


def test_router_adapter_is_refused_for_peft(checkpoint, tmp_path):
    model, _ = load_pretrained(checkpoint, dtype=torch.float32)
    apply_lora(model, LoRAConfig(r=2, targets=["router"]))
    with pytest.raises(
        ValueError, match=r"router 'blocks\.1\.ffn\.router\.gate' cannot be written"
    ):
        save_peft_adapter(model, tmp_path / "adapter")
