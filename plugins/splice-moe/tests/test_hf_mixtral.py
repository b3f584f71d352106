"""Mixtral checkpoints: logits and greedy generation match transformers; export loads back
into transformers bit-identically; a missing expert tensor is named."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers (peers group) not installed"
)

from safetensors.torch import load_file, save_file  # noqa: E402
from splice.generation.sampling import SamplingConfig, generate  # noqa: E402
from splice.hf import CheckpointError, load_pretrained, save_pretrained  # noqa: E402
from splice_moe.configs import MoEConfig  # noqa: E402
from splice_moe.layer import MoELayer  # noqa: E402

VOCAB, TOL = 64, 1e-4


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64, rope_theta=500.0,
    )  # fmt: skip
    model = transformers.MixtralForCausalLM(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # large weights so a mis-mapped tensor shows in the logits
        for p in model.parameters():
            p.copy_(
                torch.rand(p.shape, generator=g) + 0.5
                if p.ndim == 1
                else torch.randn(p.shape, generator=g) * 0.15
            )
    model.eval()
    path = tmp_path_factory.mktemp("mixtral") / "hf"
    model.save_pretrained(path)
    return model, path


def _ids():
    return torch.randint(0, VOCAB, (3, 11), generator=torch.Generator().manual_seed(2))


def test_config_and_logits_match_transformers(hf_checkpoint):
    hf_model, path = hf_checkpoint
    model, _ = load_pretrained(path, dtype=torch.float32)
    ffn = model.config.block.channel_mixer
    assert isinstance(ffn, MoEConfig) and (ffn.n_experts, ffn.top_k, ffn.expert_hidden) == (
        4,
        2,
        48,
    )
    assert all(isinstance(b.ffn, MoELayer) for b in model.blocks)
    ids = _ids()
    with torch.no_grad():
        want, got = hf_model(ids).logits, model(ids).logits
    assert want.std() > 0.5
    assert (got - want).abs().max().item() <= TOL


def test_greedy_generation_matches_transformers(hf_checkpoint):
    hf_model, path = hf_checkpoint
    model, _ = load_pretrained(path, dtype=torch.float32)
    prompts, pad, new = [[5, 17, 33, 3, 42, 7], [60, 2, 11]], 1, 10
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    want = hf_model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=pad,
    )[:, width:]
    got = generate(model, prompts, SamplingConfig(max_new_tokens=new), pad_id=pad).tokens
    assert got.tolist() == want.tolist()


def test_export_loads_in_transformers_bit_identical(hf_checkpoint, tmp_path):
    hf_model, path = hf_checkpoint
    model, _ = load_pretrained(path, dtype=torch.float32)
    out = save_pretrained(model, tmp_path / "out")
    exported = json.loads((out / "config.json").read_text())
    assert (exported["model_type"], exported["num_local_experts"]) == ("mixtral", 4)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(reloaded) is type(hf_model)
    for key, value in hf_model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    ids = _ids()
    with torch.no_grad():
        assert (reloaded(ids).logits - hf_model(ids).logits).abs().max().item() <= TOL


def test_missing_expert_tensor_is_named(hf_checkpoint, tmp_path):
    _, path = hf_checkpoint
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((path / "config.json").read_text())
    tensors = load_file(path / "model.safetensors")
    gone = "model.layers.1.block_sparse_moe.experts.2.w3.weight"
    del tensors[gone]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=gone.replace(".", r"\.")):
        load_pretrained(broken)


def test_bad_expert_counts_in_config_json_are_named(hf_checkpoint, tmp_path):
    _, path = hf_checkpoint
    hf = json.loads((path / "config.json").read_text())
    hf["num_experts_per_tok"] = 9
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(
        CheckpointError, match=r"num_experts_per_tok=9.*top_k=9 exceeds n_experts=4"
    ):
        load_pretrained(tmp_path)


def test_moe_features_mixtral_lacks_block_export(tmp_path):
    from splice.models.build import build_model
    from splice_moe.testing import moe_decoder

    model = build_model(moe_decoder({"n_experts": 4, "n_shared": 1}))
    with pytest.raises(ValueError, match="n_shared=1, Mixtral has 0"):
        save_pretrained(model, tmp_path / "x", model_type="mixtral")


def _mixtral_with_router_loss(path, *, output_router_logits):
    torch.manual_seed(3)
    cfg = transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64, router_aux_loss_coef=0.25,
        output_router_logits=output_router_logits,
    )  # fmt: skip
    model = transformers.MixtralForCausalLM(cfg)
    with torch.no_grad():  # a sharp router: far from balanced, so the loss terms are not flat
        for layer in model.model.layers:
            layer.mlp.gate.weight.mul_(40.0)
    model.save_pretrained(path)
    return model.eval()


def test_aux_loss_matches_transformers_pooled_over_layers(tmp_path):
    """transformers pools every layer's routing into one loss, times ``router_aux_loss_coef``."""
    from splice.objectives.sft import SFTObjective
    from splice_moe.balancing import load_balancing_loss

    hf_model = _mixtral_with_router_loss(tmp_path, output_router_logits=True)
    model, _ = load_pretrained(tmp_path, dtype=torch.float32)
    ffn = model.config.block.channel_mixer
    assert (ffn.aux_loss_weight, ffn.aux_loss_scope) == (0.25, "model")
    model.eval()
    ids = _ids()
    want = hf_model(ids, labels=ids)
    got = SFTObjective().loss(model, {"input_ids": ids, "labels": ids})
    # The pooled loss differs from a sum of per-layer Switch losses (splice's "layer" scope).
    per_layer = sum(
        load_balancing_loss(
            logits.softmax(-1),
            torch.bincount(logits.topk(2).indices.flatten(), minlength=4),
            normalize=False,
        )
        for logits in want.router_logits
    )
    assert abs(per_layer.item() - want.aux_loss.item()) > 0.5
    torch.testing.assert_close(model(ids).aux_loss, 0.25 * want.aux_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-5)
    # The router's gradient from the total loss matches too.
    want.loss.backward()
    got.loss.backward()
    for i, block in enumerate(model.blocks):
        torch.testing.assert_close(
            block.ffn.router.gate.weight.grad,
            hf_model.model.layers[i].mlp.gate.weight.grad,
            rtol=1e-4,
            atol=1e-6,
        )


def test_aux_loss_off_without_output_router_logits(tmp_path):
    """transformers adds no balancing loss unless ``output_router_logits`` is set."""
    hf_model = _mixtral_with_router_loss(tmp_path, output_router_logits=False)
    model, _ = load_pretrained(tmp_path, dtype=torch.float32)
    assert model.config.block.channel_mixer.aux_loss_weight == 0.0
    ids = _ids()
    assert hf_model(ids, labels=ids).aux_loss is None
    assert model(ids).aux_loss is None
    exported = save_pretrained(model, tmp_path / "out")
    assert json.loads((exported / "config.json").read_text())["output_router_logits"] is False


def test_pooled_aux_loss_round_trips_and_per_layer_scope_is_refused(tmp_path):
    hf_model = _mixtral_with_router_loss(tmp_path, output_router_logits=True)
    del hf_model
    model, _ = load_pretrained(tmp_path, dtype=torch.float32)
    exported = json.loads((save_pretrained(model, tmp_path / "out") / "config.json").read_text())
    assert (exported["output_router_logits"], exported["router_aux_loss_coef"]) == (True, 0.25)
    from splice.models.build import build_model
    from splice_moe.testing import moe_decoder

    native = build_model(moe_decoder({"n_experts": 4, "aux_loss_weight": 0.01}))
    with pytest.raises(ValueError, match="aux_loss_scope='layer', Mixtral has 'model'"):
        save_pretrained(native, tmp_path / "x", model_type="mixtral")


@pytest.mark.parametrize(
    ("d", "h", "dtype"),
    [(64, 45, torch.float32), (64, 50, torch.float32), (60, 48, torch.bfloat16)],
    ids=str,
)
def test_import_at_widths_the_grouped_gemm_refuses(tmp_path, d, h, dtype):
    """Rows that are not 16-byte multiples take the per-expert loop: logits as transformers'."""
    from splice_moe.reference import reference_forward

    torch.manual_seed(4)
    cfg = transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=d, intermediate_size=h, num_hidden_layers=2,
        num_attention_heads=4 if d % 8 == 0 else 6, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64,
    )  # fmt: skip
    transformers.MixtralForCausalLM(cfg).save_pretrained(tmp_path)
    # transformers' own grouped-GEMM experts fail on these widths too: its per-expert loop.
    hf_model = transformers.MixtralForCausalLM.from_pretrained(
        tmp_path, experts_implementation="eager"
    ).eval()
    model, _ = load_pretrained(tmp_path, dtype=dtype)
    ids = _ids()
    inputs = []
    hooks = [
        b.ffn.register_forward_hook(lambda m, i, o: inputs.append((m, i[0]))) for b in model.blocks
    ]
    with torch.no_grad():
        got = model(ids).logits
        for hook in hooks:  # before calling the layers again
            hook.remove()
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        for layer, x in inputs:  # each MoE layer equals the per-expert reference
            want = reference_forward(layer, x)
            torch.testing.assert_close(layer(x).hidden, want, atol=tol, rtol=tol)
        want = hf_model(ids).logits
    tol = 1e-4 if dtype == torch.float32 else 0.05
    assert (got.float() - want).abs().max().item() <= tol * max(1.0, want.abs().max().item())
