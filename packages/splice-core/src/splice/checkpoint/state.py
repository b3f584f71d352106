"""Turn optimizer and RNG state into (safetensors tensors, JSON metadata) and back."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``"state.<param>.<name>"``) and JSON.

    Returns:
        tensors: every tensor of the per-parameter state (AdamW: ``step``, ``exp_avg``, ...).
        meta: ``{"param_groups": [...], "scalars": {"<param>": {"<name>": number}}}``.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()  # safetensors refuses tensors that share memory
    for idx, per_param in sd["state"].items():
        for name, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous().cpu()
            elif (
                isinstance(value, dict)
                and value
                and all(isinstance(v, Tensor) for v in value.values())
            ):  # a nested dict of tensors (bitsandbytes' 8-bit state): "<name>/<key>"
                for sub, v in value.items():
                    v = v.detach().contiguous().cpu()
                    if v.data_ptr() in seen:  # e.g. a quantization map shared by all params
                        v = v.clone()
                    seen.add(v.data_ptr())
                    tensors[f"state.{idx}.{name}/{sub}"] = v
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    """Load state written by ``optimizer_to_flat`` into an optimizer over the same parameters."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        if "/" in name:  # nested, see optimizer_to_flat
            outer, sub = name.split("/", 1)
            state.setdefault(int(idx), {}).setdefault(outer, {})[sub] = value
        else:
            state.setdefault(int(idx), {})[name] = value
    for idx, named in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(named)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):  # JSON turned the tuple into a list
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_to_flat() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Capture torch (CPU and CUDA), Python ``random`` and NumPy generator states."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()  # legacy=True: a tuple for the global MT19937 state
    assert isinstance(np_state, tuple), "numpy's global generator is not MT19937"
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *(x for x in np_state[2:])],
    }
    return tensors, meta


def rng_from_flat(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Restore what ``rng_to_flat`` captured (CUDA states only where devices exist)."""
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
