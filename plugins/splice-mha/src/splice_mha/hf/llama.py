"""Llama and Qwen2: RMSNorm, SwiGLU, RoPE, grouped-query attention.

The two share one tensor layout; Qwen2 differs by biases on the q/k/v projections
(none on ``o_proj``) where Llama has ``attention_bias`` for all four, and by
``mlp_bias`` existing only on Llama. Sliding-window attention (Qwen2's
``use_sliding_window``) is not implemented and is rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splice.hf.architecture import Renamer, layout_problems, require, rope_theta, unsupported
from splice.models.configs import DecoderConfig
from splice.nn.configs import PreNormBlockConfig, RMSNormConfig, RoPEConfig, SwiGLUConfig
from splice.nn.ffn import hidden_size
from torch import Tensor

#: Per-layer HF -> splice prefixes of the attention and the two norms: the part of a layer
#: every Llama-style family shares (Mixtral, Qwen-MoE add their own FFN pairs to it).
LLAMA_ATTENTION_PAIRS = [
    ("self_attn.q_proj.", "mixer.q_proj."),
    ("self_attn.k_proj.", "mixer.k_proj."),
    ("self_attn.v_proj.", "mixer.v_proj."),
    ("self_attn.o_proj.", "mixer.o_proj."),
    ("input_layernorm.", "norm1."),
    ("post_attention_layernorm.", "norm2."),
]
_LAYER_PAIRS = [
    *LLAMA_ATTENTION_PAIRS,
    ("mlp.gate_proj.", "ffn.gate."),
    ("mlp.up_proj.", "ffn.up."),
    ("mlp.down_proj.", "ffn.down."),
]
_RENAMER = Renamer(
    [
        ("model.embed_tokens.", "embed."),
        ("model.norm.", "final_norm."),
        ("lm_head.", "lm_head."),
        *((f"model.layers.{{i}}.{hf}", f"blocks.{{i}}.{sp}") for hf, sp in _LAYER_PAIRS),
    ]
)


class LlamaArchitecture:
    """``LlamaForCausalLM`` (``qkv_bias_only=False``) or ``Qwen2ForCausalLM`` (``True``)."""

    def __init__(self, model_type: str, hf_class: str, *, qkv_bias_only: bool) -> None:
        self.model_type = model_type
        self.hf_class = hf_class
        self.qkv_bias_only = qkv_bias_only

    # config ----------------------------------------------------------------------------
    def config_to_splice(self, hf: Mapping[str, Any]) -> DecoderConfig:
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise unsupported("hidden_act", act, "'silu' (SwiGLU)")
        if hf.get("use_sliding_window", False):
            raise unsupported(
                "use_sliding_window", True, "false (sliding-window attention is not implemented)"
            )
        bad_layers = [t for t in hf.get("layer_types") or [] if t != "full_attention"]
        if bad_layers:
            raise unsupported("layer_types", bad_layers[0], "'full_attention' on every layer")
        d_model, n_heads = require(hf, "hidden_size"), require(hf, "num_attention_heads")
        head_dim = hf.get("head_dim") or d_model // n_heads
        if self.qkv_bias_only:
            bias, qkv_bias, mlp_bias = False, True, False
        else:
            bias = qkv_bias = bool(hf.get("attention_bias", False))
            mlp_bias = bool(hf.get("mlp_bias", False))
        eps = float(hf.get("rms_norm_eps", 1e-6))
        mixer = {
            "type": "mha",
            "n_heads": n_heads,
            "n_kv_heads": hf.get("num_key_value_heads") or n_heads,
            "head_dim": head_dim if head_dim * n_heads != d_model else None,
            "bias": bias,
            "qkv_bias": qkv_bias,
            "dropout": float(hf.get("attention_dropout", 0.0)),
        }
        return DecoderConfig(
            vocab_size=require(hf, "vocab_size"),
            d_model=d_model,
            n_layers=require(hf, "num_hidden_layers"),
            max_seq_len=hf.get("max_position_embeddings", 2048),
            block=PreNormBlockConfig(
                token_mixer=mixer,
                channel_mixer=SwiGLUConfig(
                    hidden_dim=require(hf, "intermediate_size"), bias=mlp_bias
                ),
                norm=RMSNormConfig(eps=eps),
            ),
            positional=RoPEConfig(theta=rope_theta(hf)),
            final_norm=RMSNormConfig(eps=eps),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            init_std=float(hf.get("initializer_range", 0.02)),
        )

    def export_problems(self, cfg: DecoderConfig) -> list[str]:
        problems = layout_problems(cfg, norm="rmsnorm", positional="rope")
        blk, tm, ffn = cfg.block, cfg.block.token_mixer, cfg.block.channel_mixer
        if tm.type != "mha" or getattr(tm, "qk_norm", False):
            problems.append("block.token_mixer: expected 'mha' without qk_norm")
        elif self.qkv_bias_only and (tm.bias or tm.qkv_bias is not True):
            problems.append("block.token_mixer: Qwen2 needs qkv_bias=True and bias=False")
        elif not self.qkv_bias_only and tm.bias != (
            tm.bias if tm.qkv_bias is None else tm.qkv_bias
        ):
            problems.append("block.token_mixer: Llama needs the same bias on q/k/v and o")
        if ffn.type != "swiglu":
            problems.append(f"block.channel_mixer.type={ffn.type!r}, expected 'swiglu'")
        elif self.qkv_bias_only and ffn.bias:
            problems.append("block.channel_mixer.bias: Qwen2 has no MLP bias")
        if blk.dropout or cfg.embedding_dropout:
            problems.append("block.dropout / embedding_dropout: Llama and Qwen2 have none")
        return problems

    def config_to_hf(self, cfg: DecoderConfig) -> dict[str, Any]:
        tm, ffn = cfg.block.token_mixer, cfg.block.channel_mixer
        theta = cfg.positional.theta
        out: dict[str, Any] = {
            "architectures": [self.hf_class],
            "model_type": self.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "intermediate_size": hidden_size(ffn.hidden_dim, ffn.multiple, cfg.d_model),
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": tm.n_heads,
            "num_key_value_heads": tm.kv_heads,
            "head_dim": tm.head_dim_for(cfg.d_model),
            "hidden_act": "silu",
            "max_position_embeddings": cfg.max_seq_len,
            "rms_norm_eps": cfg.block.norm.eps,
            # Both spellings: transformers 5 reads rope_parameters, 4.x reads rope_theta.
            "rope_theta": theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": theta},
            "tie_word_embeddings": cfg.tie_embeddings,
            "initializer_range": cfg.init_std,
            "attention_dropout": tm.dropout,
        }
        if self.qkv_bias_only:
            out["use_sliding_window"] = False
        else:
            out["attention_bias"] = bool(tm.bias)
            out["mlp_bias"] = bool(ffn.bias)
        return out

    # weights ---------------------------------------------------------------------------
    def canonical_name(self, name: str, cfg: DecoderConfig) -> str | None:
        if name.endswith("rotary_emb.inv_freq") or (
            cfg.tie_embeddings and name == "lm_head.weight"
        ):
            return None
        return name

    def weights_to_splice(self, hf: Mapping[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
        return {_must(_RENAMER.to_splice(k), k): v for k, v in hf.items()}

    def weights_to_hf(self, state: Mapping[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
        out = {_must(_RENAMER.to_hf(k), k): v for k, v in state.items()}
        if cfg.tie_embeddings:
            out.pop("lm_head.weight", None)
        return out


def _must(mapped: str | None, name: str) -> str:
    if mapped is None:
        raise ValueError(f"tensor {name!r} has no counterpart in the Llama/Qwen2 layout")
    return mapped


LLAMA = LlamaArchitecture("llama", "LlamaForCausalLM", qkv_bias_only=False)
QWEN2 = LlamaArchitecture("qwen2", "Qwen2ForCausalLM", qkv_bias_only=True)
