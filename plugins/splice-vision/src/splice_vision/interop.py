"""Load Hugging Face ``CLIPModel`` / ``ViTModel`` checkpoints and open_clip models.

Hugging Face checkpoints are read from a directory (``config.json`` + safetensors; never
pickles); open_clip models are converted from a live module's ``state_dict()``. Each
loader builds the splice config from the source's config, renames every tensor, and
loads with ``strict=True``, so an unmapped or missing tensor is an error naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from splice.hf.loading import read_hf_config
from splice.hf.safetensors_io import read_index, read_tensors
from torch import Tensor, nn

from splice_vision.clip import CLIP
from splice_vision.configs import CLIPConfig, TextEncoderConfig, ViTConfig
from splice_vision.vit import ViT

_ACT = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh"}


def _act(name: str) -> str:
    if name not in _ACT:
        raise ValueError(f"activation {name!r} is not supported; expected one of {sorted(_ACT)}")
    return _ACT[name]


def _load(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"{source}: tensors missing {missing[:5]}, unexpected {extra[:5]}")
    for name, t in state.items():
        if own[name].shape != t.shape:
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(own[name].shape)}"
            )
    module.load_state_dict(dict(state), strict=True)


def _read(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    path = Path(path)
    config = read_hf_config(path)
    infos = read_index(path)
    return config, read_tensors(infos, list(infos))


def _hf_layers(
    state: Mapping[str, Tensor], src: str, dst: str, n: int, names: dict[str, str]
) -> dict[str, Tensor]:
    out = {}
    for i in range(n):
        for a, b in names.items():
            for kind in ("weight", "bias"):
                key = f"{src}.{i}.{a}.{kind}"
                if key in state:
                    out[f"{dst}.{i}.{b}.{kind}"] = state[key]
    return out


# --------------------------------------------------------------------------- HF ViTModel
_HF_VIT_LAYER = {
    "attention.attention.query": "mixer.q_proj",
    "attention.attention.key": "mixer.k_proj",
    "attention.attention.value": "mixer.v_proj",
    "attention.output.dense": "mixer.o_proj",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "intermediate.dense": "ffn.up",
    "output.dense": "ffn.down",
}


def vit_config_from_hf(cfg: Mapping[str, Any]) -> ViTConfig:
    """The ``ViTConfig`` of a Hugging Face ``ViTConfig`` dict."""
    if not cfg.get("qkv_bias", True):
        raise ValueError("ViT checkpoints without qkv_bias are not supported")
    return ViTConfig(
        image_size=cfg["image_size"],
        patch_size=cfg["patch_size"],
        in_channels=cfg.get("num_channels", 3),
        d_model=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"],
        n_heads=cfg["num_attention_heads"],
        mlp_hidden=cfg["intermediate_size"],
        activation=_act(cfg.get("hidden_act", "gelu")),  # type: ignore[arg-type]
        norm_eps=cfg.get("layer_norm_eps", 1e-12),
        conv_bias=True,
    )


def load_hf_vit(path: str | Path) -> ViT:
    """A splice ``ViT`` from a ``transformers`` ``ViTModel`` checkpoint directory.

    ``ViT(images)`` equals ``ViTModel(images).last_hidden_state`` (the pooler is not loaded).
    """
    cfg, state = _read(path)
    state = {k.removeprefix("vit."): v for k, v in state.items() if not k.startswith("pooler.")}
    model = ViT(vit_config_from_hf(cfg))
    n = model.config.n_layers
    mapped = {
        "cls": state["embeddings.cls_token"].reshape(-1),
        "pos": state["embeddings.position_embeddings"].reshape(-1, model.config.d_model),
        "patch.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
        "patch.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": state["layernorm.weight"],
        "norm.bias": state["layernorm.bias"],
        **_hf_layers(state, "encoder.layer", "blocks", n, _HF_VIT_LAYER),
    }
    _load(model, mapped, str(path))
    return model


# --------------------------------------------------------------------------- HF CLIPModel
_HF_CLIP_LAYER = {
    "self_attn.q_proj": "mixer.q_proj",
    "self_attn.k_proj": "mixer.k_proj",
    "self_attn.v_proj": "mixer.v_proj",
    "self_attn.out_proj": "mixer.o_proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "mlp.fc1": "ffn.up",
    "mlp.fc2": "ffn.down",
}


def clip_config_from_hf(cfg: Mapping[str, Any]) -> CLIPConfig:
    """The ``CLIPConfig`` of a Hugging Face ``CLIPConfig`` dict."""
    v, t = cfg["vision_config"], cfg["text_config"]
    eos = t.get("eos_token_id", 2)
    return CLIPConfig(
        vision=ViTConfig(
            image_size=v["image_size"],
            patch_size=v["patch_size"],
            in_channels=v.get("num_channels", 3),
            d_model=v["hidden_size"],
            n_layers=v["num_hidden_layers"],
            n_heads=v["num_attention_heads"],
            mlp_hidden=v["intermediate_size"],
            activation=_act(v.get("hidden_act", "quick_gelu")),  # type: ignore[arg-type]
            norm_eps=v.get("layer_norm_eps", 1e-5),
            pre_norm=True,
            conv_bias=False,
        ),
        text=TextEncoderConfig(
            vocab_size=t["vocab_size"],
            d_model=t["hidden_size"],
            n_layers=t["num_hidden_layers"],
            n_heads=t["num_attention_heads"],
            max_len=t["max_position_embeddings"],
            mlp_hidden=t["intermediate_size"],
            activation=_act(t.get("hidden_act", "quick_gelu")),  # type: ignore[arg-type]
            norm_eps=t.get("layer_norm_eps", 1e-5),
            # transformers' legacy rule: eos id 2 means "pool at the largest token id"
            eos_token_id=None if eos == 2 else eos,
        ),
        embed_dim=cfg.get("projection_dim", 512),
    )


def load_hf_clip(path: str | Path) -> CLIP:
    """A splice ``CLIP`` from a ``transformers`` ``CLIPModel`` checkpoint directory."""
    cfg, state = _read(path)
    model = CLIP(clip_config_from_hf(cfg))
    nv, nt = model.config.vision.n_layers, model.config.text.n_layers
    vm, tm = "vision_model", "text_model"
    mapped = {
        "vision.cls": state[f"{vm}.embeddings.class_embedding"],
        "vision.pos": state[f"{vm}.embeddings.position_embedding.weight"],
        "vision.patch.proj.weight": state[f"{vm}.embeddings.patch_embedding.weight"],
        "vision.norm_pre.weight": state[f"{vm}.pre_layrnorm.weight"],
        "vision.norm_pre.bias": state[f"{vm}.pre_layrnorm.bias"],
        "vision.norm.weight": state[f"{vm}.post_layernorm.weight"],
        "vision.norm.bias": state[f"{vm}.post_layernorm.bias"],
        **_hf_layers(state, f"{vm}.encoder.layers", "vision.blocks", nv, _HF_CLIP_LAYER),
        "text.lm.embed.weight": state[f"{tm}.embeddings.token_embedding.weight"],
        "text.lm.pos_embed.weight": state[f"{tm}.embeddings.position_embedding.weight"],
        "text.lm.final_norm.weight": state[f"{tm}.final_layer_norm.weight"],
        "text.lm.final_norm.bias": state[f"{tm}.final_layer_norm.bias"],
        **_hf_layers(state, f"{tm}.encoder.layers", "text.lm.blocks", nt, _HF_CLIP_LAYER),
        "visual_projection.weight": state["visual_projection.weight"],
        "text_projection.weight": state["text_projection.weight"],
        "logit_scale": state["logit_scale"].reshape(()),
    }
    mapped["text.lm.lm_head.weight"] = mapped["text.lm.embed.weight"]  # tied, no parameters
    _load(model, mapped, str(path))
    return model


# --------------------------------------------------------------------------- open_clip
def _open_clip_blocks(state: Mapping[str, Tensor], src: str, dst: str, n: int) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for i in range(n):
        s, d = f"{src}.{i}", f"{dst}.{i}"
        q, k, v = state[f"{s}.attn.in_proj_weight"].chunk(3)
        qb, kb, vb = state[f"{s}.attn.in_proj_bias"].chunk(3)
        out |= {
            f"{d}.mixer.q_proj.weight": q, f"{d}.mixer.k_proj.weight": k, f"{d}.mixer.v_proj.weight": v,
            f"{d}.mixer.q_proj.bias": qb, f"{d}.mixer.k_proj.bias": kb, f"{d}.mixer.v_proj.bias": vb,
        }  # fmt: skip
        for a, b in {
            "attn.out_proj": "mixer.o_proj",
            "ln_1": "norm1",
            "ln_2": "norm2",
            "mlp.c_fc": "ffn.up",
            "mlp.c_proj": "ffn.down",
        }.items():
            out[f"{d}.{b}.weight"] = state[f"{s}.{a}.weight"]
            out[f"{d}.{b}.bias"] = state[f"{s}.{a}.bias"]
    return out


def from_open_clip(model: nn.Module) -> CLIP:
    """A splice ``CLIP`` with the weights of an ``open_clip.CLIP`` (ViT vision tower).

    Supports the standard towers: class-token pooling, ``ln_pre``, argmax text pooling.
    """
    visual, state = model.visual, model.state_dict()  # type: ignore[union-attr]
    d_v = state["visual.class_embedding"].shape[0]
    d_t = state["token_embedding.weight"].shape[1]
    n_v = sum(
        1
        for k in state
        if k.startswith("visual.transformer.resblocks.") and k.endswith(".ln_1.weight")
    )
    n_t = sum(
        1 for k in state if k.startswith("transformer.resblocks.") and k.endswith(".ln_1.weight")
    )
    patch = state["visual.conv1.weight"].shape[-1]
    quick = any(type(m).__name__ == "QuickGELU" for m in model.modules())
    act = "quick_gelu" if quick else "gelu"
    heads_v = visual.transformer.resblocks[0].attn.num_heads
    heads_t = model.transformer.resblocks[0].attn.num_heads  # type: ignore[union-attr,index]
    config = CLIPConfig(
        vision=ViTConfig(
            image_size=int(visual.image_size[0])
            if isinstance(visual.image_size, tuple)
            else int(visual.image_size),
            patch_size=patch,
            d_model=d_v,
            n_layers=n_v,
            n_heads=heads_v,
            mlp_hidden=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            activation=act,  # type: ignore[arg-type]
            norm_eps=visual.ln_pre.eps,
            pre_norm=True,
            conv_bias=False,
        ),
        text=TextEncoderConfig(
            vocab_size=state["token_embedding.weight"].shape[0],
            d_model=d_t,
            n_layers=n_t,
            n_heads=heads_t,
            max_len=state["positional_embedding"].shape[0],
            mlp_hidden=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            activation=act,  # type: ignore[arg-type]
            norm_eps=model.ln_final.eps,  # type: ignore[union-attr]
            eos_token_id=None,
        ),
        embed_dim=state["visual.proj"].shape[1],
    )
    ours = CLIP(config)
    mapped = {
        "vision.cls": state["visual.class_embedding"],
        "vision.pos": state["visual.positional_embedding"],
        "vision.patch.proj.weight": state["visual.conv1.weight"],
        "vision.norm_pre.weight": state["visual.ln_pre.weight"],
        "vision.norm_pre.bias": state["visual.ln_pre.bias"],
        "vision.norm.weight": state["visual.ln_post.weight"],
        "vision.norm.bias": state["visual.ln_post.bias"],
        **_open_clip_blocks(state, "visual.transformer.resblocks", "vision.blocks", n_v),
        "text.lm.embed.weight": state["token_embedding.weight"],
        "text.lm.lm_head.weight": state["token_embedding.weight"],
        "text.lm.pos_embed.weight": state["positional_embedding"],
        "text.lm.final_norm.weight": state["ln_final.weight"],
        "text.lm.final_norm.bias": state["ln_final.bias"],
        **_open_clip_blocks(state, "transformer.resblocks", "text.lm.blocks", n_t),
        "visual_projection.weight": state["visual.proj"].t().contiguous(),
        "text_projection.weight": state["text_projection"].t().contiguous(),
        "logit_scale": state["logit_scale"].reshape(()),
    }
    _load(ours, mapped, "open_clip model")
    return ours


__all__ = [
    "clip_config_from_hf",
    "from_open_clip",
    "load_hf_clip",
    "load_hf_vit",
    "vit_config_from_hf",
]
