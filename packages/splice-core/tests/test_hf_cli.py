"""``splice import PATH`` and ``splice generate --model PATH --prompt ...`` on a tiny checkpoint
written by ``splice.hf.save_pretrained`` (model + trained BPE tokenizer)."""

from __future__ import annotations

import json

import pytest
import torch
from splice.cli import main
from splice.generation.sampling import SamplingConfig, generate
from splice.hf import HFTokenizer, chat_template, load_pretrained, save_pretrained
from splice.models.build import build_model
from splice.models.configs import DecoderConfig
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

pytestmark = [pytest.mark.mha, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=["<s>", "</s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["hello world, splice generates text"] * 10, trainer)
    tok = HFTokenizer(bpe, bos_token="<s>", eos_token="</s>", chat_template=chat_template("chatml"))
    torch.manual_seed(0)
    model = build_model(
        {
            "type": "decoder",
            "vocab_size": tok.vocab_size,
            "d_model": 32,
            "n_layers": 2,
            "max_seq_len": 64,
            "tie_embeddings": True,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": 4, "n_kv_heads": 2},
                "channel_mixer": {"type": "swiglu", "hidden_dim": 64},
                "norm": {"type": "rmsnorm"},
            },
            "final_norm": {"type": "rmsnorm"},
        }
    )
    with torch.no_grad():  # large weights so greedy decoding is not a flat argmax
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("ckpt")
    save_pretrained(model, path, tokenizer=tok)
    return path


def test_import_prints_the_derived_config(checkpoint, capsys):
    assert main(["import", str(checkpoint), "--check-weights"]) == 0
    out = capsys.readouterr()
    cfg = DecoderConfig.model_validate(json.loads(out.out))
    assert cfg.block.token_mixer.kv_heads == 2 and cfg.tie_embeddings
    assert cfg.vocab_size == 280
    assert "model_type='llama'" in out.err
    hf = json.loads((checkpoint / "config.json").read_text())
    assert (hf["bos_token_id"], hf["eos_token_id"]) == (0, 1)


def test_import_error_goes_to_stderr(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert main(["import", str(tmp_path)]) == 2
    assert "unsupported model_type 't5'" in capsys.readouterr().err


@pytest.mark.parametrize("chat", [False, True])
def test_generate_prints_the_greedy_continuation(checkpoint, capsys, chat):
    flags = ["--chat"] if chat else []
    assert (
        main(
            [
                "generate",
                "--model",
                str(checkpoint),
                "--prompt",
                "hello world",
                "--max-new-tokens",
                "8",
                *flags,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    model, tok = load_pretrained(checkpoint)
    if chat:
        msgs = [{"role": "user", "content": "hello world"}]
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True)
        assert tok.decode(prompt, skip_special=False).endswith("<|im_start|>assistant\n")
    else:
        prompt = tok.encode("hello world", bos=True)
    out = generate(
        model,
        [prompt],
        SamplingConfig(max_new_tokens=8, stop_token_ids=[tok.eos_id]),
        pad_id=tok.pad_id,
    )
    ids = out.completions()[0]
    ids = ids[:-1] if ids[-1] == tok.eos_id else ids
    assert ids, "nothing generated"
    assert printed == tok.decode(ids) + "\n"


def test_generate_without_tokenizer_fails_clearly(checkpoint, tmp_path, capsys):
    model, _ = load_pretrained(checkpoint)
    save_pretrained(model, tmp_path / "bare")
    assert main(["generate", "--model", str(tmp_path / "bare"), "--prompt", "hi"]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
