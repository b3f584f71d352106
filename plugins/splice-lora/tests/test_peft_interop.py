"""PEFT-layout adapters both ways, against real transformers + peft on tiny random Llama and
Qwen2 checkpoints written by the test: same logits (max abs diff <= 1e-4, float32).

splice -> PEFT: import the checkpoint with ``splice.hf``, put LoRA on it, give the adapter
random weights, ``save_peft_adapter``; ``PeftModel.from_pretrained`` on the transformers
model must give splice's logits. PEFT -> splice: ``get_peft_model`` with random adapter
weights, ``save_pretrained``; ``load_peft_adapter`` on the splice import must give PEFT's.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file, save_file  # noqa: E402
from splice.hf import load_pretrained  # noqa: E402
from splice_lora import LoRAConfig, apply_lora, load_peft_adapter, save_peft_adapter  # noqa: E402

VOCAB, TOL = 96, 1e-4


def _hf_model(kind: str, layers: int = 2):
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                  num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # O(1) logits, so a mis-mapped tensor cannot hide in a tiny init
        for p in model.parameters():
            p.copy_(
                torch.rand(p.shape, generator=g) + 0.5
                if p.ndim == 1
                else 0.15 * torch.randn(p.shape, generator=g)
            )
    return model.eval()


def _checkpoint(tmp_path, kind: str, layers: int = 2):
    path = tmp_path / f"{kind}-{layers}"
    if not path.exists():
        _hf_model(kind, layers).save_pretrained(path)
    return path


IDS = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))


def splice_logits(model):
    model.eval()
    with torch.no_grad():
        return model(IDS).logits


def peft_logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _random_adapter(model, seed=4):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                noise = 0.1 * torch.randn(p.shape, generator=g)
                p.add_(noise) if "magnitude" in n else p.copy_(noise)


SPLICE_TO_PEFT = [
    ("llama", LoRAConfig(r=4, alpha=8)),  # the default q,v
    ("qwen2", LoRAConfig(r=4, alpha=8, targets="all-linear", rslora=True)),
    ("llama", LoRAConfig(r=2, alpha=4, targets="q,k,v,o,up", dora=True)),
    ("qwen2", LoRAConfig(r=2, alpha=4, targets="embed,gate")),
    ("qwen2", LoRAConfig(r=2, alpha=2, target_regex=r"blocks\.1\.(mixer\.k_proj|ffn\.down)")),
    ("llama", LoRAConfig(r=3, alpha=6, targets="q,down", init="pissa")),
]


@pytest.mark.parametrize(
    ("kind", "cfg"),
    SPLICE_TO_PEFT,
    ids=[
        "llama-qv",
        "qwen2-all-rslora",
        "llama-dora",
        "qwen2-embed",
        "qwen2-regex",
        "llama-pissa",
    ],
)
def test_splice_adapter_loads_in_peft_with_the_same_logits(tmp_path, kind, cfg):
    base = _checkpoint(tmp_path, kind)
    model, _ = load_pretrained(base, dtype="float32")
    apply_lora(model, cfg)
    _random_adapter(model)
    want = splice_logits(model)
    out = save_peft_adapter(model, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] == cfg.dora
    keys = load_file(out / "adapter_model.safetensors").keys()
    if kind == "llama" and cfg.init == "kaiming" and not cfg.dora:
        assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    hf = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = peft.PeftModel.from_pretrained(hf, out)
    got = peft_logits(peft_model)
    assert (got - want).abs().max() <= TOL
    assert (want - splice_logits_without_adapter(base)).abs().max() > 1e-2  # the adapter matters


def splice_logits_without_adapter(base):
    model, _ = load_pretrained(base, dtype="float32")
    return splice_logits(model)


PEFT_TO_SPLICE = [
    ("llama", dict(target_modules=["q_proj", "v_proj"])),
    ("qwen2", dict(target_modules="all-linear", use_rslora=True)),
    ("llama", dict(target_modules=["gate_proj", "o_proj"], use_dora=True)),
    ("qwen2", dict(target_modules=["embed_tokens", "down_proj"])),
    ("qwen2", dict(target_modules=r"model\.layers\.0\.self_attn\.(q|v)_proj")),
]


@pytest.mark.parametrize(
    ("kind", "options"),
    PEFT_TO_SPLICE,
    ids=["llama-qv", "qwen2-all-rslora", "llama-dora", "qwen2-embed", "qwen2-regex"],
)
def test_peft_adapter_loads_in_splice_with_the_same_logits(tmp_path, kind, options):
    base = _checkpoint(tmp_path, kind)
    hf = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_cfg = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **options)
    peft_model = peft.get_peft_model(hf, peft_cfg)
    _random_adapter(peft_model)
    want = peft_logits(peft_model)
    peft_model.save_pretrained(tmp_path / "peft-adapter")
    model, _ = load_pretrained(base, dtype="float32")
    load_peft_adapter(model, tmp_path / "peft-adapter")
    assert (splice_logits(model) - want).abs().max() <= TOL
    assert (want - splice_logits_without_adapter(base)).abs().max() > 1e-2


def test_adapters_that_do_not_fit_name_the_tensor_the_option_or_the_module(tmp_path):
    base = _checkpoint(tmp_path, "llama")
    model, _ = load_pretrained(base, dtype="float32")
    apply_lora(model, LoRAConfig(r=4))
    out = save_peft_adapter(model, tmp_path / "adapter")
    weights = load_file(out / "adapter_model.safetensors")
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    assert weights[key].shape == (16, 4)  # 2 kv heads x head_dim 8

    bad = tmp_path / "bad-shape"
    bad.mkdir()
    (bad / "adapter_config.json").write_text((out / "adapter_config.json").read_text())
    save_file({**weights, key: torch.zeros(32, 4)}, bad / "adapter_model.safetensors")
    fresh, _ = load_pretrained(base, dtype="float32")
    with pytest.raises(
        ValueError,
        match=rf"{key} has shape \(32, 4\) but blocks.1.mixer.v_proj.lora_B.default.weight is \(16, 4\)",
    ):
        load_peft_adapter(fresh, bad)

    deeper = tmp_path / "deeper"
    deeper_model, _ = load_pretrained(_checkpoint(tmp_path, "llama", layers=3), dtype="float32")
    save_peft_adapter(apply_lora(deeper_model, LoRAConfig(r=4)), deeper)
    fresh, _ = load_pretrained(base, dtype="float32")
    with pytest.raises(
        ValueError,
        match=r"module 'model.layers.2.self_attn.q_proj' target a module the model lacks \('blocks.2.mixer.q_proj'\)",
    ):
        load_peft_adapter(fresh, deeper)

    for option, value in (("bias", "all"), ("fan_in_fan_out", True), ("modules_to_save", ["lm_head"]),
                          ("peft_type", "IA3")):  # fmt: skip
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg[option] = value
        (bad / "adapter_config.json").write_text(json.dumps(cfg))
        save_file(weights, bad / "adapter_model.safetensors")
        fresh, _ = load_pretrained(base, dtype="float32")
        with pytest.raises(ValueError, match=re.escape(f"{option}={value!r} is not supported")):
            load_peft_adapter(fresh, bad)
