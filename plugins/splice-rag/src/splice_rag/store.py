"""Retrievers in and out of a folder (e.g. ``<run>/retriever``): ``retriever.json`` holds the
config, the retriever writes its own state beside it (BM25 arrays, encoder safetensors, the
faiss index). Nothing is pickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG = "retriever.json"


def save_retriever(retriever: Any, folder: str | Path) -> Path:
    """Write ``retriever`` (config + state) to ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    retriever.save(folder)
    (folder / CONFIG).write_text(json.dumps(retriever.config.model_dump(mode="json"), indent=2))
    return folder


def load_retriever(folder: str | Path) -> Any:
    """The retriever saved in ``folder``, rebuilt through the registry from its config.

    Raises:
        FileNotFoundError: no ``retriever.json`` in ``folder`` (names the path).
    """
    from pydantic import TypeAdapter
    from splice.config import RetrieverField
    from splice.registry import get_registry

    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a saved retriever (no {CONFIG})")
    config = TypeAdapter(RetrieverField).validate_python(json.loads(path.read_text()))
    retriever = get_registry().build("retriever", config, None)
    retriever.load_state(folder)
    return retriever


__all__ = ["load_retriever", "save_retriever"]
