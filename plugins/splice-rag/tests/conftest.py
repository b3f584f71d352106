"""Fixtures of splice-rag's tests: one thread, and a small fictional knowledge base on disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

NAMES = ["zorvan", "tibbet", "quella", "marnok", "sefira", "oddlan", "previn", "halcor"]
CITIES = ["quellmoor", "tarnok", "vessin", "ulmarch", "brisk", "oskany", "fennow", "draith"]
YEARS = ["1872", "1901", "1788", "1955", "1820", "1933", "1764", "1899"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def facts() -> list[tuple[str, str, str, str]]:
    """``(passage id, passage, question, answer)``: two facts per fictional person."""
    out = []
    for i, name in enumerate(NAMES):
        city, year = CITIES[i], YEARS[i]
        out.append((f"{name}-city", f"{name} lives in {city}.", f"where does {name} live?", city))
        out.append((f"{name}-year", f"{name} was born in {year}.", f"when was {name} born?", year))
    return out


@pytest.fixture
def kb(tmp_path: Path) -> dict[str, Path]:
    """passages.jsonl, train.jsonl (even facts), held_out.jsonl (odd facts)."""
    rows = facts()
    (tmp_path / "passages.jsonl").write_text(
        "".join(json.dumps({"id": pid, "text": text}) + "\n" for pid, text, _, _ in rows)
    )
    for split, part in (("train", rows[0::2]), ("held_out", rows[1::2])):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(
                json.dumps({"question": q, "answer": a, "passage_id": pid}) + "\n"
                for pid, _, q, a in part
            )
        )
    return {n: tmp_path / f"{n}.jsonl" for n in ("passages", "train", "held_out")}
