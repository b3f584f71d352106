"""Adapter files in the Hugging Face PEFT layout: ``adapter_model.safetensors`` + ``adapter_config.json``.

Tensor names are PEFT's: the base model's Hugging Face module path under
``base_model.model.``, then the LoRA part with the adapter name removed, e.g.
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`` (``(r, in)``),
``...lora_B.weight`` (``(out, r)``), ``...lora_magnitude_vector`` (DoRA, ``(out,)``),
``base_model.model.model.embed_tokens.lora_embedding_A`` (``(r, V)``). splice module
paths map to Hugging Face ones with the same ``splice.hf`` renaming that imports and
exports checkpoints, so the adapter of a model imported from Llama or Qwen2 loads with
``peft.PeftModel.from_pretrained`` onto the transformers model, and back.

A PiSSA adapter changed the base weight (it holds ``W - s B0 A0``); it is saved as a plain
LoRA delta against the original ``W``, of rank ``2r``: ``B' = [B, -B0]``, ``A' = [A; A0]``
(PEFT's own conversion), so that it applies to the unmodified checkpoint.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from splice_lora.adapter import active_adapter, apply_lora, lora_layers
from splice_lora.configs import LoRAConfig
from splice_lora.expert_weights import LoRAParameter
from splice_lora.layers import LoRAEmbedding, LoRALayer, LoRALinear

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
PREFIX = "base_model.model."
#: PEFT tensor suffixes -> the splice parameter (``{}`` is the adapter name).
_PARTS = {
    "lora_A.weight": "lora_A.{}.weight",
    "lora_B.weight": "lora_B.{}.weight",
    "lora_magnitude_vector": "lora_magnitude_vector.{}",
    "lora_embedding_A": "lora_embedding_A.{}",
    "lora_embedding_B": "lora_embedding_B.{}",
}
#: adapter_config.json options splice-lora implements only at these values.
_SUPPORTED_ONLY = {
    "bias": ("none",),
    "fan_in_fan_out": (False,),
    "modules_to_save": (None, []),
    "layers_to_transform": (None, []),
    "layers_pattern": (None, [], ""),
    "rank_pattern": (None, {}),
    "alpha_pattern": (None, {}),
    "lora_bias": (False,),
    "use_qalora": (False,),
    "trainable_token_indices": (None,),
    "layer_replication": (None,),
    "exclude_modules": (None, [], ""),
    "megatron_config": (None,),
    "alora_invocation_tokens": (None,),
    "use_bdlora": (None, False),
}


class _Names:
    """splice module paths <-> Hugging Face module paths, through the architecture's renaming
    of tensor names (``splice.hf``): a module maps as its ``.weight`` tensor does."""

    def __init__(self, model: nn.Module) -> None:
        from splice.hf.convert import architecture_of
        from splice.models.configs import DecoderConfig

        cfg = getattr(model, "config", None)
        if not isinstance(cfg, DecoderConfig):
            raise ValueError(
                "PEFT adapter files need a splice DecoderLM (its config maps module names to "
                f"Hugging Face ones); got a {type(model).__name__}"
            )
        self.arch, self.cfg = architecture_of(cfg), cfg
        if self.arch.model_type not in SUPPORTED:
            raise ValueError(
                f"PEFT adapter files are supported for the {sorted(SUPPORTED)} layouts, not "
                f"{self.arch.model_type!r} (GPT-2 fuses q, k and v into one c_attn module)"
            )

    def rows_to_hf(self, path: str, value: Tensor) -> Tensor:
        """An output-side tensor (``lora_B``, DoRA magnitude) in the checkpoint's row order
        (DeepSeek-V3 and ERNIE store RoPE rows interleaved; the renaming permutes them)."""
        return next(iter(self.arch.weights_to_hf({f"{path}.weight": value}, self.cfg).values()))

    def rows_to_splice(self, hf_path: str, value: Tensor) -> Tensor:
        return next(
            iter(self.arch.weights_to_splice({f"{hf_path}.weight": value}, self.cfg).values())
        )

    @staticmethod
    def param_to_hf(path: str) -> str | None:
        """``blocks.1.ffn.experts.gate_up`` -> ``model.layers.1.mlp.experts.gate_up_proj``
        (transformers' module and parameter names of batched experts, all MoE families)."""
        m = _SPLICE_PARAM.fullmatch(path)
        return f"model.layers.{m[1]}.mlp.experts.{m[2]}_proj" if m else None

    @staticmethod
    def param_to_splice(hf_path: str) -> str | None:
        m = _HF_PARAM.fullmatch(hf_path)
        return f"blocks.{m[1]}.ffn.experts.{m[2]}" if m else None

    def to_hf(self, path: str) -> str | None:
        try:
            mapped = self.arch.weights_to_hf({f"{path}.weight": _EMPTY}, self.cfg)
        except ValueError:
            return None
        return next((str(n).removesuffix(".weight") for n in mapped), None)  # None: tied head

    def to_splice(self, hf_path: str) -> str | None:
        try:
            (name,) = self.arch.weights_to_splice({f"{hf_path}.weight": _EMPTY}, self.cfg)
        except ValueError:
            return None
        return str(name).removesuffix(".weight")


_EMPTY = torch.empty(0)
#: Layouts whose module names map to transformers' (MoE families: splice-moe's).
SUPPORTED = {"llama", "qwen2", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "ernie4_5_moe"}
#: Model types whose gate_proj/up_proj/down_proj targets PEFT (0.21) converts into the
#: experts' fused ``gate_up_proj`` / ``down_proj`` (its transformers v4 -> v5 conversion), so
#: an adapter on a dense or shared MLP projection cannot be expressed for them.
PEFT_RENAMES_MLP = {"qwen3_moe", "deepseek_v3", "ernie4_5_moe"}
_MLP_LEAVES = (".gate_proj", ".up_proj", ".down_proj")
_SPLICE_PARAM = re.compile(r"blocks\.(\d+)\.ffn\.experts\.(gate_up|down)")
_HF_PARAM = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up|down)_proj")


def save_peft_adapter(
    model: nn.Module,
    path: str | Path,
    *,
    adapter_name: str | None = None,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write adapter ``adapter_name`` (default: the active one) of ``model`` in PEFT's layout.

    Returns:
        ``path``, holding ``adapter_model.safetensors`` and ``adapter_config.json``.

    Raises:
        ValueError: the model is not a Llama/Qwen2-layout ``DecoderLM``, or has no such adapter.
    """
    names = _Names(model)
    name = adapter_name or active_adapter(model)
    layers = [(p, layer) for p, layer in lora_layers(model) if name in layer.specs]
    if name is None or not layers:
        raise ValueError(f"the model has no adapter named {name!r} to save")
    spec = layers[0][1].specs[name]
    tensors: dict[str, Tensor] = {}
    hf_modules: list[str] = []
    pissa = False
    params = [(p, layer) for p, layer in layers if isinstance(layer, LoRAParameter)]
    tensors.update(_parameter_tensors(params, name, names))
    for path_, layer in layers:
        if isinstance(layer, LoRAParameter):
            continue
        if path_.endswith("router.gate"):
            raise ValueError(
                f"the LoRA on MoE router {path_!r} cannot be written in PEFT's format: "
                "transformers' routers are not linear modules; leave routers out of the targets"
            )
        hf_path = names.to_hf(path_)
        if hf_path is None:
            raise ValueError(f"module {path_!r} has no Hugging Face counterpart to save under")
        if names.arch.model_type in PEFT_RENAMES_MLP and hf_path.endswith(_MLP_LEAVES):
            raise ValueError(
                f"the LoRA on {path_!r} ({hf_path}) cannot be written in PEFT's format for "
                f"{names.arch.model_type}: PEFT reads gate_proj/up_proj/down_proj targets of "
                "that model type as the experts' fused weights (its transformers-v5 conversion); "
                "adapt the experts with target_parameters and leave the MLP projections out"
            )
        hf_modules.append(hf_path)
        for part, local in _layer_tensors(layer, name).items():
            if part in _OUTPUT_SIDE:
                local = names.rows_to_hf(path_, local)
            tensors[f"{PREFIX}{hf_path}.{part}"] = local.detach().contiguous().cpu()
        pissa = pissa or (isinstance(layer, LoRALinear) and name in layer.pissa_init)
    r, alpha = spec.r, spec.alpha
    if pissa:  # the delta against the original W has rank 2r; keep the same scale
        r, alpha = 2 * spec.r, alpha * (math.sqrt(2) if spec.rslora else 2)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": spec.dropout,
        "use_rslora": spec.rslora,
        "use_dora": spec.dora,
        "target_modules": _target_modules(model, names, hf_modules, exact=bool(params))
        if hf_modules
        else [],
        "target_parameters": _param_paths(params, names) or None,
        "init_lora_weights": True,
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "inference_mode": True,
    }
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out


_OUTPUT_SIDE = ("lora_B.weight", "lora_magnitude_vector")


def _param_paths(params: list[tuple[str, LoRALayer]], names: _Names) -> list[str]:
    """The Hugging Face names of the adapted batched weights (PEFT's ``target_parameters``),
    per module in the order PEFT nests its wrappers: ``gate_up_proj`` inside ``down_proj``."""
    out = []
    for path, layer in params:
        assert isinstance(layer, LoRAParameter)
        owner_path = path.split(".parametrizations.")[0]
        hf = names.param_to_hf(f"{owner_path}.{layer.param_name}")
        if hf is None:
            raise ValueError(
                f"batched weight {owner_path}.{layer.param_name} has no PEFT name (PEFT's "
                "target_parameters covers the MoE layers' experts.gate_up and experts.down)"
            )
        out.append(hf)
    return sorted(out, key=lambda n: (int(n.split(".")[2]), "down_proj" in n))


def _parameter_tensors(
    params: list[tuple[str, LoRALayer]], name: str, names: _Names
) -> dict[str, Tensor]:
    """PEFT's tensors of the batched-weight adapters. PEFT wraps one parameter per wrapper and
    nests the wrappers: a module's first listed parameter sits ``base_layer.`` deeper per
    parameter listed after it (``experts.base_layer.lora_A.weight`` is ``gate_up_proj``'s
    when ``down_proj`` is adapted too)."""
    listed = _param_paths(params, names)
    by_hf = {}
    for path, layer in params:
        owner_path = path.split(".parametrizations.")[0]
        by_hf[names.param_to_hf(f"{owner_path}.{layer.param_name}")] = layer  # type: ignore[attr-defined]
    out: dict[str, Tensor] = {}
    for hf in listed:
        module, _, _ = hf.rpartition(".")
        same = [n for n in listed if n.rpartition(".")[0] == module]
        depth = len(same) - 1 - same.index(hf)
        layer = by_hf[hf]
        for part in ("lora_A", "lora_B"):
            w = getattr(layer, part)[name].weight
            out[f"{PREFIX}{module}.{'base_layer.' * depth}{part}.weight"] = (
                w.detach().contiguous().cpu()
            )
    return out


def _layer_tensors(layer: LoRALayer, name: str) -> dict[str, Tensor]:
    """One layer's tensors for adapter ``name``, keyed by PEFT suffix."""
    if isinstance(layer, LoRAEmbedding):
        return {
            "lora_embedding_A": layer.lora_embedding_A[name],
            "lora_embedding_B": layer.lora_embedding_B[name],
        }
    assert isinstance(layer, LoRALinear)
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    if name in layer.pissa_init:
        a0, b0 = layer.pissa_init[name]
        a, b = torch.cat([a, a0.to(a)]), torch.cat([b, -b0.to(b)], dim=1)  # (2r, in), (out, 2r)
    out = {"lora_A.weight": a, "lora_B.weight": b}
    if name in layer.lora_magnitude_vector:
        out["lora_magnitude_vector"] = layer.lora_magnitude_vector[name]
    return out


def _target_modules(
    model: nn.Module, names: _Names, hf_modules: list[str], *, exact: bool = False
) -> list[str] | str:
    """Leaf names (``["q_proj", "v_proj"]``) when they pick exactly the adapted modules,
    else (or with ``exact``) a regex over the full module names (PEFT full-matches a string
    target). ``exact`` when expert weights are adapted too: PEFT would also apply a leaf
    name such as ``up_proj`` to the parameter ``gate_up_proj`` (a second, nested delta)."""
    from splice_lora.targets import candidates

    leaves = sorted({m.rsplit(".", 1)[-1] for m in hf_modules})
    every = [m for p, _, _ in candidates(model) if (m := names.to_hf(p)) is not None]
    picked = [m for m in every if m.rsplit(".", 1)[-1] in leaves]
    if sorted(picked) == sorted(hf_modules) and not exact:
        return leaves
    return "|".join(re.escape(m) for m in hf_modules)


def load_peft_adapter(
    model: nn.Module, path: str | Path, *, adapter_name: str = "default"
) -> nn.Module:
    """Put the PEFT LoRA adapter in folder ``path`` on ``model`` as adapter ``adapter_name``.

    Returns:
        ``model``, with the adapter active.

    Raises:
        ValueError: an option splice-lora does not implement (names it), a tensor whose module
            the model lacks or whose shape differs (names the tensor and both shapes), or a
            missing tensor.
        FileNotFoundError: the folder lacks one of the two files.
    """
    folder = Path(path)
    for fname in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / fname).is_file():
            raise FileNotFoundError(f"{folder}: no {fname} (expected a PEFT adapter folder)")
    config = json.loads((folder / CONFIG_NAME).read_text())
    _check_options(config, folder / CONFIG_NAME)
    names = _Names(model)
    tensors = load_file(str(folder / WEIGHTS_NAME))
    listed = _expand_parameters(model, config.get("target_parameters") or [], names)
    by_param = _take_parameter_tensors(tensors, listed, names)
    by_module: dict[str, dict[str, Tensor]] = {}
    modules = dict(model.named_modules())
    for key, value in tensors.items():
        if not key.startswith(PREFIX):
            raise ValueError(f"{WEIGHTS_NAME}: tensor {key!r} does not start with {PREFIX!r}")
        if key.endswith(".base_layer.weight"):  # PEFT's save_embedding_layers: a base copy
            _check_same_base(key, value, modules, names)
            continue
        part = next((p for p in _PARTS if key.endswith("." + p)), None)
        if part is None:
            raise ValueError(f"{WEIGHTS_NAME}: tensor {key!r} is not a LoRA tensor splice knows")
        hf_module = key[len(PREFIX) : -len(part) - 1]
        by_module.setdefault(hf_module, {})[part] = value
    targets: dict[str, str] = {}
    for hf_module in by_module:
        splice_path = names.to_splice(hf_module)
        if splice_path is None or splice_path not in modules:
            raise ValueError(
                f"{WEIGHTS_NAME}: tensors of module {hf_module!r} target a module the model "
                f"lacks ({splice_path!r})"
            )
        targets[splice_path] = hf_module
    lora_cfg = LoRAConfig(
        name=adapter_name,
        r=int(config["r"]),
        alpha=float(config.get("lora_alpha", 8)),
        rslora=bool(config.get("use_rslora", False)),
        dropout=float(config.get("lora_dropout", 0.0)),
        dora=bool(config.get("use_dora", False)),
        targets=[],
        target_regex="|".join(re.escape(t) for t in targets) if targets else None,
        target_parameters=sorted(by_param) or None,
    )
    apply_lora(model, lora_cfg)
    layers = dict(lora_layers(model))
    with torch.no_grad():
        for splice_param, given in by_param.items():
            owner, _, leaf = splice_param.rpartition(".")
            layer = layers[f"{owner}.parametrizations.{leaf}.0"]
            for part, value in given.items():
                want = getattr(layer, part)[adapter_name].weight
                if tuple(value.shape) != tuple(want.shape):
                    raise ValueError(
                        f"{WEIGHTS_NAME}: {part} of {splice_param!r} has shape "
                        f"{tuple(value.shape)}, expected {tuple(want.shape)}"
                    )
                want.copy_(value.to(want.dtype))
        for splice_path, hf_module in targets.items():
            layer = layers[splice_path]
            params = dict(layer.named_parameters())
            given = by_module[hf_module]
            for part, value in given.items():
                local = _PARTS[part].format(adapter_name)
                if local not in params:
                    raise ValueError(
                        f"{WEIGHTS_NAME}: tensor {PREFIX}{hf_module}.{part} has no place on "
                        f"{splice_path!r} (use_dora={lora_cfg.dora})"
                    )
                want = params[local]
                if tuple(value.shape) != tuple(want.shape):
                    raise ValueError(
                        f"{WEIGHTS_NAME}: tensor {PREFIX}{hf_module}.{part} has shape "
                        f"{tuple(value.shape)} but {splice_path}.{local} is {tuple(want.shape)}"
                    )
                if part in _OUTPUT_SIDE:
                    value = names.rows_to_splice(hf_module, value)
                want.copy_(value.to(want.dtype))
            expected = {p for p in _PARTS if _PARTS[p].format(adapter_name) in params}
            if expected - set(given):
                raise ValueError(
                    f"{WEIGHTS_NAME}: module {hf_module!r} lacks tensors {sorted(expected - set(given))}"
                )
    return model


def _expand_parameters(model: nn.Module, entries: list[str], names: _Names) -> list[str]:
    """PEFT matches each ``target_parameters`` entry as a suffix of the full parameter name;
    the full names it picks, in entry order (which is how PEFT nests the wrappers)."""
    from splice_lora.expert_weights import PARAMETRIZED

    have = [
        hf
        for n, _ in model.named_parameters()
        if (hf := names.param_to_hf(PARAMETRIZED.sub(r".\1", n))) is not None
    ]
    out: list[str] = []
    for entry in entries:
        hits = [h for h in have if h == entry or h.endswith("." + entry)]
        if not hits:
            raise ValueError(
                f"{CONFIG_NAME}: target_parameters entry {entry!r} matches no batched expert "
                f"weight of the model (it has e.g. {have[:2]})"
            )
        out += [h for h in hits if h not in out]
    return out


def _take_parameter_tensors(
    tensors: dict[str, Tensor], listed: list[str], names: _Names
) -> dict[str, dict[str, Tensor]]:
    """Remove the batched-weight tensors from ``tensors``; return them by splice parameter
    path: ``{"blocks.1.ffn.experts.gate_up": {"lora_A": ..., "lora_B": ...}}``."""
    out: dict[str, dict[str, Tensor]] = {}
    for hf in listed:
        splice_path = names.param_to_splice(hf)
        if splice_path is None:
            raise ValueError(
                f"{CONFIG_NAME}: target_parameters entry {hf!r} is not a batched expert weight "
                "splice maps (model.layers.<i>.mlp.experts.gate_up_proj / down_proj)"
            )
        module = hf.rpartition(".")[0]
        same = [n for n in listed if n.rpartition(".")[0] == module]
        depth = len(same) - 1 - same.index(hf)
        for part in ("lora_A", "lora_B"):
            key = f"{PREFIX}{module}.{'base_layer.' * depth}{part}.weight"
            if key not in tensors:
                raise ValueError(f"{WEIGHTS_NAME}: tensor {key!r} for {hf!r} is missing")
            out.setdefault(splice_path, {})[part] = tensors.pop(key)
    return out


def _check_same_base(key: str, value: Tensor, modules: dict[str, nn.Module], names: _Names) -> None:
    """PEFT saves a targeted embedding's full weight next to its LoRA; splice loads adapters
    only, so accept the copy when it is the model's own weight and refuse it otherwise."""
    hf_module = key[len(PREFIX) : -len(".base_layer.weight")]
    path = names.to_splice(hf_module)
    weight = getattr(modules.get(path or ""), "weight", None)
    if not isinstance(weight, Tensor) or weight.shape != value.shape:
        raise ValueError(
            f"{WEIGHTS_NAME}: tensor {key!r} {tuple(value.shape)} is a base weight for a module "
            f"the model lacks or shapes differently ({path!r})"
        )
    if not torch.allclose(weight.detach().float(), value.float(), rtol=0, atol=1e-6):
        raise ValueError(
            f"{WEIGHTS_NAME}: tensor {key!r} replaces the base weight of {path!r} (a resized or "
            "retrained embedding); splice-lora loads adapters only: load that weight into the "
            "base model first"
        )


def _check_options(config: dict[str, Any], where: Path) -> None:
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise ValueError(
            f"{where}: peft_type={peft_type!r} is not supported (splice-lora reads 'LORA')"
        )
    for option, allowed in _SUPPORTED_ONLY.items():
        value = config.get(option, allowed[0])
        if value not in allowed:
            raise ValueError(
                f"{where}: option {option}={value!r} is not supported by splice-lora "
                f"(supported: {allowed[0]!r})"
            )
    if "r" not in config:
        raise ValueError(f"{where}: required option 'r' is missing")


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_peft_adapter", "save_peft_adapter"]
