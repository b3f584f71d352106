"""Freezing policies of vision-language models, chosen by the config's ``trainable`` field.

* ``connector``: LLaVA stage 1 (feature alignment): only the connector learns.
* ``connector+lm``: LLaVA stage 2 (instruction tuning): connector and LM learn.
* ``lm``: only the language model learns (native models: LM + patch embedding).
* ``cross_attention``: Flamingo: only the gated cross-attention blocks learn.
* ``all``: nothing frozen (the vision encoder too).

The vision encoder is frozen by every policy except ``all``.
"""

from __future__ import annotations

from torch import nn

#: Which child modules stay trainable under each policy (names of the VLM's attributes).
TRAINABLE_PARTS: dict[str, tuple[str, ...]] = {
    "connector": ("connector",),
    "connector+lm": ("connector", "lm"),
    "lm": ("lm", "patch", "patch_pos"),
    "cross_attention": ("xattn",),
}


def apply_trainable(model: nn.Module, policy: str) -> None:
    """Set ``requires_grad`` on every parameter of ``model`` by ``policy``.

    Parameter names are matched by their first component, except ``xattn``, which names
    the gated cross-attention blocks wherever they sit (they are inserted into the LM).
    """
    if policy == "all":
        for p in model.parameters():
            p.requires_grad_(True)
        return
    if policy not in TRAINABLE_PARTS:
        raise ValueError(
            f"unknown trainable policy {policy!r}; expected all or {sorted(TRAINABLE_PARTS)}"
        )
    parts = TRAINABLE_PARTS[policy]
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        p.requires_grad_(top in parts or ("xattn" in parts and ".xattn." in f".{name}"))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` distinct parameters (a shared tensor counts once)."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


__all__ = ["TRAINABLE_PARTS", "apply_trainable", "count_parameters"]
