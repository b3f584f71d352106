"""Qwen2-MoE, Qwen3-MoE, DeepSeek-V3 and ERNIE 4.5 checkpoints: logits and greedy generation
match transformers; the export loads back into transformers bit-identically.

The tiny checkpoints have odd expert counts and widths that are not powers of two, top-k
above 1, dense and sparse layers mixed, and (DeepSeek-V3) group-limited routing over three
groups with a non-zero ``e_score_correction_bias``, MLA with interleaved RoPE.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers (peers group) not installed"
)

from splice.generation.sampling import SamplingConfig, generate  # noqa: E402
from splice.hf import CheckpointError, load_pretrained, save_pretrained  # noqa: E402
from splice_moe.configs import MoEConfig  # noqa: E402
from splice_moe.layer import MoELayer  # noqa: E402

VOCAB, TOL = 61, 1e-4
COMMON = dict(
    vocab_size=VOCAB, hidden_size=36, intermediate_size=52, moe_intermediate_size=20,
    num_attention_heads=3, max_position_embeddings=64, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 500.0},
)  # fmt: skip
FAMILIES = {
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
        **COMMON, num_hidden_layers=4, num_key_value_heads=1, num_experts=5,
        num_experts_per_tok=3, shared_expert_intermediate_size=28, norm_topk_prob=False,
        decoder_sparse_step=1, mlp_only_layers=[1],
    ),
    "qwen3_moe": lambda: transformers.Qwen3MoeConfig(
        **COMMON, num_hidden_layers=3, num_key_value_heads=1, head_dim=10, num_experts=7,
        num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=2,
    ),
    "deepseek_v3": lambda: transformers.DeepseekV3Config(
        **COMMON, num_hidden_layers=3, num_key_value_heads=3, n_routed_experts=9,
        num_experts_per_tok=3, n_group=3, topk_group=2, n_shared_experts=2,
        routed_scaling_factor=1.7, first_k_dense_replace=1, kv_lora_rank=14, q_lora_rank=18,
        qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=7,
    ),
    "ernie4_5_moe": lambda: transformers.Ernie4_5_MoeConfig(
        **{**COMMON, "tie_word_embeddings": True}, num_hidden_layers=3, num_key_value_heads=3,
        moe_num_experts=5, moe_k=2, moe_num_shared_experts=1, moe_layer_start_index=1,
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def hf_checkpoint(request, tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(FAMILIES[request.param]())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # large weights so a mis-mapped tensor shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:  # a bias that changes which experts win
                b.copy_(torch.randn(b.shape, generator=g) * 0.3)
    model.eval()
    path = tmp_path_factory.mktemp(request.param) / "hf"
    model.save_pretrained(path)
    return request.param, model, path


def _ids():
    return torch.randint(0, VOCAB, (3, 11), generator=torch.Generator().manual_seed(2))


def test_logits_match_transformers(hf_checkpoint):
    family, hf_model, path = hf_checkpoint
    model, _ = load_pretrained(path, dtype=torch.float32)
    sparse = [isinstance(b.ffn, MoELayer) for b in model.blocks]
    assert any(sparse) and not all(sparse)  # dense and MoE layers mixed
    moe = next(b.ffn for b in model.blocks if isinstance(b.ffn, MoELayer))
    assert isinstance(moe.config, MoEConfig) and moe.config.top_k > 1
    if family == "deepseek_v3":
        assert (moe.config.scoring, moe.config.n_groups, moe.config.top_groups) == ("sigmoid", 3, 2)
        assert model.config.block.token_mixer.type == "mla"
        assert moe.router.expert_bias.abs().sum() > 0  # e_score_correction_bias arrived
    ids = _ids()
    with torch.no_grad():
        want, got = hf_model(ids).logits, model(ids).logits
    assert want.std() > 0.3
    assert (got - want).abs().max().item() <= TOL


def test_greedy_generation_matches_transformers(hf_checkpoint):
    _, hf_model, path = hf_checkpoint
    model, _ = load_pretrained(path, dtype=torch.float32)
    prompts, new = [[5, 17, 33, 3, 42, 7], [60, 2, 11, 9, 8, 4]], 10
    want = hf_model.generate(
        torch.tensor(prompts), attention_mask=torch.ones(2, 6, dtype=torch.long),
        max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
    )[:, 6:]  # fmt: skip
    got = generate(model, prompts, SamplingConfig(max_new_tokens=new), pad_id=0).tokens
    assert got.tolist() == want.tolist()


def test_export_loads_in_transformers_bit_identical(hf_checkpoint, tmp_path):
    family, hf_model, path = hf_checkpoint
    model, _ = load_pretrained(path, dtype=torch.float32)
    out = save_pretrained(model, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["model_type"] == family
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(reloaded) is type(hf_model)
    want = hf_model.state_dict()
    assert reloaded.state_dict().keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, hf_model(ids).logits)


def test_bad_group_settings_are_named(tmp_path):
    torch.manual_seed(0)
    hf = FAMILIES["deepseek_v3"]().to_dict()
    hf["n_group"] = 2  # 9 experts do not split into 2 groups
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(CheckpointError, match=r"n_group.*n_groups=2 does not divide n_experts=9"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("family", ["qwen2_moe", "qwen3_moe"])
def test_training_loss_with_router_aux_loss_matches_transformers(family, tmp_path):
    """``output_router_logits`` + ``router_aux_loss_coef``: splice adds transformers' pooled
    balancing loss (``aux_loss_scope="model"``); the total loss matches, and export writes
    both fields back."""
    from splice.objectives.sft import SFTObjective

    torch.manual_seed(0)
    cfg = FAMILIES[family]()
    cfg.output_router_logits, cfg.router_aux_loss_coef = True, 0.3
    hf_model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    model, _ = load_pretrained(tmp_path / "hf", dtype=torch.float32)
    moe = next(b.ffn for b in model.blocks if isinstance(b.ffn, MoELayer))
    assert (moe.config.aux_loss_weight, moe.config.aux_loss_scope) == (0.3, "model")
    ids = _ids()
    want = hf_model(ids, labels=ids)
    got = SFTObjective().loss(model.eval(), {"input_ids": ids, "labels": ids})
    assert want.aux_loss is not None and want.aux_loss.item() > 0
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-5)
    exported = json.loads((save_pretrained(model, tmp_path / "out") / "config.json").read_text())
    assert (exported["output_router_logits"], exported["router_aux_loss_coef"]) == (True, 0.3)
