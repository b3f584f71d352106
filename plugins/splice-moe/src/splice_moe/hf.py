"""Hugging Face Mixtral checkpoints (``MixtralForCausalLM``) in and out.

Mixtral is Llama attention + RMSNorm + RoPE with every FFN replaced by a sparse MoE
block: a softmax router ``block_sparse_moe.gate`` (E, D), top-k, renormalised, and
``E`` SwiGLU experts ``experts.{j}.w1`` (gate, (H, D)), ``w3`` (up, (H, D)),
``w2`` (down, (D, H)). splice stores the experts batched: ``ffn.experts.gate_up``
(E, 2H, D) = per expert ``cat(w1, w3)``, and ``ffn.experts.down`` (E, D, H).

Registered with the core through ``register_hf_architectures`` so that
``splice.hf.load_pretrained`` / ``save_pretrained`` handle ``model_type == "mixtral"``.

The balancing loss follows transformers: ``router_aux_loss_coef`` times one loss pooled
over all layers (``aux_loss_scope="model"``), and only when ``output_router_logits`` is
set (otherwise ``aux_loss_weight=0``).

Limits: every layer is an MoE layer (no overrides); the experts of one layer must sit
in one safetensors shard (the core loads one shard at a time); Mixtral's
``router_jitter_noise`` jitters the router input only in splice (Mixtral also jitters
the experts' input) — it matters in training only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError
from splice.hf.architecture import Renamer, require, unsupported
from splice.hf.safetensors_io import CheckpointError
from splice.models.configs import DecoderConfig
from splice_mha.hf import LLAMA, LLAMA_ATTENTION_PAIRS
from torch import Tensor

from splice_moe.configs import MoEConfig

_LAYER_PAIRS = [*LLAMA_ATTENTION_PAIRS, ("block_sparse_moe.gate.", "ffn.router.gate.")]
_RENAMER = Renamer(
    [
        ("model.embed_tokens.", "embed."),
        ("model.norm.", "final_norm."),
        ("lm_head.", "lm_head."),
        *((f"model.layers.{{i}}.{hf}", f"blocks.{{i}}.{sp}") for hf, sp in _LAYER_PAIRS),
    ]
)
_HF_EXPERT = re.compile(
    r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$"
)
_SPLICE_EXPERT = re.compile(r"^blocks\.(\d+)\.ffn\.experts\.(gate_up|down)$")


def _hf_expert(layer: int | str, expert: int, w: str) -> str:
    return f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{w}.weight"


class MixtralArchitecture:
    """``MixtralForCausalLM`` <-> a splice decoder whose every FFN is ``moe``."""

    model_type = "mixtral"
    hf_class = "MixtralForCausalLM"

    # config ----------------------------------------------------------------------------
    def config_to_splice(self, hf: Mapping[str, Any]) -> DecoderConfig:
        if hf.get("sliding_window") is not None:
            raise unsupported(
                "sliding_window",
                hf["sliding_window"],
                "null (sliding-window attention is not implemented)",
            )
        n_experts = require(hf, "num_local_experts")
        top_k = require(hf, "num_experts_per_tok")
        dense = LLAMA.config_to_splice({k: v for k, v in hf.items() if k != "mlp_bias"})
        data = dense.model_dump(mode="json")
        try:
            moe = MoEConfig(
                n_experts=n_experts,
                top_k=top_k,
                expert_hidden=require(hf, "intermediate_size"),
                activation="swiglu",
                scoring="softmax",
                normalize_top_k=True,
                jitter=float(hf.get("router_jitter_noise") or 0.0),
                # transformers adds router_aux_loss_coef * its pooled balancing loss only
                # when output_router_logits is set: the same loss, on the same condition.
                aux_loss_weight=float(hf.get("router_aux_loss_coef") or 0.0)
                if hf.get("output_router_logits")
                else 0.0,
                aux_loss_scope="model",
            )
        except ValidationError as exc:  # e.g. num_experts_per_tok > num_local_experts
            why = "; ".join(e["msg"] for e in exc.errors())
            raise CheckpointError(
                f"config.json: num_local_experts={n_experts}, num_experts_per_tok={top_k}: {why}"
            ) from None
        data["block"]["channel_mixer"] = moe.model_dump(mode="json")
        return DecoderConfig.model_validate(data)

    def _dense_view(self, cfg: DecoderConfig) -> DecoderConfig:
        """``cfg`` with a SwiGLU of the expert width in place of the MoE (for Llama's checks)."""
        ffn = cfg.block.channel_mixer
        data = cfg.model_dump(mode="json")
        width = ffn.expert_width(cfg.d_model) if isinstance(ffn, MoEConfig) else 8
        data["block"]["channel_mixer"] = {"type": "swiglu", "hidden_dim": width}
        return DecoderConfig.model_validate(data)

    def export_problems(self, cfg: DecoderConfig) -> list[str]:
        ffn = cfg.block.channel_mixer
        if not isinstance(ffn, MoEConfig):
            return [f"block.channel_mixer.type={ffn.type!r}, expected 'moe'"]
        problems = LLAMA.export_problems(self._dense_view(cfg))
        want = {
            "activation": "swiglu",
            "n_shared": 0,
            "scoring": "softmax",
            "normalize_top_k": True,
            "route_scale": 1.0,
            "capacity_factor": None,
            "bias_update_rate": 0.0,
            "router_noise": 0.0,
            "expert_layout": "batched",
        }
        if ffn.aux_loss_weight > 0:  # transformers' balancing loss is pooled over layers
            want["aux_loss_scope"] = "model"
        for field, value in want.items():
            if getattr(ffn, field) != value:
                problems.append(
                    f"block.channel_mixer.{field}={getattr(ffn, field)!r}, Mixtral has {value!r}"
                )
        return problems

    def config_to_hf(self, cfg: DecoderConfig) -> dict[str, Any]:
        ffn: MoEConfig = cfg.block.channel_mixer
        out = LLAMA.config_to_hf(self._dense_view(cfg))
        for key in ("attention_bias", "mlp_bias"):
            out.pop(key, None)
        out.update(
            architectures=[self.hf_class],
            model_type=self.model_type,
            intermediate_size=ffn.expert_width(cfg.d_model),
            num_local_experts=ffn.n_experts,
            num_experts_per_tok=ffn.top_k,
            router_jitter_noise=ffn.jitter,
            router_aux_loss_coef=ffn.aux_loss_weight,
            output_router_logits=ffn.aux_loss_weight > 0,
            sliding_window=None,
        )
        return out

    # weights ---------------------------------------------------------------------------
    def canonical_name(self, name: str, cfg: DecoderConfig) -> str | None:
        return LLAMA.canonical_name(name, cfg)

    def weights_to_splice(self, hf: Mapping[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
        n_experts = cfg.block.channel_mixer.n_experts
        out: dict[str, Tensor] = {}
        experts: dict[str, dict[tuple[int, str], Tensor]] = {}  # layer -> (expert, w) -> tensor
        for name, value in hf.items():
            m = _HF_EXPERT.match(name)
            if m:
                experts.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = value
                continue
            mapped = _RENAMER.to_splice(name)
            if mapped is None:
                raise CheckpointError(f"tensor {name!r} has no counterpart in the Mixtral layout")
            out[mapped] = value
        for layer, parts in experts.items():
            missing = [
                _hf_expert(layer, e, w)
                for e in range(n_experts)
                for w in ("w1", "w2", "w3")
                if (e, w) not in parts
            ]
            if missing:
                raise CheckpointError(
                    f"missing expert tensor(s) {missing[:3]} (layer {layer}): every expert of "
                    "a layer must be present, in one shard"
                )
            out[f"blocks.{layer}.ffn.experts.gate_up"] = torch.stack(
                [torch.cat([parts[(e, "w1")], parts[(e, "w3")]]) for e in range(n_experts)]
            )  # (E, 2H, D)
            out[f"blocks.{layer}.ffn.experts.down"] = torch.stack(
                [parts[(e, "w2")] for e in range(n_experts)]
            )  # (E, D, H)
        return out

    def weights_to_hf(self, state: Mapping[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name, value in state.items():
            m = _SPLICE_EXPERT.match(name)
            if m:
                layer, which = m.group(1), m.group(2)
                for e in range(value.shape[0]):
                    if which == "gate_up":
                        w1, w3 = value[e].chunk(2, dim=0)  # (H, D) each
                        out[_hf_expert(layer, e, "w1")] = w1
                        out[_hf_expert(layer, e, "w3")] = w3
                    else:
                        out[_hf_expert(layer, e, "w2")] = value[e]
                continue
            mapped = _RENAMER.to_hf(name)
            if mapped is None:
                raise ValueError(f"tensor {name!r} has no counterpart in the Mixtral layout")
            out[mapped] = value
        if cfg.tie_embeddings:
            out.pop("lm_head.weight", None)
        return out


MIXTRAL = MixtralArchitecture()


def mixtral_architecture() -> MixtralArchitecture:
    """Factory named in the plugin's ``register_hf_architectures`` hook."""
    return MIXTRAL
