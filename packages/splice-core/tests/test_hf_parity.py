"""Parity with transformers: tiny random Llama (GQA, tied and untied), Qwen2, GPT-2.

Each test saves a transformers model with ``save_pretrained``, loads it with
``splice.hf.load_pretrained`` and compares logits (max abs diff <= 1e-4, float32)
and greedy generations (splice's KV-cache ``generate`` vs transformers' ``generate``
on left-padded prompts of different lengths). Round trip: splice export ->
transformers ``from_pretrained`` -> same logits.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from splice.generation.sampling import SamplingConfig, generate  # noqa: E402
from splice.hf import load_pretrained, save_pretrained  # noqa: E402

VOCAB = 128
TOL = 1e-4


pytestmark = [pytest.mark.mha, pytest.mark.usefixtures("one_thread")]


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Large random weights everywhere (norm scales and biases too), so logits are O(1) and a
    mis-mapped tensor cannot hide behind a near-zero init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)  # scales/biases in [0.5, 1.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def _llama(tie: bool = False):
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=500.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
    )
    return transformers.LlamaForCausalLM(cfg)


def _qwen2():
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return transformers.Qwen2ForCausalLM(cfg)


def _gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(cfg)


MODELS = {"llama": _llama, "llama_tied": lambda: _llama(tie=True), "qwen2": _qwen2, "gpt2": _gpt2}


@pytest.fixture(params=sorted(MODELS))
def hf_checkpoint(request, tmp_path):
    torch.manual_seed(0)
    model = MODELS[request.param]()
    _randomize(model, seed=1)
    model.eval()
    model.save_pretrained(tmp_path / "hf")
    return request.param, model, tmp_path / "hf"


def _inputs():
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, VOCAB, (3, 11), generator=g)


def test_logits_match_transformers(hf_checkpoint):
    name, hf_model, path = hf_checkpoint
    model, tok = load_pretrained(path)
    assert tok is None  # no tokenizer.json saved
    ids = _inputs()
    with torch.no_grad():
        want = hf_model(ids).logits
        got = model(ids).logits
    assert want.std() > 0.5, "logits too flat for the comparison to mean anything"
    assert (got - want).abs().max().item() <= TOL, name


def test_derived_config(hf_checkpoint):
    name, _, path = hf_checkpoint
    model, _ = load_pretrained(path)
    cfg = model.config
    assert (cfg.vocab_size, cfg.d_model, cfg.n_layers) == (VOCAB, 64, 2)
    mixer = cfg.block.token_mixer
    if name == "gpt2":
        assert cfg.positional.type == "learned" and cfg.tie_embeddings
        assert cfg.block.channel_mixer.activation == "gelu_tanh" and mixer.bias
    else:
        assert cfg.positional.type == "rope" and mixer.kv_heads == 2
        assert cfg.tie_embeddings is (name == "llama_tied")
        assert (mixer.qkv_bias, mixer.bias) == (
            (True, False) if name == "qwen2" else (False, False)
        )
    if name == "llama":
        assert cfg.positional.theta == 500.0 and cfg.block.norm.eps == 1e-5
    if cfg.tie_embeddings:
        assert model.lm_head.weight is model.embed.weight


def test_greedy_generation_matches_transformers(hf_checkpoint):
    _, hf_model, path = hf_checkpoint
    model, _ = load_pretrained(path)
    prompts = [[5, 17, 99, 3, 42, 7], [64, 2, 11]]  # different lengths: left padding
    pad = 1
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    new = 12
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


def test_round_trip_export_loads_in_transformers(hf_checkpoint, tmp_path):
    name, hf_model, path = hf_checkpoint
    model, _ = load_pretrained(path)
    out = save_pretrained(model, tmp_path / "splice_out")
    exported = json.loads((out / "config.json").read_text())
    assert exported["model_type"] == ("llama" if name.startswith("llama") else name)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(reloaded) is type(hf_model)
    ids = _inputs()
    with torch.no_grad():
        assert (reloaded(ids).logits - hf_model(ids).logits).abs().max().item() <= TOL
    # and the exported tensors are bit-identical to the original checkpoint's
    hf_state, back = hf_model.state_dict(), reloaded.state_dict()
    for key, value in hf_state.items():
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_sharded_checkpoints_load_both_ways(which, tmp_path):
    torch.manual_seed(0)
    hf_model = MODELS[which]()
    _randomize(hf_model, seed=3)
    hf_model.eval()
    hf_model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model, _ = load_pretrained(tmp_path / "hf")
    ids = _inputs()
    with torch.no_grad():
        want = hf_model(ids).logits
        assert (model(ids).logits - want).abs().max().item() <= TOL
    # splice writes shards too, and transformers reads them
    save_pretrained(model, tmp_path / "out", max_shard_size="40KB")
    shards = sorted(p.name for p in (tmp_path / "out").glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "out" / "model.safetensors").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        assert (reloaded(ids).logits - want).abs().max().item() <= TOL


def test_splice_built_model_exports_as_inferred_architecture(tmp_path):
    """A model configured in splice (not imported) is written as the architecture it fits."""
    from splice.models.build import build_model

    cfg = {
        "type": "decoder",
        "vocab_size": VOCAB,
        "d_model": 32,
        "n_layers": 1,
        "max_seq_len": 16,
        "block": {
            "type": "pre_norm",
            "token_mixer": {"type": "mha", "n_heads": 2, "qkv_bias": True},
            "channel_mixer": {"type": "swiglu", "hidden_dim": 48},
            "norm": {"type": "rmsnorm"},
        },
        "final_norm": {"type": "rmsnorm"},
        "tie_embeddings": False,
    }
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_pretrained(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "qwen2"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        assert (reloaded(ids).logits - model(ids).logits).abs().max().item() <= TOL


def test_export_rejects_config_without_hf_equivalent(tmp_path):
    from splice.models.build import build_model

    model = build_model(
        {
            "type": "decoder",
            "vocab_size": VOCAB,
            "d_model": 32,
            "n_layers": 1,
            "max_seq_len": 16,
            "block": {"type": "post_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        }
    )
    with pytest.raises(ValueError, match=r"block.type='post_norm'"):
        save_pretrained(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_legacy_gpt2_names_and_mask_buffers_load(tmp_path):
    """The original gpt2 upload: no "transformer." prefix, causal-mask buffers saved as tensors."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    hf_model = _gpt2()
    _randomize(hf_model, seed=4)
    hf_model.eval()
    hf_model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    legacy = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(2):
        legacy[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    save_file(legacy, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model, _ = load_pretrained(tmp_path)
    ids = _inputs()
    with torch.no_grad():
        assert (model(ids).logits - hf_model(ids).logits).abs().max().item() <= TOL


def test_dtype_auto_keeps_checkpoint_dtype(tmp_path):
    torch.manual_seed(0)
    _llama().to(torch.bfloat16).save_pretrained(tmp_path)
    model, _ = load_pretrained(tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model32, _ = load_pretrained(tmp_path, dtype=torch.float32)
    assert {p.dtype for p in model32.parameters()} == {torch.float32}
    assert torch.equal(model32.embed.weight, model.embed.weight.float())
