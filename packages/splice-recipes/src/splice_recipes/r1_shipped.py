"""The ``r1-zero`` starts shipped with the package: SFT models trained to a plateau once,
offline, one per seed, like the pretrained base model R1-Zero's RL starts from.

A start that reaches its plateau on every seed takes several times the main job's five
minutes at this model size (docs/concepts/grpo-r1.md, "The start"), so the main job reads
it: ``starts/r1-zero/seed-<k>.safetensors`` (the model's weights, float32) beside
``starts.json``, which records what trained them (model, tokenizer, task, SFT settings)
and each seed's figures and curve when it was published, and the folder's checkpoint
manifest (``manifest.json``, the one every splice checkpoint has: each file's size and
digest), which ``load_model_weights`` checks before it reads a start.
``splice run r1-zero-start --set publish=true`` trains and publishes them again.

A config whose model or SFT settings differ from the manifest's is refused by name: the
shipped weights would not be the start it describes (train its own with
``--set start=train``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

MANIFEST = "starts.json"  # beside the checkpoint manifest (manifest.json), which vouches for it
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
            fields), or the seed has no shipped start (names the seeds there are).
        CorruptCheckpointError: the weights or ``starts.json`` are not the bytes the
            folder's checkpoint manifest lists (a damaged or replaced file; names it).
    """
    from splice.checkpoint.integrity import verify_checkpoint

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
    verify_checkpoint(folder, [entry["file"], MANIFEST])
    return folder / entry["file"]


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
    ``figures`` (seed -> its figures and curve) and ``extra``, then the checkpoint manifest,
    last: a publish that fails before it leaves the old one, which refuses the new files."""
    from splice.checkpoint.atomic import atomic_write_text
    from splice.checkpoint.integrity import write_manifest
    from splice.checkpoint.manager import resolve_weights

    folder = folder or starts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Any] = {}
    for seed, run in sorted(runs.items()):
        target = folder / f"seed-{seed}.safetensors"
        shutil.copyfile(resolve_weights(run), target)  # the run's newest intact checkpoint
        seeds[str(seed)] = {"file": target.name, **figures[seed]}
    manifest = {"trained_with": start_spec(config), "seeds": seeds, **(extra or {})}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    write_manifest(folder)
    return folder
