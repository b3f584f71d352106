"""Hugging Face checkpoints and tokenizers in and out, without ``transformers`` at run time.

``load_pretrained(path) -> (model, tokenizer | None)`` reads ``config.json`` and
``model.safetensors`` (or a sharded index) of any layout a plugin registers through
``register_hf_architectures`` (Llama, Qwen2 and GPT-2 with splice-mha, Mixtral with
splice-moe); ``save_pretrained(model, path)`` writes the same layout back. See
``docs/loading-models.md``.
"""

from splice.deprecation import deprecated_attribute
from splice.hf.chat import PRESETS, ChatTemplate, chat_template
from splice.hf.convert import all_architectures, architecture_for, architecture_of, config_from_hf
from splice.hf.loading import load_config, load_model, load_pretrained, read_hf_config
from splice.hf.safetensors_io import CheckpointError
from splice.hf.saving import save_pretrained
from splice.hf.tokenizer import HFTokenizer

__all__ = [
    "PRESETS",
    "ChatTemplate",
    "CheckpointError",
    "HFTokenizer",
    "all_architectures",
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

# ARCHITECTURES was a dict of the core's built-in layouts; they moved to splice-mha.
__getattr__ = deprecated_attribute(
    "splice.hf",
    {"ARCHITECTURES": ("splice.hf.all_architectures()", all_architectures)},
    removed_in="splice-core 0.3.0",
)
