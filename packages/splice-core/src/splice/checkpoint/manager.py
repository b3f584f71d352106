"""A run's checkpoints: ``<root>/step-000120/`` folders, written atomically, pruned to ``keep_last``.

One checkpoint folder holds::

    model.safetensors       model weights (tied weights stored once), or, when the model
                            carries adapters over a frozen base, instead:
    trainable.safetensors   only the parameters that train (the adapter); the base is rebuilt
                            from the config (model, init_from, adapter) when resuming
    optimizer.safetensors   per-parameter optimizer tensors (AdamW moments, step counts)
    rng.safetensors         torch generator states (uint8)
    trainer_state.json      step, data position, schedule step, optimizer groups, Python/NumPy RNG
    objective.safetensors   an online objective's own tensors (value head, reference copy), if any
    config.json             the experiment config (when the trainer was given one)
    manifest.json           size and digest of every file above, written last (``integrity``)

Loading verifies the manifest first, so damaged files are reported by path before any
state is touched; ``latest_intact`` skips (and, when asked, sets aside) damaged ones.
A manager given a ``run_id`` prunes only that run's checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from splice.checkpoint.atomic import TMP_PREFIX, atomic_dir, remove_stale_temporaries
from splice.checkpoint.integrity import (
    MANIFEST,
    CorruptCheckpointError,
    format_problem,
    read_manifest,
    verify_checkpoint,
    write_manifest,
)
from splice.checkpoint.state import (
    optimizer_from_flat,
    optimizer_to_flat,
    rng_from_flat,
    rng_to_flat,
)

_STEP_DIR = re.compile(r"^step-(\d+)$")
_SET_ASIDE = re.compile(r"^step-(\d+)\.(corrupt|nonfinite)$")
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


def _weights_in(folder: Path) -> Path | None:
    """A checkpoint folder's weights file: the full model's, or a frozen-base run's adapter."""
    for name in (MODEL_FILE, TRAINABLE_FILE):
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_weights(path: str | Path) -> Path:
    """The weights file a path means: the file itself, a checkpoint folder's
    (``model.safetensors``, or ``trainable.safetensors`` of a frozen-base run), or that of the
    newest intact checkpoint of a run folder (damaged newer ones are skipped with a warning).
    A file inside a checkpoint with a manifest is verified against it.

    Raises:
        FileNotFoundError: nothing to load there (names the path).
        CorruptCheckpointError: the file's checkpoint manifest says it is damaged.
    """
    path = Path(path)
    if path.is_dir() and _weights_in(path) is None:
        mgr = CheckpointManager(path / "checkpoints")
        latest = mgr.latest_intact(require_manifest=False)
        if latest is None:
            found = f"only damaged ones ({', '.join(p.name for p in mgr.checkpoints())})"
            raise FileNotFoundError(
                f"{path}: no {MODEL_FILE} and no intact checkpoints/step-* inside"
                + (f": {found}" if mgr.checkpoints() else "")
            )
        path = latest
    if path.is_dir():
        path = _weights_in(path) or path / MODEL_FILE
    elif not path.is_file() and path.name == MODEL_FILE:  # an adapter-only checkpoint
        path = _weights_in(path.parent) or path
    if not path.is_file():
        raise FileNotFoundError(f"model weights not found: {path}")
    if (path.parent / MANIFEST).is_file():  # inside a splice checkpoint: check it first
        verify_checkpoint(path.parent, [path.name])
    elif _STEP_DIR.match(path.parent.name) or (path.parent / "trainer_state.json").is_file():
        warn_unverified(path.parent)
    return path


def warn_unverified(folder: Path) -> None:
    """Say that a splice checkpoint without a manifest is loaded unchecked (a deleted
    manifest, or a folder made by hand): its bytes cannot be verified."""
    print(
        f"warning: {folder} has no {MANIFEST}: its files cannot be checked against their "
        "digests; loading them as they are",
        file=sys.stderr,
    )


def load_model_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Load weights into ``model`` from a safetensors file, a checkpoint folder, or a run folder.

    A run folder resolves to its newest intact checkpoint; inside a checkpoint the file is
    verified against the manifest first. A checkpoint of a frozen-base run holds only the
    adapter (``trainable.safetensors``): it loads into a model rebuilt with the same adapter
    applied (``splice.training.experiment.build_experiment_model``).

    Raises:
        FileNotFoundError: no weights found (names the path), or adapter-only weights for a
            model without a frozen base.
        CorruptCheckpointError: the file is damaged (names it).
        ValueError: missing/unexpected keys when ``strict``.
    """
    path = resolve_weights(path)
    if path.name == TRAINABLE_FILE:
        if not frozen_base(model):
            raise FileNotFoundError(
                f"{path.parent} holds only the trainable (adapter) weights of a run with a "
                "frozen base; rebuild its model from the run's config.json (model, init_from, "
                f"adapter) and load {TRAINABLE_FILE} with load_trainable_weights"
            )
        _load_trainable(model, path)
        return
    _load_file(model, path, strict=strict)


def _load_trainable(model: nn.Module, path: Path) -> None:
    try:
        load_trainable_weights(model, path)
    except (SafetensorError, OSError) as exc:
        raise CorruptCheckpointError(path.parent, f"{path.name} cannot be read ({exc})") from None


def _read_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, or ``CorruptCheckpointError`` naming it."""
    problem = format_problem(folder / name) if (folder / name).is_file() else None
    if problem:
        raise CorruptCheckpointError(folder, f"{name} {problem}")
    try:
        return load_file(str(folder / name))
    except (SafetensorError, OSError) as exc:
        raise CorruptCheckpointError(folder, f"{name} cannot be read ({exc})") from None


def _load_file(model: nn.Module, path: Path, *, strict: bool) -> None:
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError) as exc:  # e.g. a truncated file with no manifest
        raise CorruptCheckpointError(path.parent, f"{path.name} cannot be read ({exc})") from None
    if strict and (missing or unexpected):
        raise ValueError(
            f"{path} does not match the model: missing keys {sorted(missing)[:8]}, "
            f"unexpected keys {sorted(unexpected)[:8]}"
        )


def check_loadable(checkpoint: Path, model: nn.Module) -> None:
    """Check, from the safetensors header alone, that ``checkpoint``'s weights fit ``model``
    (the same tensor names and shapes; a frozen-base run's: its trainable parameters), so a
    resume that would fail to load is refused before anything is written.

    Raises:
        ValueError: naming the checkpoint and up to 8 missing, unexpected or reshaped tensors.
    """
    from safetensors import safe_open

    weights = _weights_in(checkpoint)
    if weights is None:
        raise CorruptCheckpointError(checkpoint, f"no {MODEL_FILE} or {TRAINABLE_FILE}")
    with safe_open(str(weights), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    if weights.name == TRAINABLE_FILE:
        expected = {n: p for n, p in model.named_parameters() if p.requires_grad}
    else:
        expected = dict(model.state_dict())
    # Tied tensors are stored once: a name missing from the file is fine if it shares
    # storage with one that is there.
    stored_ptrs = {expected[n].data_ptr() for n in stored if n in expected}
    missing = [
        n for n, t in expected.items() if n not in stored and t.data_ptr() not in stored_ptrs
    ]
    unexpected = [n for n in stored if n not in expected]
    reshaped = [
        f"{n} {stored[n]} vs {tuple(t.shape)}"
        for n, t in expected.items()
        if n in stored and stored[n] != tuple(t.shape)
    ]
    if missing or unexpected or reshaped:
        parts = [
            f"{what} {names[:8]}"
            for what, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("reshaped (stored vs model)", reshaped),
            )
            if names
        ]
        raise ValueError(f"{checkpoint} does not fit the model of this config: {'; '.join(parts)}")


class CheckpointManager:
    """Saves, finds, loads and prunes the checkpoints under ``root``."""

    def __init__(
        self, root: str | Path, *, keep_last: int | None = None, run_id: str | None = None
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last
        self.run_id = run_id

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

    def latest_intact(
        self, *, set_aside: bool = False, require_manifest: bool = True
    ) -> Path | None:
        """The newest checkpoint whose files match its manifest; warns about each damaged
        newer one and, with ``set_aside``, renames it to ``step-N.corrupt`` (kept to inspect,
        ignored from then on). Without ``require_manifest`` a folder with no manifest (made
        by hand or by an older splice) is taken as it is: there is nothing to check it by."""
        for path in reversed(self.checkpoints()):
            if not require_manifest and not (path / MANIFEST).is_file():
                return path  # resolve_weights warns as it reads it
            try:
                verify_checkpoint(path)
            except CorruptCheckpointError as exc:
                note = ""
                if set_aside:
                    note = f"; moved to {self.set_aside(path, 'corrupt').name}"
                print(f"warning: {exc}: skipped, trying an older checkpoint{note}", file=sys.stderr)
                continue
            return path
        return None

    def set_aside(self, path: Path, reason: str) -> Path:
        """Rename checkpoint ``path`` to ``<name>.<reason>`` so resume and pruning ignore it."""
        target = path.with_name(f"{path.name}.{reason}")
        if target.exists():
            shutil.rmtree(target)
        os.rename(path, target)
        return target

    def save(
        self,
        step: int,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        state: dict[str, Any],
        config: dict[str, Any] | None = None,
        protect: Iterable[Path | None] = (),
        extra_tensors: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write checkpoint ``step`` atomically (manifest last), then prune to ``keep_last``
        (never a ``protect``ed checkpoint); returns its folder.

        ``extra_tensors`` (an online objective's value head, reference copy, ...) go to
        ``objective.safetensors``.
        """
        remove_stale_temporaries(self.root)
        final = self.root / f"step-{step:06d}"
        rng_tensors, rng_meta = rng_to_flat()
        full_state = {"format": FORMAT_VERSION, "step": step, **state, "rng": rng_meta}
        if self.run_id is not None:
            full_state["run_id"] = self.run_id
        try:
            self._write(final, model, optimizer, full_state, config, extra_tensors, rng_tensors)
        except (OSError, SafetensorError) as exc:  # e.g. a full disk: say where, and what helps
            raise OSError(
                f"cannot write checkpoint {final}: {exc}. Free space on that volume, lower "
                "train.keep_last, or raise train.checkpoint_every"
            ) from exc
        self._prune(protect)
        return final

    def _write(
        self,
        final: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        full_state: dict[str, Any],
        config: dict[str, Any] | None,
        extra_tensors: dict[str, torch.Tensor] | None,
        rng_tensors: dict[str, torch.Tensor],
    ) -> None:
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
            if extra_tensors:
                save_file(extra_tensors, str(tmp / "objective.safetensors"))
            (tmp / "trainer_state.json").write_text(json.dumps(full_state, indent=1))
            if config is not None:
                (tmp / "config.json").write_text(json.dumps(config, indent=2))
            # last: it vouches for the rest
            write_manifest(tmp, step=full_state["step"], run_id=self.run_id)

    def load(
        self,
        path: str | Path,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        restore_rng: bool = True,
        verify: bool = True,
    ) -> dict[str, Any]:
        """Restore model (and optimizer, RNG) from a checkpoint folder; returns its trainer state.

        With ``verify`` every file is checked against the manifest before anything is loaded.

        Raises:
            CorruptCheckpointError: a damaged checkpoint (names the folder and the file).
        """
        path = Path(path)
        if verify:
            verify_checkpoint(path)
        try:
            state: dict[str, Any] = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError) as exc:
            raise CorruptCheckpointError(path, f"trainer_state.json unreadable ({exc})") from None
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: checkpoint format {state.get('format')!r}, expected {FORMAT_VERSION}"
            )
        if state.get("weights") == "trainable":
            _load_trainable(model, path / TRAINABLE_FILE)
        else:
            _load_file(model, path / MODEL_FILE, strict=True)
        if optimizer is not None and "optimizer" in state:
            tensors = _read_tensors(path, "optimizer.safetensors")
            optimizer_from_flat(optimizer, tensors, state["optimizer"])
        if restore_rng:
            rng_from_flat(_read_tensors(path, "rng.safetensors"), state["rng"])
        return state

    def run_of(self, path: Path) -> str | None:
        """The ``run_id`` a checkpoint's manifest records (None: unknown or unreadable)."""
        try:
            run_id = read_manifest(path).get("run_id")
        except CorruptCheckpointError:
            return None
        return str(run_id) if run_id is not None else None

    def prune(self, protect: Iterable[Path | None] = ()) -> None:
        """Keep this run's newest ``keep_last`` checkpoints (and any ``protect``ed one);
        set-aside folders (``step-N.corrupt``, ``step-N.nonfinite``) older than the oldest
        kept checkpoint go too, so they cannot fill the disk over a long run."""
        self._prune(protect)

    def _prune(self, protect: Iterable[Path | None] = ()) -> None:
        if self.keep_last is None:
            return
        keep = {Path(p).name for p in protect if p is not None}
        mine = [
            p
            for p in self.checkpoints()
            if self.run_id is None or self.run_of(p) == self.run_id  # never another run's
        ]
        for old in mine[: -self.keep_last]:
            if old.name in keep:
                continue
            _remove(old)
        kept = [p for p in self.checkpoints() if p in mine]
        if not kept:
            return
        oldest = int(_STEP_DIR.match(kept[0].name).group(1))  # type: ignore[union-attr]
        for aside in self.set_aside_folders():
            step = int(_SET_ASIDE.match(aside.name).group(1))  # type: ignore[union-attr]
            owner = self.run_of(aside)  # None: unreadable, as a damaged one may be
            if step < oldest and (self.run_id is None or owner in (None, self.run_id)):
                _remove(aside)

    def set_aside_folders(self) -> list[Path]:
        """``step-N.<reason>`` folders (damaged or unverified checkpoints kept to inspect)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if _SET_ASIDE.match(p.name))


def _remove(folder: Path) -> None:
    # Rename first so a kill during deletion never leaves a half-deleted step-* folder.
    doomed = folder.with_name(f"{TMP_PREFIX}del-{folder.name}")
    os.rename(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
