"""GPT-2: learned positions, LayerNorm with bias, GELU MLP with biases, tied head.

GPT-2 stores its linear layers as ``Conv1D``: ``y = x @ W + b`` with ``W`` of shape
``(in, out)``, the transpose of ``nn.Linear.weight``. The attention's q, k and v
projections are fused in one ``c_attn`` of shape ``(D, 3D)``, split here along
the output dim into splice's ``q_proj``/``k_proj``/``v_proj``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from splice.hf.architecture import Renamer, layout_problems, require, unsupported
from splice.models.configs import DecoderConfig
from splice.nn.configs import (
    LayerNormConfig,
    LearnedPositionalConfig,
    MLPConfig,
    PreNormBlockConfig,
)
from splice.nn.ffn import hidden_size
from torch import Tensor

# transformers' activation_function name -> splice MLPConfig.activation
_ACTIVATIONS: dict[str, Any] = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_RENAMER = Renamer(
    [
        ("transformer.wte.", "embed."),
        ("transformer.wpe.", "pos_embed."),
        ("transformer.ln_f.", "final_norm."),
        ("lm_head.", "lm_head."),
        ("transformer.h.{i}.ln_1.", "blocks.{i}.norm1."),
        ("transformer.h.{i}.ln_2.", "blocks.{i}.norm2."),
        ("transformer.h.{i}.attn.c_proj.", "blocks.{i}.mixer.o_proj."),
        ("transformer.h.{i}.mlp.c_fc.", "blocks.{i}.ffn.up."),
        ("transformer.h.{i}.mlp.c_proj.", "blocks.{i}.ffn.down."),
    ]
)
_C_ATTN = re.compile(r"^transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)$")
_QKV = re.compile(r"^blocks\.(\d+)\.mixer\.([qkv])_proj\.(weight|bias)$")
_CONV1D = (".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


class GPT2Architecture:
    """``GPT2LMHeadModel``."""

    model_type = "gpt2"
    hf_class = "GPT2LMHeadModel"

    def config_to_splice(self, hf: Mapping[str, Any]) -> DecoderConfig:
        act = hf.get("activation_function", "gelu_new")
        if act not in _ACTIVATIONS:
            raise unsupported("activation_function", act, f"one of {sorted(_ACTIVATIONS)}")
        for field, ok in (
            ("scale_attn_weights", True),
            ("scale_attn_by_inverse_layer_idx", False),
            ("add_cross_attention", False),
        ):
            if hf.get(field, ok) != ok:
                raise unsupported(field, hf[field], repr(ok))
        d_model, eps = require(hf, "n_embd"), float(hf.get("layer_norm_epsilon", 1e-5))
        return DecoderConfig(
            vocab_size=require(hf, "vocab_size"),
            d_model=d_model,
            n_layers=require(hf, "n_layer"),
            max_seq_len=require(hf, "n_positions"),
            block=PreNormBlockConfig(
                token_mixer={
                    "type": "mha",
                    "n_heads": require(hf, "n_head"),
                    "bias": True,
                    "dropout": float(hf.get("attn_pdrop", 0.0)),
                },
                channel_mixer=MLPConfig(
                    hidden_dim=hf.get("n_inner") or 4 * d_model,
                    activation=_ACTIVATIONS[act],
                    bias=True,
                ),
                norm=LayerNormConfig(eps=eps),
                dropout=float(hf.get("resid_pdrop", 0.0)),
            ),
            positional=LearnedPositionalConfig(),
            final_norm=LayerNormConfig(eps=eps),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            init_std=float(hf.get("initializer_range", 0.02)),
            embedding_dropout=float(hf.get("embd_pdrop", 0.0)),
        )

    def export_problems(self, cfg: DecoderConfig) -> list[str]:
        problems = layout_problems(cfg, norm="layernorm", positional="learned")
        blk, tm, ffn = cfg.block, cfg.block.token_mixer, cfg.block.channel_mixer
        if tm.type != "mha" or tm.qk_norm or tm.kv_heads != tm.n_heads:
            problems.append("block.token_mixer: GPT-2 needs 'mha' without GQA or qk_norm")
        elif (
            not tm.bias
            or tm.qkv_bias is False
            or tm.head_dim_for(cfg.d_model) * tm.n_heads != cfg.d_model
        ):
            problems.append(
                "block.token_mixer: GPT-2 needs biases everywhere and head_dim = d_model / n_heads"
            )
        if ffn.type != "mlp" or not ffn.bias or ffn.dropout:
            problems.append(
                "block.channel_mixer: GPT-2 needs 'mlp' with bias=True and no own dropout"
            )
        for field, norm in (("block.norm", blk.norm), ("final_norm", cfg.final_norm)):
            if norm.type == "layernorm" and not norm.bias:
                problems.append(f"{field}.bias: GPT-2's layer norms have a bias")
        return problems

    def config_to_hf(self, cfg: DecoderConfig) -> dict[str, Any]:
        tm, ffn = cfg.block.token_mixer, cfg.block.channel_mixer
        act = {"gelu_tanh": "gelu_new"}.get(ffn.activation, ffn.activation)
        return {
            "architectures": [self.hf_class],
            "model_type": self.model_type,
            "vocab_size": cfg.vocab_size,
            "n_embd": cfg.d_model,
            "n_layer": cfg.n_layers,
            "n_head": tm.n_heads,
            "n_positions": cfg.max_seq_len,
            "n_inner": hidden_size(ffn.hidden_dim, ffn.multiple, cfg.d_model),
            "activation_function": act,
            "layer_norm_epsilon": cfg.block.norm.eps,
            "attn_pdrop": tm.dropout,
            "resid_pdrop": cfg.block.dropout,
            "embd_pdrop": cfg.embedding_dropout,
            "initializer_range": cfg.init_std,
            "tie_word_embeddings": cfg.tie_embeddings,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
        }

    def canonical_name(self, name: str, cfg: DecoderConfig) -> str | None:
        # Old checkpoints (the original gpt2 upload) carry the causal-mask buffers and no
        # "transformer." prefix.
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            return None
        if cfg.tie_embeddings and name == "lm_head.weight":
            return None
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name
        return name

    def weights_to_splice(self, hf: Mapping[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, t in hf.items():
            m = _C_ATTN.match(name)
            if m:
                i, kind = m.groups()
                # weight (D, 3D) Conv1D -> three (D, D) Linear weights; bias (3D,) -> three (D,)
                parts = t.chunk(3, dim=-1)
                for proj, part in zip("qkv", parts):
                    out[f"blocks.{i}.mixer.{proj}_proj.{kind}"] = (
                        part.t() if kind == "weight" else part
                    )
                continue
            target = _RENAMER.to_splice(name)
            if target is None:
                raise ValueError(f"tensor {name!r} has no counterpart in the GPT-2 layout")
            out[target] = t.t() if name.endswith(_CONV1D) else t
        return out

    def weights_to_hf(self, state: Mapping[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
        for name, t in state.items():
            m = _QKV.match(name)
            if m:
                i, proj, kind = m.groups()
                qkv.setdefault((i, kind), {})[proj] = t
                continue
            target = _RENAMER.to_hf(name)
            if target is None:
                raise ValueError(f"splice tensor {name!r} has no counterpart in the GPT-2 layout")
            out[target] = t.t() if target.endswith(_CONV1D) else t
        for (i, kind), parts in sorted(qkv.items()):
            q, k, v = parts["q"], parts["k"], parts["v"]
            fused = (
                torch.cat([q.t(), k.t(), v.t()], dim=1)
                if kind == "weight"
                else torch.cat([q, k, v])
            )
            out[f"transformer.h.{i}.attn.c_attn.{kind}"] = fused  # (D, 3D) or (3D,)
        if cfg.tie_embeddings:
            out.pop("lm_head.weight", None)
        return out


GPT2 = GPT2Architecture()
