"""Put LoRA adapters on a built model, switch between them, merge them, read their weights.

``apply_lora(model, config)`` wraps the targeted modules in place, freezes everything but
the new adapter and makes it active. Applying a second config with another ``name`` adds a
second adapter to the same (or other) layers; ``set_active_adapter`` switches. The core's
``splice.adapters.adapters_disabled(model)`` turns every adapter off at once.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from splice_lora.configs import LoRAConfig
from splice_lora.expert_weights import LoRAParameter, parameter_layer, select_parameters
from splice_lora.layers import AdapterSpec, LoRAEmbedding, LoRALayer, LoRALinear
from splice_lora.targets import check_rank, select_targets


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALayer]]:
    """``(dotted name, layer)`` of every LoRA layer in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALayer)]


def adapter_names(model: nn.Module) -> list[str]:
    """The names of the adapters on ``model``, in the order they were added."""
    names: dict[str, None] = {}
    for _, layer in lora_layers(model):
        names.update(dict.fromkeys(layer.specs))
    return list(names)


def _spec(config: LoRAConfig) -> AdapterSpec:
    return AdapterSpec(
        r=config.r,
        scaling=config.scaling,
        alpha=config.alpha,
        rslora=config.rslora,
        dropout=config.dropout,
        init=config.init,
        dora=config.dora,
        lora_plus_ratio=config.lora_plus_ratio,
    )


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Add adapter ``config.name`` to the modules ``config`` targets; returns ``model``.

    Every parameter except the new adapter's is frozen and the new adapter becomes the
    active one.

    Raises:
        ValueError: the targets match nothing (lists the model's linear modules), ``r`` is
            larger than a target's smaller side (names the layer), or the adapter exists.
    """
    if config.name in adapter_names(model):
        raise ValueError(f"the model already has an adapter named {config.name!r}")
    modules_wanted = config.targets or config.target_regex is not None
    chosen = select_targets(model, config) if modules_wanted else []
    for name, module, kind in chosen:
        check_rank(name, module, kind, config.r)
    spec = _spec(config)
    if config.target_parameters:  # batched expert weights: one delta per expert
        for owner, param, path in select_parameters(model, config.target_parameters):
            shape = getattr(owner, param).shape
            if config.r > min(shape[1:]):
                raise ValueError(f"r={config.r} is larger than min{tuple(shape[1:])} of {path!r}")
            parameter_layer(owner, param).add_adapter(config.name, spec)
    for name, module, kind in chosen:
        layer = module
        if not isinstance(module, LoRALayer):
            layer = LoRALinear(module) if kind == "linear" else LoRAEmbedding(module)  # type: ignore[arg-type]
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, layer)
        layer.add_adapter(config.name, spec)  # type: ignore[operator]
    set_active_adapter(model, config.name)
    return model


def set_active_adapter(model: nn.Module, name: str | None) -> None:
    """Make adapter ``name`` the one that runs (and the only trainable parameters).

    ``None`` deactivates every adapter (the model runs as its base) and freezes them all.

    Raises:
        ValueError: no adapter has that name (lists the names there are).
    """
    names = adapter_names(model)
    if name is not None and name not in names:
        raise ValueError(f"no adapter named {name!r}; the model has {names}")
    model.requires_grad_(False)
    for _, layer in lora_layers(model):
        layer.active_adapter = name if name in layer.specs else None
        if name is not None and name in layer.specs:
            for p in layer.adapter_parameters(name).values():
                p.requires_grad_(True)


def active_adapter(model: nn.Module) -> str | None:
    """The name of the adapter that runs, or None."""
    for _, layer in lora_layers(model):
        if layer.active_adapter is not None:
            return layer.active_adapter
    return None


def merge_adapter(model: nn.Module, name: str | None = None) -> None:
    """Fold adapter ``name`` (default: the active one) into the base weights, in place.

    Reversible with ``unmerge_adapter``; while merged the adapter costs nothing at run time.
    """
    name = name or active_adapter(model)
    _check_untied(model, name)
    for _, layer in lora_layers(model):
        if name in layer.specs:
            layer.merge(name)


def _check_untied(model: nn.Module, name: str | None) -> None:
    """Merging an embedding's delta into a weight the output head shares would change the
    head too (the adapter only changes the lookup), so refuse it, naming both."""
    owners: dict[int, list[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(pname)
    for path, layer in lora_layers(model):
        if isinstance(layer, LoRAEmbedding) and name in layer.specs:
            shared = owners.get(id(layer.weight), [])
            if len(shared) > 1:
                raise ValueError(
                    f"cannot merge the LoRA of {path!r}: its weight is tied to {shared[1:]}, "
                    "which the merge would change too; untie the embeddings or keep it unmerged"
                )


def unmerge_adapter(model: nn.Module) -> None:
    """Subtract every merged adapter from the base weights again."""
    for _, layer in lora_layers(model):
        layer.unmerge()


def merge_and_unload(model: nn.Module, name: str | None = None) -> nn.Module:
    """Replace every LoRA layer by its base with adapter ``name`` merged; returns ``model``.

    A base without a dense weight (a quantized linear with ``dequantize()``) is replaced by
    an ``nn.Linear`` holding the dequantized, merged weight. The result has no adapters.
    """
    from splice.adapters import dense_weight

    name = name or active_adapter(model)
    _check_untied(model, name)
    for path, layer in lora_layers(model):
        run = name if name in layer.specs and name not in layer.merged else None
        if isinstance(layer, LoRAParameter):  # a parametrization: merge, drop it, keep the weight
            layer.unload(run)
            continue
        base = layer.base_layer
        if isinstance(layer, LoRALinear) and not _has_dense_weight(base):
            dense = nn.Linear(
                layer.in_features, layer.out_features, bias=layer.bias is not None
            ).to(dense_weight(base).device)
            weight = dense_weight(base).float()
            dense.weight.data = (
                (layer.merged_weight(run, weight) if run else weight)
                .detach()
                .to(dense.weight.dtype)
            )
            if layer.bias is not None:
                dense.bias.data = layer.bias.detach().float().clone()
            base = dense
        elif run is not None:
            layer.merge(run)
        base.requires_grad_(False)
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, base)
    return model


def _has_dense_weight(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(w, Tensor) and w.is_floating_point() and not hasattr(module, "dequantize")


def adapter_state_dict(model: nn.Module, name: str | None = None) -> dict[str, Tensor]:
    """Adapter ``name``'s tensors by splice module path, adapter name removed (PEFT style):
    ``blocks.0.mixer.q_proj.lora_A.weight``, ``embed.lora_embedding_A``, ..."""
    name = name or active_adapter(model)
    if name is None:
        raise ValueError("the model has no active adapter; name one")
    out: dict[str, Tensor] = {}
    for path, layer in lora_layers(model):
        for local, p in layer.adapter_parameters(name).items():
            out[f"{path}.{_strip_adapter(local, name)}"] = p.detach()
    return out


def _strip_adapter(local: str, name: str) -> str:
    """``lora_A.default.weight`` -> ``lora_A.weight``; ``lora_embedding_A.default`` -> ``lora_embedding_A``."""
    parts = local.split(".")
    return ".".join(p for i, p in enumerate(parts) if not (i == 1 and p == name))


class LoRAAdapter:
    """The registered ``Adapter`` (``splice.interfaces.Adapter``) for one ``LoRAConfig``."""

    def __init__(self, config: LoRAConfig) -> None:
        self.config = config

    def apply(self, model: nn.Module) -> nn.Module:
        return apply_lora(model, self.config)

    def enable(self, model: nn.Module) -> None:
        for _, layer in lora_layers(model):
            layer.set_adapters_enabled(True)

    def disable(self, model: nn.Module) -> None:
        for _, layer in lora_layers(model):
            layer.set_adapters_enabled(False)

    def merge(self, model: nn.Module) -> nn.Module:
        return merge_and_unload(model, self.config.name)

    def adapter_state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        return adapter_state_dict(model, self.config.name)


def build_lora(config: LoRAConfig, ctx: Any = None) -> LoRAAdapter:
    """Registry factory: the adapter a ``{"type": "lora", ...}`` config describes."""
    return LoRAAdapter(config)


__all__ = [
    "LoRAAdapter",
    "active_adapter",
    "adapter_names",
    "adapter_state_dict",
    "apply_lora",
    "build_lora",
    "lora_layers",
    "merge_adapter",
    "merge_and_unload",
    "set_active_adapter",
    "unmerge_adapter",
]
