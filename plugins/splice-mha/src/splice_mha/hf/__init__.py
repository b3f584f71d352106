"""Hugging Face layouts whose attention is splice-mha's: Llama, Qwen2 and GPT-2.

Registered with the core through ``register_hf_architectures`` (as splice-moe registers
Mixtral), so ``splice.hf.load_pretrained`` / ``save_pretrained`` handle these
``model_type`` values only where splice-mha is installed. The layout helpers every
architecture shares (``Renamer``, ``layout_problems``, ``require``, ``rope_theta``,
``unsupported``) stay in ``splice.hf.architecture``; a plugin layout built on Llama's
attention (Mixtral, Qwen-MoE, ...) imports ``LLAMA`` / ``LLAMA_ATTENTION_PAIRS`` from here.
"""

from __future__ import annotations

from splice_mha.hf.gpt2 import GPT2, GPT2Architecture
from splice_mha.hf.llama import LLAMA, LLAMA_ATTENTION_PAIRS, QWEN2, LlamaArchitecture

__all__ = [
    "GPT2",
    "LLAMA",
    "LLAMA_ATTENTION_PAIRS",
    "QWEN2",
    "GPT2Architecture",
    "LlamaArchitecture",
    "gpt2_architecture",
    "llama_architecture",
    "qwen2_architecture",
]


def llama_architecture() -> LlamaArchitecture:
    """Factory named in the plugin's ``register_hf_architectures`` hook."""
    return LLAMA


def qwen2_architecture() -> LlamaArchitecture:
    """Factory named in the plugin's ``register_hf_architectures`` hook."""
    return QWEN2


def gpt2_architecture() -> GPT2Architecture:
    """Factory named in the plugin's ``register_hf_architectures`` hook."""
    return GPT2
