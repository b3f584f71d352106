"""HFTokenizer: a tiny BPE trained here, its special tokens, and the chat-template renderer,
checked against transformers' tokenizer on the same files."""

from __future__ import annotations

import json

import pytest
from splice.hf import ChatTemplate, HFTokenizer, chat_template
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "splice builds transformers and post-trains them",
    "two plus two is four, and four plus four is eight",
] * 20
# ChatML as a Hugging Face Jinja template: what transformers runs, and what the "chatml"
# preset reproduces without Jinja.
CHATML_JINJA = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "two plus two?"},
    {"role": "assistant", "content": "four"},
    {"role": "user", "content": "and {eos_token} four plus four?"},  # placeholders stay literal
]


def _train_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@pytest.fixture
def tok_dir(tmp_path):
    _train_bpe().save(str(tmp_path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|endoftext|>",
        "eos_token": {
            "__type": "AddedToken",
            "content": "<|im_end|>",
            "special": True,
        },  # object form
        "pad_token": "<pad>",
        "chat_template": CHATML_JINJA,
        "splice_chat_template": "chatml",
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_encode_decode_round_trip(tok_dir):
    tok = HFTokenizer.from_pretrained(tok_dir)
    text = "the lazy fox post-trains four dogs"
    ids = tok.encode(text)
    assert len(ids) < len(text)  # merges were learned
    assert tok.decode(ids) == text
    assert tok.vocab_size == 300


def test_special_token_ids(tok_dir):
    tok = HFTokenizer.from_pretrained(tok_dir)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 2, 3)  # trainer order of SPECIALS
    ids = tok.encode("four", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "four"
    assert tok.decode(ids, skip_special=False) == "<|endoftext|>four<|im_end|>"
    # special tokens written in the text are single ids
    assert tok.encode("<|im_start|>user") == [1, *tok.encode("user")]


def test_matches_transformers_tokenizer(tok_dir):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(tok_dir)
    ours = HFTokenizer.from_pretrained(tok_dir)
    text = "splice builds four transformers, quickly!"
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (
        theirs.bos_token_id,
        theirs.eos_token_id,
        theirs.pad_token_id,
    )
    for gen in (False, True):
        want = theirs.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=gen)
        assert ours.render_chat(CONVERSATION, add_generation_prompt=gen) == want
    want_ids = theirs.apply_chat_template(
        CONVERSATION, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert ours.apply_chat_template(CONVERSATION, add_generation_prompt=True) == list(want_ids)


def test_chat_template_syntax():
    tmpl = ChatTemplate(
        prefix="{bos_token}",
        messages={"user": "U:{content}\n", "default": "[{role}] {content}{eos_token}\n"},
        generation_prompt="A:",
        default_system="sys {x}",
    )
    out = tmpl.render(
        [{"role": "user", "content": "hi {role}"}],
        add_generation_prompt=True,
        bos_token="<s>",
        eos_token="</s>",
    )
    # default_system is inserted, unknown placeholders ({x}) and placeholders inside content
    # are literal, "user" has its own format and "system" falls back to "default".
    assert out == "<s>[system] sys {x}</s>\nU:hi {role}\nA:"
    with pytest.raises(ValueError, match=r"messages\[0\].role='tool'"):
        ChatTemplate(messages={"user": "{content}"}).render([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="unknown chat template preset 'jinja'"):
        chat_template("jinja")


def test_prompt_completion_split_for_sft():
    prompt, completion = chat_template("chatml").prompt_completion(CONVERSATION[:3])
    assert prompt.endswith("<|im_start|>assistant\n")
    assert completion == "four<|im_end|>\n"


def test_llama3_preset_strips_and_adds_bos():
    out = chat_template("llama3").render(
        [{"role": "user", "content": " hi \n"}],
        add_generation_prompt=True,
        bos_token="<|begin_of_text|>",
    )
    assert out == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_jinja_only_template_gives_clear_error(tok_dir):
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    del config["splice_chat_template"]
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config))
    tok = HFTokenizer.from_pretrained(tok_dir)
    with pytest.raises(ValueError, match="Jinja 'chat_template', which splice does not run"):
        tok.render_chat(CONVERSATION)


def test_save_pretrained_round_trip(tok_dir, tmp_path):
    tok = HFTokenizer.from_pretrained(tok_dir)
    tok.save_pretrained(tmp_path / "out")
    again = HFTokenizer.from_pretrained(tmp_path / "out")
    assert again.encode("four plus four", bos=True) == tok.encode("four plus four", bos=True)
    assert again.chat_template == tok.chat_template
    assert again.render_chat(CONVERSATION) == tok.render_chat(CONVERSATION)


def test_special_token_not_in_vocab_is_named(tok_dir):
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config["pad_token"] = "<|no_such_token|>"
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"pad_token='<\|no_such_token\|>' is not in the tokenizer's vocabulary"
    ):
        HFTokenizer.from_pretrained(tok_dir)


def test_no_bos_token_means_bos_flag_adds_nothing(tok_dir):
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config["bos_token"] = None  # like Qwen2
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config))
    tok = HFTokenizer.from_pretrained(tok_dir)
    assert tok.bos_id is None
    assert tok.encode("four", bos=True) == tok.encode("four")
