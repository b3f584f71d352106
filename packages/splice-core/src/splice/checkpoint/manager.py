"""A run's checkpoints: ``<root>/step-000120/`` folders, written atomically, pruned to ``keep_last``.

One checkpoint folder holds::

    model.safetensors       model weights (tied weights stored once)
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
FORMAT_VERSION = 1


def save_model_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s parameters and buffers to a safetensors file (shared tensors once)."""
    save_model(model, str(path), force_contiguous=True)


def load_model_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Load weights into ``model`` from a safetensors file, a checkpoint folder, or a run folder.

    A run folder resolves to its latest checkpoint. Raises FileNotFoundError naming the path
    when no ``model.safetensors`` is found, ValueError on missing/unexpected keys when strict.
    """
    path = Path(path)
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            path = path / MODEL_FILE
        else:
            latest = CheckpointManager(path / "checkpoints").latest()
            if latest is None:
                raise FileNotFoundError(f"{path}: no {MODEL_FILE} and no checkpoints/step-* inside")
            path = latest / MODEL_FILE
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
