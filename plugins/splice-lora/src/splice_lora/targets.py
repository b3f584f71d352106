"""Which modules of a model a ``LoRAConfig`` targets.

Candidates are linear-like modules (``splice.adapters.is_linear_like``) and embeddings,
found without descending into them (a quantized linear's internals, or a LoRA layer's own
``lora_A``/``lora_B``, are never candidates). A spec that matches nothing, or a listed name
that matches no module, is an error that lists what the model has.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from splice.adapters import is_linear_like
from torch import nn

from splice_lora.configs import ALL_LINEAR, LoRAConfig
from splice_lora.layers import LoRAEmbedding, LoRALayer, LoRALinear

#: Output heads that ``all-linear`` leaves alone (as PEFT does): adapting the vocabulary
#: projection is rarely wanted and ties it to the embedding in tied models.
OUTPUT_HEADS = ("lm_head",)
#: Gates ``all-linear`` also leaves alone: MoE routers (transformers' are not linear modules,
#: so PEFT's all-linear skips them too) and Qwen2-MoE's ``(1, D)`` shared-expert gate, which
#: cannot hold a rank-``r`` delta.
SCALAR_GATES = ("router", "shared_gate")


def candidates(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, str]]:
    """``(dotted name, module, "linear" | "embedding")`` for every module LoRA can wrap."""
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, LoRALinear) or (
            is_linear_like(child) and not isinstance(child, LoRALayer)
        ):
            yield full, child, "linear"
        elif isinstance(child, (nn.Embedding, LoRAEmbedding)):
            yield full, child, "embedding"
        else:
            yield from candidates(child, full + ".")


def _leaf(name: str) -> str:
    """The name a target spells: the last dotted part, except that an MoE router's linear
    (``...router.gate``) is ``router``, so ``gate`` means the MLP gate projection in every
    family (Llama's ``ffn.gate``, each expert's and the shared experts' ``gate``)."""
    parent, _, leaf = name.rpartition(".")
    if leaf == "gate" and (parent == "router" or parent.endswith(".router")):
        return "router"
    return leaf


def _matches(name: str, wanted: str) -> bool:
    if wanted == "gate" and _leaf(name) == "router":
        return False
    return _leaf(name) == wanted or name == wanted or name.endswith("." + wanted)


def select_targets(model: nn.Module, config: LoRAConfig) -> list[tuple[str, nn.Module, str]]:
    """The modules ``config`` targets, in model order.

    Raises:
        ValueError: nothing matches, or a listed name matches nothing; the message lists the
            model's linear (and embedding) module names.
    """
    found = list(candidates(model))
    names = config.target_names()
    if config.target_regex is not None:
        pattern = re.compile(config.target_regex)
        chosen = [c for c in found if pattern.fullmatch(c[0])]
        what = f"target_regex {config.target_regex!r}"
    elif names == ALL_LINEAR:
        skip = OUTPUT_HEADS + SCALAR_GATES
        chosen = [c for c in found if c[2] == "linear" and _leaf(c[0]) not in skip]
        what = "targets 'all-linear'"
    else:
        assert isinstance(names, list)
        unmatched = [w for w in names if not any(_matches(c[0], w) for c in found)]
        if unmatched and len(unmatched) < len(names):
            raise ValueError(
                f"targets {config.targets}: {unmatched} match no module; {_inventory(found)}"
            )
        chosen = [c for c in found if any(_matches(c[0], w) for w in names)]
        what = f"targets {config.targets}"
    if not chosen:
        raise ValueError(f"{what} match no module of the model; {_inventory(found)}")
    return chosen


def _inventory(found: list[tuple[str, nn.Module, str]]) -> str:
    linear = sorted({_leaf(n) for n, _, kind in found if kind == "linear"})
    embed = sorted({_leaf(n) for n, _, kind in found if kind == "embedding"})
    example = next((n for n, _, kind in found if kind == "linear"), None)
    return (
        f"the model's linear modules are named {linear} (e.g. {example!r})"
        + (f", its embeddings {embed}" if embed else "")
        + "; or give target_regex"
    )


def check_rank(name: str, module: nn.Module, kind: str, r: int) -> None:
    """Raises ValueError naming the layer when ``r`` exceeds the smaller side of its weight."""
    if kind == "linear":
        dims = (module.in_features, module.out_features)  # type: ignore[union-attr]
        sides = f"in_features={dims[0]}, out_features={dims[1]}"
    else:
        dims = (module.num_embeddings, module.embedding_dim)  # type: ignore[union-attr]
        sides = f"num_embeddings={dims[0]}, embedding_dim={dims[1]}"
    if r > min(dims):  # type: ignore[call-overload]
        raise ValueError(
            f"r={r} is larger than min({sides}) = {min(dims)} of layer {name!r}; "  # type: ignore[call-overload]
            "a rank above the smaller side adds parameters but no expressiveness"
        )


__all__ = ["OUTPUT_HEADS", "candidates", "check_rank", "select_targets"]
