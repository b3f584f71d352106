"""``RetrieverConformance`` catches planted faults: a word-overlap retriever, registered as a
plugin would be, is wrong in one way per ``fault``, and the check that should notice fails
with a message naming the retriever's tag, plugin and module."""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from splice.config import ComponentConfig
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.testing import run_suite
from splice_rag.interfaces import Hits, words
from splice_rag.testing import RetrieverConformance

Fault = Literal[
    "none", "unsorted", "batch_normalised", "reversed", "unpadded", "duplicates",
    "forgets_on_load", "pickles", "unseeded", "ignores_boost", "silent_before_index",
    "prefix_differs",
]  # fmt: skip


class ToyConfig(ComponentConfig):
    type: Literal["test_toy"] = "test_toy"
    fault: Fault = "none"
    boost: float = 1.0


class ToyRetriever:
    """Scores a passage by the idf-weighted words it shares with the query (times ``boost``),
    less a little for its length (so no two passages tie)."""

    def __init__(self, config: ToyConfig, ctx: object = None) -> None:
        self.config = config
        self.passages: list[str] | None = None

    def index(self, passages: Sequence[str]) -> None:
        self.passages = list(passages)

    def _scores(self, query: str) -> np.ndarray:
        assert self.passages is not None
        docs = [set(words(p)) for p in self.passages]
        n = len(docs)
        boost = 1.0 if self.config.fault == "ignores_boost" else self.config.boost
        out = []
        for i, d in enumerate(docs):
            shared = set(words(query)) & d
            s = sum(math.log(1 + n / sum(w in x for x in docs)) for w in shared)
            out.append(boost * s - 1e-3 * len(words(self.passages[i])) - 1e-5 * i)
        scores = np.array(out, dtype=np.float32)
        if self.config.fault == "reversed":
            scores = -scores
        if self.config.fault == "unseeded":
            scores = scores + np.random.default_rng().normal(0, 1e-2, n).astype(np.float32)
        return scores

    def search(self, queries: Sequence[str], k: int) -> Hits:
        fault = self.config.fault
        if self.passages is None:
            if fault == "silent_before_index":
                return Hits(
                    np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
                )
            raise RuntimeError("toy: search before index")
        n = len(self.passages)
        width = min(k, n) if fault == "unpadded" else k
        ids = np.full((len(queries), width), -1, dtype=np.int64)
        scores = np.full((len(queries), width), -np.inf, dtype=np.float32)
        for q, query in enumerate(queries):
            s = self._scores(query)
            order = np.argsort(-s, kind="stable")[: min(k, n)]
            if fault == "unsorted":
                order = np.sort(order)
            if fault == "duplicates":
                order = np.full_like(order, order[0])
            if fault == "prefix_differs" and k == 1:
                order = np.argsort(-s, kind="stable")[1:2]
            ids[q, : len(order)], scores[q, : len(order)] = order, s[order]
        if fault == "batch_normalised":
            real = np.isfinite(scores)
            scores[real] = scores[real] / np.abs(scores[real]).max()
        return Hits(ids=ids, scores=scores)

    def save(self, folder: Path) -> None:
        (folder / "toy.json").write_text(json.dumps(self.passages))
        if self.config.fault == "pickles":
            (folder / "toy.pkl").write_bytes(pickle.dumps(self.passages))

    def load_state(self, folder: Path) -> None:
        passages = json.loads((folder / "toy.json").read_text())
        self.passages = [""] * len(passages) if self.config.fault == "forgets_on_load" else passages


class _Plugin:
    @staticmethod
    @hookimpl
    def register_retrievers(register: Any) -> None:
        register(ToyConfig, ToyRetriever)


@pytest.fixture(autouse=True)
def toy_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="retriever_faults", distribution="retriever-faults")
    yield
    reg.unregister_plugin("retriever_faults")


def _suite(fault: str) -> Any:
    return type(
        "Suite",
        (RetrieverConformance,),
        {
            "make_config": lambda self: ToyConfig(fault=fault),
            # fault is the planted switch: another value plants another fault.
            "config_fields_exempt": ("fault",),
        },
    )()


def test_the_sound_toy_passes_every_check() -> None:
    results = run_suite(_suite("none"))
    assert set(results.values()) == {"passed"} and len(results) == 10, results


NAMED = re.escape(
    f"retriever 'test_toy' of plugin 'retriever_faults' (retriever-faults), "
    f"module {ToyRetriever.__module__}: "
)


@pytest.mark.parametrize(
    ("fault", "test", "match"),
    [
        ("unsorted", "test_top_k_shape_and_order", "not best first"),
        ("duplicates", "test_top_k_shape_and_order", "appears twice"),
        ("unpadded", "test_top_k_shape_and_order", r"expected \(12, 14\)"),
        ("batch_normalised", "test_a_query_is_ranked_on_its_own", "must not depend on the other"),
        ("prefix_differs", "test_top_k_is_a_prefix_of_a_longer_search", "first 1 of a longer"),
        ("reversed", "test_finds_the_known_answers", r"recall@3 0\.000"),
        ("forgets_on_load", "test_round_trips_through_a_run_folder", "differ after save/load"),
        ("pickles", "test_round_trips_through_a_run_folder", r"pickled files \['toy.pkl'\]"),
        ("unseeded", "test_deterministic", "two builds of the same config"),
        ("ignores_boost", "test_config_fields_are_honoured", r"\['boost=1.0'\]"),
        ("silent_before_index", "test_search_before_index_fails_clearly", "instead of raising"),
    ],
)
def test_each_planted_fault_is_caught_and_named(
    fault: str, test: str, match: str, tmp_path: Path
) -> None:
    suite = _suite(fault)
    method = getattr(suite, test)
    kwargs = {"tmp_path": tmp_path} if "run_folder" in test else {}
    with pytest.raises(AssertionError, match=NAMED + ".*" + match):
        method(**kwargs)
