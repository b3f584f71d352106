"""The Hugging Face layout shared by the MoE decoder families (Qwen2/3-MoE, DeepSeek-V3,
ERNIE 4.5).

All four are pre-norm RMSNorm + RoPE decoders whose FFN is, per layer, either a dense SwiGLU
``mlp.{gate,up,down}_proj`` or a sparse block: a router ``mlp.gate`` (E, D), experts
``mlp.experts.{e}.{gate,up,down}_proj`` and optional shared experts. In splice a layer is
``block`` (the MoE block) or, for the dense layers, a ``LayerOverride`` listing them; the
experts are stored batched (``ffn.experts.gate_up`` (E, 2H, D) = per expert
``cat(gate_proj, up_proj)``; ``ffn.experts.down`` (E, D, H)).

A family says how its ``config.json`` reads (attention, routing, which layers are sparse)
and adds its own names; ``MoEFamily`` does the rest: blocks and overrides, export checks,
the renaming, expert stacking, and RoPE rows stored interleaved in the checkpoint.

Limit (as for Mixtral): the experts of one layer must sit in one safetensors shard.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pydantic import ValidationError
from splice.hf.architecture import Renamer, layout_problems, require, rope_theta, unsupported
from splice.hf.safetensors_io import CheckpointError
from splice.models.configs import DecoderConfig, LayerOverride
from splice.nn.positional import half_to_interleaved, interleaved_to_half
from torch import Tensor

from splice_moe.configs import MoEConfig

_HF_EXPERT = re.compile(
    r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$"
)
_SPLICE_EXPERT = re.compile(r"^blocks\.(\d+)\.ffn\.experts\.(gate_up|down)$")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")

#: Rows of a projection that RoPE rotates: ``(splice name suffix, heads, head width, first
#: rotated row in a head)``; see ``MoEFamily.rope_rows``.
RopeRows = list[tuple[str, int, int, int]]


def moe_config(field: str, **kwargs: Any) -> MoEConfig:
    """``MoEConfig(**kwargs)``, a validation error turned into one naming ``field``."""
    try:
        return MoEConfig(**kwargs)
    except ValidationError as exc:
        why = "; ".join(e["msg"] for e in exc.errors())
        raise CheckpointError(f"config.json: {field}: {why}") from None


class MoEFamily:
    """Base of one MoE ``model_type``; subclasses fill in the family-specific parts."""

    model_type = ""
    hf_class = ""
    shared_prefix = "mlp.shared_experts."  # the shared MLP's name inside a layer
    bias_name: str | None = None  # e_score_correction_bias inside a layer, if the family has it

    # -- what a family says --------------------------------------------------------------
    def attention(self, hf: Mapping[str, Any]) -> dict[str, Any]:
        """The token mixer config (a dict) of ``config.json``."""
        raise NotImplementedError

    def moe(self, hf: Mapping[str, Any]) -> MoEConfig:
        raise NotImplementedError

    def sparse_layers(self, hf: Mapping[str, Any], n_layers: int) -> list[bool]:
        """Per layer: True where the FFN is the sparse block."""
        raise NotImplementedError

    def attention_pairs(self) -> list[tuple[str, str]]:
        """``(HF name, splice name)`` prefixes of one layer's attention tensors."""
        raise NotImplementedError

    def attention_problems(self, tm: Any, cfg: DecoderConfig) -> list[str]:
        raise NotImplementedError

    def moe_problems(self, moe: MoEConfig) -> list[str]:
        raise NotImplementedError

    def family_hf(self, cfg: DecoderConfig, moe: MoEConfig, sparse: list[bool]) -> dict[str, Any]:
        """The family's own ``config.json`` fields (attention, routing, sparse layers)."""
        raise NotImplementedError

    def layers_problem(self, sparse: list[bool]) -> str | None:
        """Why this pattern of sparse layers has no ``config.json`` spelling (None: it has)."""
        return None

    def rope_rows(self, cfg: DecoderConfig) -> RopeRows:
        """Rows stored interleaved in the checkpoint (empty: the checkpoint is rotate-half)."""
        return []

    # -- config ----------------------------------------------------------------------------
    def config_to_splice(self, hf: Mapping[str, Any]) -> DecoderConfig:
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise unsupported("hidden_act", act, "'silu' (SwiGLU)")
        n_layers = require(hf, "num_hidden_layers")
        eps = float(hf.get("rms_norm_eps", 1e-6))
        norm = {"type": "rmsnorm", "eps": eps}
        mixer = self.attention(hf)
        dense = {"type": "swiglu", "hidden_dim": require(hf, "intermediate_size")}
        sparse = self.sparse_layers(hf, n_layers)
        moe = self.moe(hf).model_dump(mode="json")

        def block(ffn: dict[str, Any]) -> dict[str, Any]:
            return {"type": "pre_norm", "token_mixer": mixer, "channel_mixer": ffn, "norm": norm}

        dense_layers = [i for i, s in enumerate(sparse) if not s]
        overrides = []
        if dense_layers and len(dense_layers) < n_layers:
            overrides = [LayerOverride(layers=dense_layers, block=block(dense))]
        return DecoderConfig(
            vocab_size=require(hf, "vocab_size"),
            d_model=require(hf, "hidden_size"),
            n_layers=n_layers,
            max_seq_len=hf.get("max_position_embeddings", 2048),
            block=block(moe if any(sparse) else dense),
            overrides=overrides,
            positional={"type": "rope", "theta": rope_theta(hf)},
            final_norm=norm,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            init_std=float(hf.get("initializer_range", 0.02)),
        )

    def split(self, cfg: DecoderConfig) -> tuple[MoEConfig | None, int | None, list[bool]]:
        """``(the MoE config, the dense width, sparse-layer flags)`` of ``cfg``."""
        moe, width, sparse = None, None, []
        for i in range(cfg.n_layers):
            ffn = cfg.block_for(i).channel_mixer
            sparse.append(isinstance(ffn, MoEConfig))
            if isinstance(ffn, MoEConfig):
                moe = ffn
            elif ffn.type == "swiglu":
                width = ffn.hidden_dim
        return moe, width, sparse

    def export_problems(self, cfg: DecoderConfig) -> list[str]:
        uniform = cfg.model_copy(update={"overrides": []})
        problems = [p for p in layout_problems(uniform, norm="rmsnorm", positional="rope")]
        base = cfg.block.model_dump(exclude={"channel_mixer"})
        moes, dense = set(), set()
        for i in range(cfg.n_layers):
            blk = cfg.block_for(i)
            if blk.model_dump(exclude={"channel_mixer"}) != base:
                problems.append(f"layer {i}: its block differs from block beyond the FFN")
            ffn = blk.channel_mixer
            if isinstance(ffn, MoEConfig):
                moes.add(ffn.model_dump_json())
            elif ffn.type == "swiglu" and not ffn.bias and ffn.hidden_dim is not None:
                dense.add(ffn.hidden_dim)
            else:
                problems.append(f"layer {i}: channel_mixer {ffn.type!r}, expected 'moe' or a "
                                "bias-free 'swiglu' with hidden_dim")  # fmt: skip
        if len(moes) != 1:
            problems.append(f"{len(moes)} distinct MoE configs, expected one")
        if len(dense) > 1:
            problems.append(f"dense layers of widths {sorted(dense)}, expected one width")
        if cfg.block.dropout or cfg.embedding_dropout:
            problems.append("block.dropout / embedding_dropout: the checkpoint has none")
        problems += self.attention_problems(cfg.block.token_mixer, cfg)
        moe, _, sparse = self.split(cfg)
        if moe is not None:
            problems += [f"block.channel_mixer.{p}" for p in self._common_moe(moe)]
            problems += [f"block.channel_mixer.{p}" for p in self.moe_problems(moe)]
            why = self.layers_problem(sparse)
            if why:
                problems.append(why)
        return problems

    @staticmethod
    def _common_moe(moe: MoEConfig) -> list[str]:
        want = {"activation": "swiglu", "capacity_factor": None, "router_noise": 0.0,
                "jitter": 0.0, "expert_layout": "batched"}  # fmt: skip
        return [
            f"{k}={getattr(moe, k)!r}, the checkpoint has {v!r}"
            for k, v in want.items()
            if getattr(moe, k) != v
        ]

    def config_to_hf(self, cfg: DecoderConfig) -> dict[str, Any]:
        moe, width, sparse = self.split(cfg)
        assert moe is not None, "export_problems refuses a model without an MoE layer"
        theta = cfg.positional.theta
        out: dict[str, Any] = {
            "architectures": [self.hf_class],
            "model_type": self.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "intermediate_size": width or moe.expert_width(cfg.d_model),
            "num_hidden_layers": cfg.n_layers,
            "hidden_act": "silu",
            "max_position_embeddings": cfg.max_seq_len,
            "rms_norm_eps": cfg.block.norm.eps,
            "rope_theta": theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": theta},
            "tie_word_embeddings": cfg.tie_embeddings,
            "initializer_range": cfg.init_std,
            "output_router_logits": False,
        }
        out.update(self.family_hf(cfg, moe, sparse))
        return out

    # -- weights ---------------------------------------------------------------------------
    def _renamer(self) -> Renamer:
        pairs = list(self.attention_pairs())
        pairs += [("input_layernorm.", "norm1."), ("post_attention_layernorm.", "norm2.")]
        pairs += [(f"mlp.{p}_proj.", f"ffn.{p}.") for p in ("gate", "up", "down")]
        if self.bias_name is not None:
            pairs.append((self.bias_name, "ffn.router.expert_bias"))
        pairs += [
            ("mlp.gate.", "ffn.router.gate."),
            ("mlp.shared_expert_gate.", "ffn.shared_gate."),
        ]
        pairs += [
            (f"{self.shared_prefix}{p}_proj.", f"ffn.shared.{p}.") for p in ("gate", "up", "down")
        ]
        return Renamer(
            [
                ("model.embed_tokens.", "embed."),
                ("model.norm.", "final_norm."),
                ("lm_head.", "lm_head."),
                *((f"model.layers.{{i}}.{hf}", f"blocks.{{i}}.{sp}") for hf, sp in pairs),
            ]
        )

    def canonical_name(self, name: str, cfg: DecoderConfig) -> str | None:
        if name.endswith("rotary_emb.inv_freq") or (
            cfg.tie_embeddings and name == "lm_head.weight"
        ):
            return None
        m = _LAYER.match(name)
        if m and int(m.group(1)) >= cfg.n_layers:
            return None  # DeepSeek's multi-token-prediction layers, unused by the LM
        return name

    def weights_to_splice(self, hf: Mapping[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
        renamer, out = self._renamer(), {}
        experts: dict[str, dict[tuple[int, str], Tensor]] = {}
        for name, value in hf.items():
            m = _HF_EXPERT.match(name)
            if m:
                experts.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = value
                continue
            mapped = renamer.to_splice(name)
            if mapped is None:
                raise CheckpointError(
                    f"tensor {name!r} has no counterpart in the {self.model_type} layout"
                )
            out[mapped] = value.reshape(-1) if mapped.endswith("expert_bias") else value
        moe, _, _ = self.split(cfg)
        for layer, parts in experts.items():
            n = moe.n_experts if moe is not None else 0
            names = ("gate_proj", "up_proj", "down_proj")
            missing = [f"model.layers.{layer}.mlp.experts.{e}.{w}.weight"
                       for e in range(n) for w in names if (e, w) not in parts]  # fmt: skip
            if missing:
                raise CheckpointError(
                    f"missing expert tensor(s) {missing[:3]} (layer {layer}): every expert of "
                    "a layer must be present, in one shard"
                )
            out[f"blocks.{layer}.ffn.experts.gate_up"] = torch.stack(
                [torch.cat([parts[(e, "gate_proj")], parts[(e, "up_proj")]]) for e in range(n)]
            )  # (E, 2H, D)
            out[f"blocks.{layer}.ffn.experts.down"] = torch.stack(
                [parts[(e, "down_proj")] for e in range(n)]
            )  # (E, D, H)
        return self._permute(out, cfg, interleaved_to_half)

    def weights_to_hf(self, state: Mapping[str, Tensor], cfg: DecoderConfig) -> dict[str, Tensor]:
        state = self._permute(dict(state), cfg, half_to_interleaved)
        renamer, out = self._renamer(), {}
        for name, value in state.items():
            m = _SPLICE_EXPERT.match(name)
            if m:
                layer, which = m.group(1), m.group(2)
                prefix = f"model.layers.{layer}.mlp.experts"
                for e in range(value.shape[0]):
                    if which == "gate_up":
                        gate, up = value[e].chunk(2, dim=0)  # (H, D) each
                        out[f"{prefix}.{e}.gate_proj.weight"] = gate
                        out[f"{prefix}.{e}.up_proj.weight"] = up
                    else:
                        out[f"{prefix}.{e}.down_proj.weight"] = value[e]
                continue
            mapped = renamer.to_hf(name)
            if mapped is None:
                raise ValueError(
                    f"tensor {name!r} has no counterpart in the {self.model_type} layout"
                )
            if name.endswith("expert_bias"):
                value = self.bias_to_hf(value)
            out[mapped] = value
        if cfg.tie_embeddings:
            out.pop("lm_head.weight", None)
        return out

    def bias_to_hf(self, bias: Tensor) -> Tensor:
        """``router.expert_bias (E,)`` in the checkpoint's shape."""
        return bias

    def _permute(
        self, state: dict[str, Tensor], cfg: DecoderConfig, fn: Callable[..., Tensor]
    ) -> dict[str, Tensor]:
        """Apply ``fn`` (to or from interleaved) to the rotated rows of each projection."""
        rows = self.rope_rows(cfg)
        if not rows:
            return state
        for name, value in state.items():
            for suffix, heads, width, start in rows:
                if name.endswith(suffix) and value.numel():  # empty: a name-only lookup
                    per_head = value.reshape(heads, width, *value.shape[1:])
                    rotated = fn(per_head[:, start:], dim=1)
                    state[name] = torch.cat([per_head[:, :start], rotated], 1).reshape(value.shape)
        return state
