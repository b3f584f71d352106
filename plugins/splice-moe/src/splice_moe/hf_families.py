"""Qwen2-MoE, Qwen3-MoE, DeepSeek-V3 and ERNIE 4.5 (text) checkpoints in and out.

What each family's ``config.json`` means in splice (the shared layout: ``hf_layout``):

- **Qwen2-MoE**: Qwen2 attention (q/k/v bias); softmax router, top-k, renormalised only with
  ``norm_topk_prob``; one shared expert scaled by ``sigmoid(shared_expert_gate(x))``; layer
  ``i`` is sparse unless ``i in mlp_only_layers`` or ``(i + 1) % decoder_sparse_step != 0``.
- **Qwen3-MoE**: the same routing without a shared expert; attention with QK-norm.
- **DeepSeek-V3**: multi-head latent attention (splice-mha's ``mla``; the checkpoint's
  interleaved RoPE rows are permuted to rotate-half); sigmoid scores, group-limited top-k
  (``n_group``, ``topk_group``), ``e_score_correction_bias`` as the router's selection bias
  (what aux-loss-free balancing updates), ``norm_topk_prob``, ``routed_scaling_factor``,
  ``n_shared_experts`` always-on experts; the first ``first_k_dense_replace`` layers dense.
- **ERNIE 4.5 MoE**: interleaved RoPE; softmax router whose top-k is chosen on the
  probabilities plus ``moe_statics.e_score_correction_bias``, renormalised; shared experts;
  layers ``moe_layer_start_index..moe_layer_end_index`` every ``moe_layer_interval`` sparse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from splice.hf.architecture import require, unsupported
from splice.models.configs import DecoderConfig
from splice_mha.hf import LLAMA_ATTENTION_PAIRS
from torch import Tensor

from splice_moe.configs import MoEConfig
from splice_moe.hf_layout import MoEFamily, RopeRows, moe_config

_MHA_PAIRS = [pair for pair in LLAMA_ATTENTION_PAIRS if pair[0].startswith("self_attn.")]


def _mha(
    hf: Mapping[str, Any], *, bias: bool, qkv_bias: bool, qk_norm: bool = False
) -> dict[str, Any]:
    if hf.get("use_sliding_window", False):
        raise unsupported(
            "use_sliding_window", True, "false (sliding-window attention is not implemented)"
        )
    d_model, n_heads = require(hf, "hidden_size"), require(hf, "num_attention_heads")
    head_dim = hf.get("head_dim") or d_model // n_heads
    return {
        "type": "mha",
        "n_heads": n_heads,
        "n_kv_heads": hf.get("num_key_value_heads") or n_heads,
        "head_dim": head_dim if head_dim * n_heads != d_model else None,
        "bias": bias,
        "qkv_bias": qkv_bias,
        "qk_norm": qk_norm,
        "dropout": float(hf.get("attention_dropout") or 0.0),
    }


def _mha_hf(cfg: DecoderConfig) -> dict[str, Any]:
    tm = cfg.block.token_mixer
    return {
        "num_attention_heads": tm.n_heads,
        "num_key_value_heads": tm.kv_heads,
        "head_dim": tm.head_dim_for(cfg.d_model),
        "attention_dropout": tm.dropout,
    }


def _mha_problems(tm: Any, *, qkv_bias: bool | None, qk_norm: bool) -> list[str]:
    """``qkv_bias=None``: q/k/v and o share one bias flag (``attention_bias``)."""
    if tm.type != "mha":
        return [f"block.token_mixer.type={tm.type!r}, expected 'mha'"]
    problems = []
    if tm.qk_norm != qk_norm:
        problems.append(f"block.token_mixer.qk_norm={tm.qk_norm}, the checkpoint has {qk_norm}")
    q_bias = tm.bias if tm.qkv_bias is None else tm.qkv_bias
    if qkv_bias is None and q_bias != tm.bias:
        problems.append("block.token_mixer: q/k/v and o must share one bias flag")
    elif qkv_bias is not None and (q_bias != qkv_bias or tm.bias):
        problems.append(f"block.token_mixer: needs qkv_bias={qkv_bias} and bias=False")
    return problems


def _aux_loss(hf: Mapping[str, Any]) -> dict[str, Any]:
    """transformers adds ``router_aux_loss_coef`` times one balancing loss pooled over the
    layers, and only with ``output_router_logits``: the same loss on the same condition."""
    coef = float(hf.get("router_aux_loss_coef") or 0.0) if hf.get("output_router_logits") else 0.0
    return {"aux_loss_weight": coef, "aux_loss_scope": "model"}


def _aux_problems(moe: MoEConfig) -> list[str]:
    if moe.aux_loss_weight > 0 and moe.aux_loss_scope != "model":
        return ["aux_loss_scope='layer': transformers pools its balancing loss over layers"]
    return []


def _aux_hf(moe: MoEConfig) -> dict[str, Any]:
    w = moe.aux_loss_weight
    return {"router_aux_loss_coef": w, "output_router_logits": w > 0}


def _want(moe: MoEConfig, **want: Any) -> list[str]:
    return [
        f"{k}={getattr(moe, k)!r}, the checkpoint has {v!r}"
        for k, v in want.items()
        if getattr(moe, k) != v
    ]


class QwenMoE(MoEFamily):
    """``Qwen2MoeForCausalLM`` (``shared=True``) or ``Qwen3MoeForCausalLM``."""

    shared_prefix = "mlp.shared_expert."

    def __init__(self, model_type: str, hf_class: str, *, qwen2: bool) -> None:
        self.model_type, self.hf_class, self.qwen2 = model_type, hf_class, qwen2

    def attention(self, hf: Mapping[str, Any]) -> dict[str, Any]:
        if self.qwen2:
            return _mha(hf, bias=False, qkv_bias=bool(hf.get("qkv_bias", True)))
        if float(hf.get("rms_norm_eps", 1e-6)) != 1e-6:
            raise unsupported("rms_norm_eps", hf["rms_norm_eps"], "1e-6 (splice's QK-norm eps)")
        bias = bool(hf.get("attention_bias", False))
        return _mha(hf, bias=bias, qkv_bias=bias, qk_norm=True)

    def moe(self, hf: Mapping[str, Any]) -> MoEConfig:
        shared = int(hf.get("shared_expert_intermediate_size") or 0) if self.qwen2 else 0
        if self.qwen2 and not shared:
            raise unsupported(
                "shared_expert_intermediate_size", shared, "> 0 (Qwen2-MoE's shared expert)"
            )
        return moe_config(
            "num_experts / num_experts_per_tok",
            n_experts=hf.get("num_experts") or require(hf, "num_local_experts"),
            top_k=require(hf, "num_experts_per_tok"),
            expert_hidden=require(hf, "moe_intermediate_size"),
            normalize_top_k=bool(hf.get("norm_topk_prob", False)),
            n_shared=1 if shared else 0,
            shared_hidden=shared or None,
            shared_gate=bool(shared),
            **_aux_loss(hf),
        )

    def sparse_layers(self, hf: Mapping[str, Any], n_layers: int) -> list[bool]:
        step = int(hf.get("decoder_sparse_step") or 1)
        dense = set(hf.get("mlp_only_layers") or [])
        return [i not in dense and (i + 1) % step == 0 for i in range(n_layers)]

    def attention_pairs(self) -> list[tuple[str, str]]:
        norms = (
            []
            if self.qwen2
            else [("self_attn.q_norm.", "mixer.q_norm."), ("self_attn.k_norm.", "mixer.k_norm.")]
        )
        return _MHA_PAIRS + norms

    def attention_problems(self, tm: Any, cfg: DecoderConfig) -> list[str]:
        if self.qwen2:
            return _mha_problems(tm, qkv_bias=True, qk_norm=False)
        problems = _mha_problems(tm, qkv_bias=None, qk_norm=True)
        if cfg.block.norm.eps != 1e-6:
            problems.append(
                "block.norm.eps: Qwen3-MoE's QK-norm shares rms_norm_eps, splice's is 1e-6"
            )
        return problems

    def moe_problems(self, moe: MoEConfig) -> list[str]:
        shared = {"n_shared": 1, "shared_gate": True} if self.qwen2 else {"n_shared": 0}
        want = dict(scoring="softmax", route_scale=1.0, n_groups=1, has_selection_bias=False)
        return _want(moe, **want, **shared) + _aux_problems(moe)

    def family_hf(self, cfg: DecoderConfig, moe: MoEConfig, sparse: list[bool]) -> dict[str, Any]:
        out = _mha_hf(cfg)
        tm = cfg.block.token_mixer
        out.update(
            num_experts=moe.n_experts,
            num_experts_per_tok=moe.top_k,
            moe_intermediate_size=moe.expert_width(cfg.d_model),
            norm_topk_prob=moe.normalize_top_k,
            decoder_sparse_step=1,
            mlp_only_layers=[i for i, s in enumerate(sparse) if not s],
            use_sliding_window=False,
            **_aux_hf(moe),
        )
        if self.qwen2:
            out.update(
                qkv_bias=bool(tm.qkv_bias),
                shared_expert_intermediate_size=moe.shared_width(cfg.d_model),
            )
        else:
            out.update(attention_bias=bool(tm.bias))
        return out


class DeepSeekV3(MoEFamily):
    """``DeepseekV3ForCausalLM``: MLA attention, sigmoid group-limited routing, shared experts."""

    model_type, hf_class = "deepseek_v3", "DeepseekV3ForCausalLM"
    bias_name = "mlp.gate.e_score_correction_bias"

    def attention(self, hf: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "type": "mla",
            "n_heads": require(hf, "num_attention_heads"),
            "kv_lora_rank": require(hf, "kv_lora_rank"),
            "q_lora_rank": hf.get("q_lora_rank"),
            "qk_nope_head_dim": require(hf, "qk_nope_head_dim"),
            "qk_rope_head_dim": require(hf, "qk_rope_head_dim"),
            "v_head_dim": require(hf, "v_head_dim"),
            "bias": bool(hf.get("attention_bias", False)),
            "dropout": float(hf.get("attention_dropout") or 0.0),
        }

    def moe(self, hf: Mapping[str, Any]) -> MoEConfig:
        n_shared = int(hf.get("n_shared_experts") or 0)
        width = require(hf, "moe_intermediate_size")
        return moe_config(
            "n_routed_experts / num_experts_per_tok / n_group / topk_group",
            n_experts=hf.get("n_routed_experts") or require(hf, "num_local_experts"),
            top_k=require(hf, "num_experts_per_tok"),
            expert_hidden=width,
            scoring="sigmoid",
            normalize_top_k=bool(hf.get("norm_topk_prob", True)),
            route_scale=float(hf.get("routed_scaling_factor", 1.0)),
            n_groups=int(hf.get("n_group") or 1),
            top_groups=hf.get("topk_group"),
            n_shared=n_shared,
            shared_hidden=width * n_shared or None,
            selection_bias=True,
        )

    def sparse_layers(self, hf: Mapping[str, Any], n_layers: int) -> list[bool]:
        first = int(hf.get("first_k_dense_replace") or 0)
        return [i >= first for i in range(n_layers)]

    def layers_problem(self, sparse: list[bool]) -> str | None:
        first = sparse.index(True)
        if any(not s for s in sparse[first:]):
            return (
                "dense layers after the first MoE layer: DeepSeek-V3 has only first_k_dense_replace"
            )
        return None

    def attention_pairs(self) -> list[tuple[str, str]]:
        names = ["q_proj", "q_a_proj", "q_b_proj", "kv_b_proj", "o_proj"]
        return [(f"self_attn.{n}.", f"mixer.{n}.") for n in names] + [
            ("self_attn.kv_a_proj_with_mqa.", "mixer.kv_a_proj."),
            ("self_attn.q_a_layernorm.", "mixer.q_a_norm."),
            ("self_attn.kv_a_layernorm.", "mixer.kv_a_norm."),
        ]

    def attention_problems(self, tm: Any, cfg: DecoderConfig) -> list[str]:
        if tm.type != "mla":
            return [f"block.token_mixer.type={tm.type!r}, expected 'mla'"]
        return [] if tm.norm_eps == 1e-6 else ["block.token_mixer.norm_eps: DeepSeek-V3's is 1e-6"]

    def moe_problems(self, moe: MoEConfig) -> list[str]:
        problems = _want(moe, scoring="sigmoid", has_selection_bias=True, shared_gate=False)
        if moe.n_shared and moe.shared_width(1) != moe.n_shared * moe.expert_width(1):
            problems.append("shared_hidden: DeepSeek-V3's shared experts have the routed width")
        return problems

    def family_hf(self, cfg: DecoderConfig, moe: MoEConfig, sparse: list[bool]) -> dict[str, Any]:
        tm = cfg.block.token_mixer
        return {
            "num_attention_heads": tm.n_heads,
            "num_key_value_heads": tm.n_heads,
            "kv_lora_rank": tm.kv_lora_rank,
            "q_lora_rank": tm.q_lora_rank,
            "qk_nope_head_dim": tm.qk_nope_head_dim,
            "qk_rope_head_dim": tm.qk_rope_head_dim,
            "v_head_dim": tm.v_head_dim,
            "attention_bias": tm.bias,
            "attention_dropout": tm.dropout,
            "rope_interleave": True,
            "n_routed_experts": moe.n_experts,
            "num_experts_per_tok": moe.top_k,
            "moe_intermediate_size": moe.expert_width(cfg.d_model),
            "n_shared_experts": moe.n_shared,
            "norm_topk_prob": moe.normalize_top_k,
            "routed_scaling_factor": moe.route_scale,
            "n_group": moe.n_groups,
            "topk_group": moe.top_groups or moe.n_groups,
            "first_k_dense_replace": sparse.index(True),
            "num_nextn_predict_layers": 0,
        }

    def rope_rows(self, cfg: DecoderConfig) -> RopeRows:
        tm = cfg.block.token_mixer
        if tm.type != "mla":
            return []
        d_qk = tm.qk_nope_head_dim + tm.qk_rope_head_dim
        return [
            ("mixer.q_proj.weight", tm.n_heads, d_qk, tm.qk_nope_head_dim),
            ("mixer.q_b_proj.weight", tm.n_heads, d_qk, tm.qk_nope_head_dim),
            ("mixer.kv_a_proj.weight", 1, tm.kv_lora_rank + tm.qk_rope_head_dim, tm.kv_lora_rank),
            ("mixer.kv_a_proj.bias", 1, tm.kv_lora_rank + tm.qk_rope_head_dim, tm.kv_lora_rank),
        ]


class Ernie45MoE(MoEFamily):
    """``Ernie4_5_MoeForCausalLM`` (text): interleaved RoPE, biased softmax top-k, shared experts."""

    model_type, hf_class = "ernie4_5_moe", "Ernie4_5_MoeForCausalLM"
    bias_name = "mlp.moe_statics.e_score_correction_bias"

    def attention(self, hf: Mapping[str, Any]) -> dict[str, Any]:
        if hf.get("use_bias", False):
            raise unsupported("use_bias", True, "false (biased experts are not implemented)")
        return _mha(hf, bias=False, qkv_bias=False)

    def moe(self, hf: Mapping[str, Any]) -> MoEConfig:
        n_shared = int(hf.get("moe_num_shared_experts") or 0)
        width = require(hf, "moe_intermediate_size")
        return moe_config(
            "moe_num_experts / moe_k",
            n_experts=require(hf, "moe_num_experts"),
            top_k=require(hf, "moe_k"),
            expert_hidden=width,
            n_shared=n_shared,
            shared_hidden=width * n_shared or None,
            selection_bias=True,
            **_aux_loss(hf),
        )

    def sparse_layers(self, hf: Mapping[str, Any], n_layers: int) -> list[bool]:
        start = int(hf.get("moe_layer_start_index", 0))
        end = int(hf.get("moe_layer_end_index", -1))
        end = n_layers - 1 if end == -1 else end
        every = int(hf.get("moe_layer_interval") or 1)
        return [(i + 1) % every == 0 and start <= i <= end for i in range(n_layers)]

    def layers_problem(self, sparse: list[bool]) -> str | None:
        idx = [i for i, s in enumerate(sparse) if s]
        if sparse != [idx[0] <= i <= idx[-1] for i in range(len(sparse))]:
            return "sparse layers not one run: written as moe_layer_start/end_index with interval 1"
        return None

    def attention_pairs(self) -> list[tuple[str, str]]:
        return _MHA_PAIRS

    def attention_problems(self, tm: Any, cfg: DecoderConfig) -> list[str]:
        return _mha_problems(tm, qkv_bias=False, qk_norm=False)

    def moe_problems(self, moe: MoEConfig) -> list[str]:
        problems = _want(moe, scoring="softmax", normalize_top_k=True, route_scale=1.0, n_groups=1,
                         has_selection_bias=True, shared_gate=False)  # fmt: skip
        if moe.n_shared and moe.shared_width(1) != moe.n_shared * moe.expert_width(1):
            problems.append("shared_hidden: ERNIE 4.5's shared experts have the routed width")
        return problems + _aux_problems(moe)

    def family_hf(self, cfg: DecoderConfig, moe: MoEConfig, sparse: list[bool]) -> dict[str, Any]:
        idx = [i for i, s in enumerate(sparse) if s]
        out = _mha_hf(cfg)
        out.update(
            use_bias=False,
            moe_num_experts=moe.n_experts,
            moe_k=moe.top_k,
            moe_intermediate_size=moe.expert_width(cfg.d_model),
            moe_num_shared_experts=moe.n_shared,
            moe_layer_start_index=idx[0],
            moe_layer_end_index=idx[-1],
            moe_layer_interval=1,
            **_aux_hf(moe),
        )
        return out

    def rope_rows(self, cfg: DecoderConfig) -> RopeRows:
        tm = cfg.block.token_mixer
        if tm.type != "mha":
            return []
        d = tm.head_dim_for(cfg.d_model)
        return [
            ("mixer.q_proj.weight", tm.n_heads, d, 0),
            ("mixer.k_proj.weight", tm.kv_heads, d, 0),
        ]

    def bias_to_hf(self, bias: Tensor) -> Tensor:
        return bias.reshape(1, -1)  # (1, E): one group of experts


QWEN2_MOE = QwenMoE("qwen2_moe", "Qwen2MoeForCausalLM", qwen2=True)
QWEN3_MOE = QwenMoE("qwen3_moe", "Qwen3MoeForCausalLM", qwen2=False)
DEEPSEEK_V3 = DeepSeekV3()
ERNIE_4_5_MOE = Ernie45MoE()


def qwen2_moe() -> QwenMoE:
    return QWEN2_MOE


def qwen3_moe() -> QwenMoE:
    return QWEN3_MOE


def deepseek_v3() -> DeepSeekV3:
    return DEEPSEEK_V3


def ernie4_5_moe() -> Ernie45MoE:
    return ERNIE_4_5_MOE
