"""Hugging Face checkpoints and tokenizers in and out, without ``transformers`` at run time.

``load_pretrained(path) -> (model, tokenizer | None)`` reads ``config.json`` and
``model.safetensors`` (or a sharded index) of a Llama, Qwen2 or GPT-2 checkpoint;
``save_pretrained(model, path)`` writes the same layout back. See
``docs/loading-models.md``.
"""

from splice.hf.chat import PRESETS, ChatTemplate, chat_template
from splice.hf.convert import ARCHITECTURES, architecture_for, architecture_of, config_from_hf
from splice.hf.loading import load_config, load_model, load_pretrained, read_hf_config
from splice.hf.safetensors_io import CheckpointError
from splice.hf.saving import save_pretrained
from splice.hf.tokenizer import HFTokenizer

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "ChatTemplate",
    "CheckpointError",
    "HFTokenizer",
    "architecture_for",
    "architecture_of",
    "chat_template",
    "config_from_hf",
    "load_config",
    "load_model",
    "load_pretrained",
    "read_hf_config",
    "save_pretrained",
]
