"""Checkpoint integrity: ``manifest.json`` records the size and a fast digest of every file.

The manifest is written last, inside the temporary folder, just before the folder is
renamed to ``step-*``: a complete checkpoint always has one, and a file changed after
the save (a flipped byte, a truncation, a half-copied folder) no longer matches it.
The digest is XXH3-128 (``xxhash``): it detects accidental damage, not tampering, and
hashes several GB/s, so it costs a fraction of writing the files (see docs/reliability.md).

Loading verifies the files it reads; ``CorruptCheckpointError`` names the folder, the file
and what is wrong (missing, truncated, different bytes). A whole-checkpoint check also
refuses a manifest that does not list every file a load reads (an emptied or edited
manifest vouches for nothing) and a ``.safetensors`` or ``.json`` file whose bytes are not
that format (a pickle put in place of ``optimizer.safetensors``, with a manifest to match).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
ALGORITHM = "xxh3_128"


class CorruptCheckpointError(ValueError):
    """A checkpoint's files do not match its manifest (or it has none); names path and file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"corrupt checkpoint {self.path}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from both arguments: a worker process's error reaches its parent intact
        # (the default rebuilds from the message alone, which breaks the process pool)
        return (type(self), (self.path, self.problem))


def _hasher(algorithm: str) -> Callable[[], Any]:
    if algorithm == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128
    if algorithm in hashlib.algorithms_available:
        return lambda: hashlib.new(algorithm)
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


def file_digest(path: str | Path, algorithm: str = ALGORITHM) -> str:
    """Hex digest of a file's bytes, hashed straight from the page cache (``mmap``: no copy,
    about 3x faster than reading into a buffer)."""
    h = _hasher(algorithm)()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size:  # an empty file cannot be mapped
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                h.update(mapped)
    return str(h.hexdigest())


def write_manifest(folder: str | Path, **info: Any) -> Path:
    """Digest every file in ``folder`` and write ``manifest.json`` (call it last)."""
    folder = Path(folder)
    files = {
        p.name: {"bytes": p.stat().st_size, "digest": file_digest(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": 1, "algorithm": ALGORITHM, **info, "files": files}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")  # atomic_dir fsyncs it
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a checkpoint folder.

    Raises:
        CorruptCheckpointError: no manifest (an incomplete or foreign folder), or not JSON.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise CorruptCheckpointError(
            folder, f"no {MANIFEST} (incomplete, or not written by splice)"
        )
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        manifest["files"].items()
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise CorruptCheckpointError(folder, f"{MANIFEST} is damaged ({exc})") from None
    return manifest


def verify_checkpoint(folder: str | Path, files: Iterable[str] | None = None) -> dict[str, Any]:
    """Check ``files`` against the manifest; by default the whole checkpoint: every file in
    the folder that a load reads must be listed (and match), and each must be readable as
    its format.

    Returns:
        the manifest.

    Raises:
        CorruptCheckpointError: the manifest lists no files or misses one in the folder, a
            file is missing, has another size, other bytes, or is not the format its name says.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    listed: dict[str, dict[str, Any]] = manifest["files"]
    algorithm = str(manifest.get("algorithm", ALGORITHM))
    if files is None:
        if not listed:
            raise CorruptCheckpointError(
                folder, f"its {MANIFEST} lists no files (it vouches for nothing)"
            )
        on_disk = sorted(p.name for p in folder.iterdir() if p.is_file() and _read_on_load(p.name))
        for name in on_disk:
            if name not in listed:
                raise CorruptCheckpointError(
                    folder,
                    f"{name} is not listed in its {MANIFEST} (added or edited after the save)",
                )
    for name in listed if files is None else files:
        if name not in listed:
            raise CorruptCheckpointError(folder, f"{name} is not listed in its {MANIFEST}")
        path = folder / name
        want = listed[name]
        if not path.is_file():
            raise CorruptCheckpointError(folder, f"{name} is missing")
        size = path.stat().st_size
        if size != want["bytes"]:
            what = "truncated" if size < want["bytes"] else "longer than written"
            raise CorruptCheckpointError(
                folder, f"{name} is {what} ({size} bytes, {want['bytes']} written)"
            )
        if file_digest(path, algorithm) != want["digest"]:
            raise CorruptCheckpointError(
                folder, f"{name} does not match its digest (its bytes changed after the save)"
            )
        problem = format_problem(path)
        if problem:
            raise CorruptCheckpointError(folder, f"{name} {problem}")
    return manifest


def _read_on_load(name: str) -> bool:
    """Files a load reads (so the manifest must vouch for them); others, such as the
    ``eval.json`` that ``splice eval --checkpoint`` writes beside them, are not checked."""
    return name.endswith(".safetensors") or name in ("trainer_state.json", "config.json")


_PICKLE_STARTS = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; torch.save's zip


def format_problem(path: Path) -> str | None:
    """Why ``path`` is not the format its name says (``.safetensors``: an 8-byte header
    length then a JSON header; ``.json``: JSON), or None. Reads the header only."""
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            return f"is not valid JSON ({exc})"
        return None
    if path.suffix != ".safetensors":
        return None
    with open(path, "rb") as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else size
        header_ok = length <= size - 8
        if header_ok:
            try:
                json.loads(f.read(length))
            except (ValueError, UnicodeDecodeError):
                header_ok = False
    if header_ok:
        return None
    # A header length's first byte can be 0x80 too (a 640-byte header is 80 02 00 ...): call
    # it a pickle only when it is not a readable safetensors file.
    if head.startswith(_PICKLE_STARTS):
        return "is a Python pickle, not safetensors (splice never loads pickles)"
    if length > size - 8:
        return "is not a safetensors file (its header length is impossible)"
    return "is not a safetensors file (its header is not JSON)"


__all__ = [
    "ALGORITHM",
    "MANIFEST",
    "CorruptCheckpointError",
    "file_digest",
    "format_problem",
    "read_manifest",
    "verify_checkpoint",
    "write_manifest",
]
