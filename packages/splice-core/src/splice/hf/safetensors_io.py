"""Read and write Hugging Face safetensors checkpoints: one file or an index of shards.

The layout is the one ``transformers`` writes: ``model.safetensors``, or
``model.safetensors.index.json`` (``{"metadata": {"total_size": N}, "weight_map":
{tensor: shard}}``) next to ``model-00001-of-0000K.safetensors`` shards.

Every header is validated before any tensor data is read, so a missing shard, a
truncated file or a tensor listed in the index but absent from its shard fails
with a message naming the file (and tensor) instead of loading part of a model.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; the message names the file, tensor or field at fault."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, read from a safetensors header."""

    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors file's header (no tensor data is read).

    Raises:
        CheckpointError: the file is missing, truncated, or its header is not valid
            safetensors; the message names the file.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: safetensors file not found")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise CheckpointError(
                f"{path}: truncated safetensors file (header says {n} bytes, file has {size - 8} after the length)"
            )
        try:
            meta = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    data_size = size - 8 - n
    out: dict[str, TensorInfo] = {}
    for name, entry in meta.items():
        if name == "__metadata__":
            continue
        _start, end = entry["data_offsets"]
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated safetensors file: tensor {name!r} ends at data byte {end} "
                f"but the file holds only {data_size} data bytes"
            )
        if entry["dtype"] not in _DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} has unsupported dtype {entry['dtype']!r}"
            )
        out[name] = TensorInfo(path, tuple(entry["shape"]), _DTYPES[entry["dtype"]])
    return out


def read_index(directory: Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint in ``directory`` (single file or sharded), validated.

    Raises:
        CheckpointError: no checkpoint, a missing or truncated shard, or a tensor named in
            the index but absent from its shard.
    """
    single, index = directory / SINGLE_FILE, directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc!r})") from None
        headers: dict[str, dict[str, TensorInfo]] = {}
        for shard in sorted(set(weight_map.values())):
            if not (directory / shard).is_file():
                users = sorted(k for k, v in weight_map.items() if v == shard)
                raise CheckpointError(
                    f"{directory / shard}: shard listed in {INDEX_FILE} is missing "
                    f"(it holds {len(users)} tensor(s), e.g. {users[0]!r})"
                )
            headers[shard] = read_header(directory / shard)
        out: dict[str, TensorInfo] = {}
        for name, shard in weight_map.items():
            if name not in headers[shard]:
                raise CheckpointError(
                    f"{directory / shard}: tensor {name!r} is listed in {INDEX_FILE} but not in the shard"
                )
            out[name] = headers[shard][name]
        return out
    if single.is_file():
        return read_header(single)
    raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE} found")


def read_tensors(infos: Mapping[str, TensorInfo], names: list[str]) -> dict[str, Tensor]:
    """Load ``names`` (grouped by file, each file opened once) onto the CPU."""
    from safetensors import SafetensorError, safe_open

    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(infos[name].file, []).append(name)
    out: dict[str, Tensor] = {}
    for file, file_names in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in file_names:
                    out[name] = f.get_tensor(name)
        except SafetensorError as exc:
            raise CheckpointError(f"{file}: cannot read safetensors data ({exc})") from None
    return out


def parse_size(size: int | str) -> int:
    """``"5GB" -> 5 * 10**9``, ``"200KB" -> 200_000``, ``"10MiB" -> 10 * 2**20``; ints pass through."""
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for suffix, mult in (
        ("GIB", 2**30),
        ("MIB", 2**20),
        ("KIB", 2**10),
        ("GB", 10**9),
        ("MB", 10**6),
        ("KB", 10**3),
        ("B", 1),
    ):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mult)
    return int(s)


def write_checkpoint(
    tensors: Mapping[str, Tensor], directory: Path, *, max_shard_size: int | str = "5GB"
) -> list[Path]:
    """Write ``tensors`` as ``model.safetensors``, or as shards plus an index when they exceed
    ``max_shard_size`` (tensors are never split; one larger than the limit gets its own shard).

    Returns:
        The files written.
    """
    from safetensors.torch import save_file

    limit = parse_size(max_shard_size)
    shards: list[dict[str, Tensor]] = [{}]
    used = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and used + nbytes > limit:
            shards.append({})
            used = 0
        shards[-1][name] = t.detach().contiguous().cpu()
        used += nbytes
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [
        directory / SINGLE_FILE,
        directory / INDEX_FILE,
        *directory.glob("model-*-of-*.safetensors"),
    ]:
        stale.unlink(missing_ok=True)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE_FILE), metadata=meta)
        return [directory / SINGLE_FILE]
    files, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / fname), metadata=meta)
        files.append(directory / fname)
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, directory / INDEX_FILE]
