"""A run's checkpoints: ``<root>/step-000120/`` folders, written atomically, pruned to ``keep_last``.

One checkpoint folder holds::

    model.safetensors       model weights (tied weights stored once), or, when the model
                            carries adapters over a frozen base, instead:
    trainable.safetensors   only the parameters that train (the adapter); the base is rebuilt
                            from the config (model, init_from, adapter) when resuming
    optimizer.safetensors   per-parameter optimizer tensors (AdamW moments, step counts)
    rng.safetensors         torch generator states (uint8)
    trainer_state.json      step, data position, schedule step, optimizer groups, Python/NumPy RNG
    config.json             the experiment config (when the trainer was given one)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from splice.checkpoint.atomic import TMP_PREFIX, atomic_dir, remove_stale_temporaries
from splice.checkpoint.state import (
    optimizer_from_flat,
    optimizer_to_flat,
    rng_from_flat,
    rng_to_flat,
)

_STEP_DIR = re.compile(r"^step-(\d+)$")
MODEL_FILE = "model.safetensors"
TRAINABLE_FILE = "trainable.safetensors"
FORMAT_VERSION = 1


def save_model_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s parameters and buffers to a safetensors file (shared tensors once)."""
    save_model(model, str(path), force_contiguous=True)


def frozen_base(model: nn.Module) -> bool:
    """True when ``model`` holds adapter layers and some parameters do not train: its
    checkpoints then store the trainable parameters only."""
    from splice.adapters import has_adapters

    return has_adapters(model) and any(not p.requires_grad for p in model.parameters())


def save_trainable_weights(model: nn.Module, path: str | Path) -> None:
    """Write the parameters of ``model`` that require grad (by name) to a safetensors file."""
    tensors = {
        name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad
    }
    save_file(tensors, str(path))


def load_trainable_weights(model: nn.Module, path: str | Path) -> None:
    """Load a file written by ``save_trainable_weights`` into ``model``'s trainable parameters.

    Raises:
        ValueError: the file's names are not exactly the model's trainable parameters, or a
            shape differs (names the tensor and both shapes).
    """
    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != trainable:
        raise ValueError(
            f"{path} holds trainable parameters that do not match the model's: missing "
            f"{sorted(trainable - set(tensors))[:8]}, unexpected {sorted(set(tensors) - trainable)[:8]} "
            "(was the same adapter config applied?)"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            if value.shape != params[name].shape:
                raise ValueError(
                    f"{path}: tensor {name!r} has shape {tuple(value.shape)}, the model's "
                    f"{tuple(params[name].shape)}"
                )
            params[name].copy_(value)


def load_model_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Load weights into ``model`` from a safetensors file, a checkpoint folder, or a run folder.

    A run folder resolves to its latest checkpoint. A checkpoint of a frozen-base run holds
    only the adapter (``trainable.safetensors``): it loads into a model rebuilt with the same
    adapter applied (``splice.training.experiment.build_experiment_model``). Raises FileNotFoundError naming the path
    when no ``model.safetensors`` is found, ValueError on missing/unexpected keys when strict.
    """
    path = Path(path)
    if path.is_dir():
        if (path / MODEL_FILE).is_file() or (path / TRAINABLE_FILE).is_file():
            path = path / MODEL_FILE
        else:
            latest = CheckpointManager(path / "checkpoints").latest()
            if latest is None:
                raise FileNotFoundError(f"{path}: no {MODEL_FILE} and no checkpoints/step-* inside")
            path = latest / MODEL_FILE
    if not path.is_file() and (path.parent / TRAINABLE_FILE).is_file() and frozen_base(model):
        # an adapter checkpoint, and the caller rebuilt the base with the adapter applied
        load_trainable_weights(model, path.parent / TRAINABLE_FILE)
        return
    if not path.is_file() and (path.parent / TRAINABLE_FILE).is_file():
        raise FileNotFoundError(
            f"{path.parent} holds only the trainable (adapter) weights of a run with a frozen "
            "base; rebuild its model from the run's config.json (model, init_from, adapter) "
            f"and load {TRAINABLE_FILE} with load_trainable_weights"
        )
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found: {path}")
    missing, unexpected = load_model(model, str(path), strict=False)
    if strict and (missing or unexpected):
        raise ValueError(
            f"{path} does not match the model: missing keys {sorted(missing)[:8]}, "
            f"unexpected keys {sorted(unexpected)[:8]}"
        )


class CheckpointManager:
    """Saves, finds, loads and prunes the checkpoints under ``root``."""

    def __init__(self, root: str | Path, *, keep_last: int | None = None) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporaries of a killed writer are ignored)."""
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name))
        ]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def save(
        self,
        step: int,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        state: dict[str, Any],
        config: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint ``step`` atomically, then prune to ``keep_last``; returns its folder."""
        remove_stale_temporaries(self.root)
        final = self.root / f"step-{step:06d}"
        rng_tensors, rng_meta = rng_to_flat()
        full_state = {"format": FORMAT_VERSION, "step": step, **state, "rng": rng_meta}
        with atomic_dir(final) as tmp:
            if frozen_base(model):  # the base is rebuilt from the config; save the adapter
                save_trainable_weights(model, tmp / TRAINABLE_FILE)
                full_state["weights"] = "trainable"
            else:
                save_model_weights(model, tmp / MODEL_FILE)
            if optimizer is not None:
                opt_tensors, opt_meta = optimizer_to_flat(optimizer)
                save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
                full_state["optimizer"] = opt_meta
            save_file(rng_tensors, str(tmp / "rng.safetensors"))
            (tmp / "trainer_state.json").write_text(json.dumps(full_state, indent=1))
            if config is not None:
                (tmp / "config.json").write_text(json.dumps(config, indent=2))
        self._prune()
        return final

    def load(
        self,
        path: str | Path,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        restore_rng: bool = True,
    ) -> dict[str, Any]:
        """Restore model (and optimizer, RNG) from a checkpoint folder; returns its trainer state."""
        path = Path(path)
        state: dict[str, Any] = json.loads((path / "trainer_state.json").read_text())
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: checkpoint format {state.get('format')!r}, expected {FORMAT_VERSION}"
            )
        if state.get("weights") == "trainable":
            load_trainable_weights(model, path / TRAINABLE_FILE)
        else:
            load_model_weights(model, path / MODEL_FILE)
        if optimizer is not None and "optimizer" in state:
            tensors = load_file(str(path / "optimizer.safetensors"))
            optimizer_from_flat(optimizer, tensors, state["optimizer"])
        if restore_rng:
            rng_from_flat(load_file(str(path / "rng.safetensors")), state["rng"])
        return state

    def _prune(self) -> None:
        if self.keep_last is None:
            return
        for old in self.checkpoints()[: -self.keep_last]:
            # Rename first so a kill during deletion never leaves a half-deleted step-* folder.
            doomed = old.with_name(f"{TMP_PREFIX}del-{old.name}")
            os.rename(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
