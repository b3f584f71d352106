"""The user's path (docs/bring-your-own-model.md): a Hugging Face Llama checkpoint -> QLoRA SFT
on chat JSONL with completion-only loss via ``splice run config.py`` -> a PEFT adapter ->
transformers + PEFT give splice's logits; the merged, dequantized export loads in plain
transformers with the same logits.

The checkpoint (tiny, random) and its BPE tokenizer are written by the test. PEFT applies
the adapter to the base it is given; splice trained it on the NF4 base, so the comparison
uses the base as splice sees it: the dequantized NF4 weights, exported with
``splice.hf.save_pretrained``.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from splice.adapters import adapters_disabled  # noqa: E402
from splice.checkpoint import load_model_weights  # noqa: E402
from splice.cli import main as splice_main  # noqa: E402
from splice.hf import save_pretrained  # noqa: E402
from splice.quantization import dequantize_model, quantization_report  # noqa: E402
from splice.training.configs import ExperimentConfig  # noqa: E402
from splice.training.experiment import build_experiment_model  # noqa: E402
from splice.training.trainer import seed_everything  # noqa: E402
from splice_lora import save_peft_adapter  # noqa: E402
from splice_qlora.export import export_merged  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<s>"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _conversations() -> list[list[dict[str, str]]]:
    out = []
    for a in range(10):
        for b in range(10 - a):
            out.append([
                {"role": "system", "content": "answer in words"},
                {"role": "user", "content": f"{a} + {b}"},
                {"role": "assistant", "content": NUMBERS[a + b]},
            ])  # fmt: skip
    return out


def _write_checkpoint(folder) -> None:
    corpus = [f"{m['role']} {m['content']}" for c in _conversations() for m in c]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=200,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    vocab = tok.get_vocab_size()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False, bos_token_id=3, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
        "eos_token": "<|im_end|>", "pad_token": "<pad>", "splice_chat_template": "chatml",
    }))  # fmt: skip


CONFIG_PY = """
from splice.training.configs import ExperimentConfig


def config():
    return ExperimentConfig(
        name="byom",
        model={{"type": "pretrained", "path": "{ckpt}"}},
        tokenizer={{"type": "hf", "path": "{ckpt}"}},
        data={{
            "task": {{"type": "jsonl", "train": "{data}", "format": "chat", "held_out_fraction": 0.1,
                      "chat_template": "chatml"}},
            "max_len": 96,
        }},
        adapter={{"type": "qlora", "r": 8, "alpha": 16, "dropout": 0.0,
                  "quantization": {{"type": "nf4", "compute_dtype": "float32"}}}},
        train={{"steps": 30, "batch_size": 16, "log_every": 10, "checkpoint_every": 30,
                "progress": False, "num_threads": 1, "optimizer": {{"lr": 1e-2}}}},
        eval={{"loss_batches": 2, "exact_match_examples": 0}},
        output_dir="{run}",
    )
"""


@pytest.mark.slow
def test_hf_llama_to_qlora_sft_to_peft_same_logits(tmp_path):
    ckpt, run, adapter_dir, base_dir = (tmp_path / n for n in ("llama", "run", "adapter", "base"))
    ckpt.mkdir()
    _write_checkpoint(ckpt)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in _conversations()))
    cfg_file = tmp_path / "config.py"
    cfg_file.write_text(textwrap.dedent(CONFIG_PY.format(ckpt=ckpt, data=data, run=run)))

    assert splice_main(["run", str(cfg_file)]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [m["loss"] for m in rows if m.get("kind") == "train"]
    assert train[-1] < train[0] - 0.4  # completion-only SFT learned something (ln V = 5.3)

    # Rebuild the run's model (HF import -> NF4 -> LoRA) and load the trained adapter.
    config = ExperimentConfig.model_validate(json.loads((run / "config.json").read_text()))
    seed_everything(config.seed)
    model = build_experiment_model(config).eval()
    load_model_weights(model, run)
    # 4 bits + scales + each layer's saved code tables (~1.3 KB per layer of 2-8K weights)
    assert 0.5 < quantization_report(model).bytes_per_param < 0.8
    save_peft_adapter(model, adapter_dir)
    assert {p.name for p in adapter_dir.iterdir()} >= {
        "adapter_model.safetensors",
        "adapter_config.json",
    }

    ids = torch.randint(4, 150, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids).logits
        with adapters_disabled(model):
            base_only = model(ids).logits

    # The base as splice saw it: the NF4 weights, dequantized, without the adapter.
    import copy

    base = copy.deepcopy(model)
    from splice_lora import merge_and_unload, set_active_adapter

    set_active_adapter(base, None)
    merge_and_unload(base)  # no active adapter: just unwraps the LoRA layers
    save_pretrained(dequantize_model(base), base_dir)

    hf = transformers.AutoModelForCausalLM.from_pretrained(
        base_dir, torch_dtype=torch.float32
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, base_only, atol=1e-4, rtol=1e-4)
        peft_model = peft.PeftModel.from_pretrained(hf, adapter_dir).eval()
        got = peft_model(input_ids=ids).logits
    assert (expected - base_only).abs().max() > 1e-2  # the adapter changes the output ...
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)  # ... and PEFT agrees

    # One float checkpoint, adapter merged into the dequantized base: plain transformers.
    export_merged(model, tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "merged", torch_dtype=torch.float32
    )
    with torch.no_grad():
        torch.testing.assert_close(
            merged.eval()(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4
        )
