"""A tiny Llama-layout Hugging Face folder for tests and docs: what ``transformers`` would save.

``write_tiny_llama(path)`` trains a small byte-level BPE tokenizer on a few sentences, builds a
randomly initialised GQA decoder (RMSNorm, SwiGLU, RoPE) and writes ``config.json``,
``model.safetensors``, ``tokenizer.json`` and ``tokenizer_config.json``. The folder loads with
``splice.hf.load_pretrained`` and with ``transformers``' ``Auto*.from_pretrained`` alike, so
parity tests can run a peer library on the very same checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

DEFAULT_TEXTS = ("The capital of France is Paris. Once upon a time",)


def write_tiny_llama(
    path: str | Path,
    *,
    texts: Sequence[str] = DEFAULT_TEXTS,
    vocab_size: int = 300,
    d_model: int = 32,
    max_seq_len: int = 128,
    seed: int = 0,
    init_std: float | None = None,
) -> Path:
    """Write the folder at ``path`` and return it.

    Args:
        texts: the tokenizer's training text (each repeated 10 times).
        vocab_size: BPE vocabulary size, special tokens included.
        d_model / max_seq_len: model width and longest sequence (``max_position_embeddings``).
        seed: ``torch.manual_seed`` before the weights are drawn.
        init_std: weight scale; larger than the default makes logits far from uniform.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from splice.hf import HFTokenizer, chat_template, save_pretrained
    from splice.models.build import build_model

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([t for t in texts for _ in range(10)], trainer)
    tok = HFTokenizer(bpe, bos_token="<s>", eos_token="</s>", chat_template=chat_template("chatml"))
    torch.manual_seed(seed)
    model = build_model(
        {
            "type": "decoder",
            "vocab_size": tok.vocab_size,
            "d_model": d_model,
            "n_layers": 2,
            "max_seq_len": max_seq_len,
            "block": {
                "type": "pre_norm",
                "token_mixer": {"type": "mha", "n_heads": 4, "n_kv_heads": 2},
                "channel_mixer": {"type": "swiglu", "hidden_dim": 2 * d_model},
                "norm": {"type": "rmsnorm"},
            },
            "final_norm": {"type": "rmsnorm"},
            **({"init_std": init_std} if init_std is not None else {}),
        }
    )
    return save_pretrained(model, Path(path), tokenizer=tok)


__all__ = ["DEFAULT_TEXTS", "write_tiny_llama"]
