"""The ``r1-zero`` starts shipped with the package: SFT models trained to a plateau once,
offline, one per seed, like the pretrained base model R1-Zero's RL starts from.

A start that reaches its plateau on every seed takes several times the main job's five
minutes at this model size (docs/concepts/grpo-r1.md, "The start"), so the main job reads
it: ``starts/r1-zero/seed-<k>.safetensors`` (the model's weights, float32) beside
``starts.json``, which records what trained them (model, tokenizer, task, SFT settings),
each file's SHA-256, and each seed's figures and curve when it was published.
``splice run r1-zero-start --set publish=true`` trains and publishes them again.

A config whose model or SFT settings differ from the manifest's is refused by name: the
shipped weights would not be the start it describes (train its own with
``--set start=train``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

MANIFEST = "starts.json"  # not manifest.json: that name is a checkpoint's own (splice.checkpoint)
#: the fields of an ``R1ZeroConfig`` that decide what its start is
START_FIELDS = ("model", "tokenizer", "sft_task", "sft", "max_len")


def starts_dir() -> Path:
    """The folder of the shipped starts inside the installed package."""
    return Path(__file__).parent / "starts" / "r1-zero"


#: SFT settings that do not change the weights (logging, plots, checkpoint keeping; the
#: precision is the study's, pinned float32)
_NOT_WEIGHTS = ("precision", "progress", "log_every", "plot_curves", "checkpoint_every",
                "keep_last", "retain_host_memory")  # fmt: skip


def start_spec(config: Any) -> dict[str, Any]:
    """What a config's start is trained from: its ``START_FIELDS``, as JSON values."""
    return comparable(config.model_dump(mode="json", include=set(START_FIELDS)))


def comparable(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` without the SFT settings that do not change the weights (``_NOT_WEIGHTS``)."""
    sft = {k: v for k, v in spec.get("sft", {}).items() if k not in _NOT_WEIGHTS}
    return {**spec, "sft": sft}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(folder: Path | None = None) -> dict[str, Any]:
    """The manifest of the shipped starts (``folder``: default :func:`starts_dir`).

    Raises:
        FileNotFoundError: no manifest, with the command that publishes one.
    """
    path = (folder or starts_dir()) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped r1-zero starts at {path}: run `splice run r1-zero-start --set "
            "publish=true`, or train the start in the run with `--set start=train`"
        )
    return json.loads(path.read_text())


def shipped_start(config: Any, seed: int, folder: Path | None = None) -> Path:
    """The shipped start of ``seed`` for ``config``, checked against the manifest.

    Raises:
        ValueError: the config's start settings differ from the manifest's (names the
            fields), the seed has no shipped start (names the seeds there are), or the file's
            SHA-256 is not the manifest's (a damaged or replaced file).
    """
    folder = folder or starts_dir()
    manifest = read_manifest(folder)
    spec, shipped = start_spec(config), comparable(manifest["trained_with"])
    differ = [f for f in START_FIELDS if spec.get(f) != shipped.get(f)]
    if differ:
        raise ValueError(
            f"the shipped r1-zero starts were trained with other {', '.join(differ)} than this "
            "config's: use --set start=train (trains the start in the run), or publish new "
            "starts with `splice run r1-zero-start --set publish=true`"
        )
    entry = manifest["seeds"].get(str(seed))
    if entry is None:
        raise ValueError(
            f"no shipped r1-zero start for seed {seed}; shipped seeds: "
            f"{sorted(int(s) for s in manifest['seeds'])} (or use --set start=train)"
        )
    path = folder / entry["file"]
    if sha256(path) != entry["sha256"]:
        raise ValueError(f"{path}: SHA-256 differs from {MANIFEST}'s (damaged or replaced file)")
    return path


def publish(
    config: Any,
    runs: dict[int, Path],
    figures: dict[int, dict[str, Any]],
    *,
    folder: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Copy each seed's trained start (``runs``: seed -> its SFT run folder) into ``folder``
    (default :func:`starts_dir`) as ``seed-<k>.safetensors`` and write the manifest with
    ``figures`` (seed -> its figures and curve) and ``extra``. The manifest is written last,
    atomically: a failed publish leaves the old manifest, which then refuses the new files
    by their SHA-256."""
    from splice.checkpoint.atomic import atomic_write_text

    folder = folder or starts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Any] = {}
    for seed, run in sorted(runs.items()):
        source = newest_weights(run)
        target = folder / f"seed-{seed}.safetensors"
        shutil.copyfile(source, target)
        seeds[str(seed)] = {"file": target.name, "sha256": sha256(target), **figures[seed]}
    manifest = {"trained_with": start_spec(config), "seeds": seeds, **(extra or {})}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return folder


def newest_weights(run: Path) -> Path:
    """The ``model.safetensors`` of the newest checkpoint of the run in ``run``."""
    found = sorted(run.glob("checkpoints/step-*/model.safetensors"))
    if not found:
        raise FileNotFoundError(f"{run}: no checkpoints/step-*/model.safetensors")
    return found[-1]
