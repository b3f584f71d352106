"""Conformance of a retriever (kind ``retriever``): ``RetrieverConformance``.

Subclass it in your plugin's tests and define ``make_config()``; pytest runs the checks on
the registered retriever, built through the registry, fitted on the corpus's (question,
passage) pairs if it trains (``Trainable``) and indexed on a tiny corpus whose answers are
known (``KnownAnswers``; override ``make_corpus()`` for another):

- the factory returns a ``Retriever`` that keeps its config; searching before ``index``
  raises instead of returning nothing;
- ``search(queries, k)`` gives ``Hits`` of ``(Q, k)`` int64 ids and float32 scores, best
  first (scores non-increasing), no passage twice in a row, ``-1`` (score ``-inf``) only as
  padding at the end, and padding when ``k`` exceeds the corpus;
- a query's hits do not depend on the other queries of the batch or their order, and the
  top ``k`` are the first ``k`` of a longer search;
- recall@k and MRR on the known answers reach ``min_recall_at_k`` and ``min_mrr``;
- the index round-trips through a run folder (``save_retriever`` / ``load_retriever``):
  the same hits, and no pickled file;
- two builds of one config give the same hits; the config round-trips through JSON; every
  config field changes the scores (``config_fields_exempt`` lists those that cannot).

Every failure names the retriever's tag, plugin and module (``splice.testing.naming``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from splice.testing.naming import NamedConformance

from splice_rag.interfaces import Hits, Retriever, Trainable
from splice_rag.metrics import mrr, recall_at_k

_PEOPLE = [
    ("zorvan", "quellmoor", "1872"),
    ("tibbet", "tarnok", "1901"),
    ("quella", "vessin", "1788"),
    ("marnok", "ulmarch", "1955"),
    ("sefira", "brisk", "1820"),
    ("oddlan", "oskany", "1933"),
]


@dataclass
class KnownAnswers:
    """A corpus and questions whose relevant passage is known.

    Attributes:
        passages: the corpus.
        questions: the queries.
        gold: per question, the index of its relevant passage.
    """

    passages: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    gold: list[int] = field(default_factory=list)

    def pairs(self) -> list[tuple[str, str]]:
        """``(question, relevant passage)`` pairs, what a trainable retriever fits on."""
        return [(q, self.passages[g]) for q, g in zip(self.questions, self.gold)]


def fictional_facts() -> KnownAnswers:
    """Two facts about each of six fictional people (12 passages, 12 questions): a question
    names the person and the attribute, so the right passage is the one sharing both. The
    two kinds of passage differ in length, so a length normalisation shows."""
    out = KnownAnswers()
    for name, city, year in _PEOPLE:
        for passage, question in (
            (f"{name} lives in the city of {city}.", f"which city does {name} live in?"),
            (f"{name} was born in {year}.", f"in which year was {name} born?"),
        ):
            out.gold.append(len(out.passages))
            out.passages.append(passage)
            out.questions.append(question)
    return out


def _pickled(path: Path) -> bool:
    """Whether ``path`` is (or, as a zip, holds) a Python pickle, or an object ``.npy``."""
    if path.suffix in (".pkl", ".pickle"):
        return True
    head = path.read_bytes()[:2]
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # the pickle protocol opcode
        return True
    if path.suffix == ".npy":
        try:
            np.load(path, allow_pickle=False)
        except ValueError:
            return True
    if zipfile.is_zipfile(path):  # torch.save writes a zip around data.pkl
        with zipfile.ZipFile(path) as z:
            return any(n.endswith(".pkl") for n in z.namelist())
    return False


class RetrieverConformance(NamedConformance):
    """The checks of one registered retriever; define ``make_config()``.

    Knobs:
        k: the depth searched and scored (recall@k).
        min_recall_at_k, min_mrr: what the retriever must reach on ``make_corpus()``.
        config_fields_exempt: config fields that cannot change the scores on the tiny
            corpus (say why in a comment).
    """

    kind: ClassVar[str] = "retriever"
    k: ClassVar[int] = 3
    min_recall_at_k: ClassVar[float] = 0.9
    min_mrr: ClassVar[float] = 0.75
    config_fields_exempt: ClassVar[tuple[str, ...]] = ()

    def make_corpus(self) -> KnownAnswers:
        return fictional_facts()

    # -- helpers -----------------------------------------------------------
    def build(self, config: Any = None, *, index: bool = True) -> Any:
        """The retriever of ``config`` (default ``make_config()``), fitted and indexed."""
        from splice.registry import get_registry

        config = self.make_config() if config is None else config
        retriever = get_registry().build("retriever", config, None)
        assert isinstance(retriever, Retriever), (
            f"the factory returned a {type(retriever).__name__}, which lacks part of the "
            "Retriever protocol (config, index, search, save, load_state)"
        )
        corpus = self.make_corpus()
        if isinstance(retriever, Trainable):
            metrics = retriever.fit(corpus.pairs())
            bad = {k: v for k, v in dict(metrics).items() if not isinstance(v, float)}
            assert not bad, f"fit() must return {{name: float}}, got {bad}"
        if index:
            retriever.index(corpus.passages)
        return retriever

    def search(self, retriever: Any, queries: Sequence[str], k: int) -> Hits:
        """``retriever.search`` with the shape and order contract checked."""
        hits = retriever.search(list(queries), k)
        n = len(self.make_corpus().passages)
        assert isinstance(hits, Hits), f"search returned a {type(hits).__name__}, not Hits"
        want = (len(queries), k)
        assert hits.ids.shape == want and hits.scores.shape == want, (
            f"search(Q={len(queries)}, k={k}) gave ids {hits.ids.shape} and scores "
            f"{hits.scores.shape}; expected {want} (pad with id -1, score -inf)"
        )
        assert hits.ids.dtype == np.int64 and hits.scores.dtype == np.float32, (
            f"ids must be int64 and scores float32, got {hits.ids.dtype} and {hits.scores.dtype}"
        )
        for q, (ids, scores) in enumerate(zip(hits.ids, hits.scores)):
            real = ids >= 0
            assert ((ids >= -1) & (ids < n)).all(), f"query {q}: ids {ids} outside [-1, {n})"
            assert not (~real[:-1] & real[1:]).any(), (
                f"query {q}: padding (-1) before a real passage: {ids.tolist()}"
            )
            assert np.isneginf(scores[~real]).all() and np.isfinite(scores[real]).all(), (
                f"query {q}: real passages need finite scores and padding -inf: ids "
                f"{ids.tolist()}, scores {scores.tolist()}"
            )
            assert len(set(ids[real].tolist())) == int(real.sum()), (
                f"query {q}: a passage appears twice in its top {k}: {ids.tolist()}"
            )
            s = scores[real]
            assert (np.diff(s) <= 1e-6 * np.maximum(1.0, np.abs(s[:-1]))).all(), (
                f"query {q}: hits are not best first: scores {s.tolist()} (ids {ids.tolist()})"
            )
        if k > n:
            assert (hits.ids[:, n:] == -1).all(), f"k={k} > {n} passages, yet no -1 padding"
        return hits

    # -- the tests -----------------------------------------------------------
    def test_builds_a_retriever_that_keeps_its_config(self) -> None:
        config = self.make_config()
        retriever = self.build(config, index=False)
        assert retriever.config == config, (
            f"retriever.config is {retriever.config!r}, not the config it was built from "
            "(save_retriever writes retriever.config)"
        )

    def test_search_before_index_fails_clearly(self) -> None:
        retriever = self.build(index=False)
        try:
            hits = retriever.search(self.make_corpus().questions[:1], self.k)
        except (RuntimeError, ValueError):
            return
        raise AssertionError(
            f"search before index returned {type(hits).__name__} instead of raising "
            "RuntimeError/ValueError (an unindexed retriever must not look like one that "
            "found nothing)"
        )

    def test_top_k_shape_and_order(self) -> None:
        retriever = self.build()
        corpus = self.make_corpus()
        for k in (1, self.k, len(corpus.passages) + 2):
            self.search(retriever, corpus.questions, k)

    def test_a_query_is_ranked_on_its_own(self) -> None:
        retriever = self.build()
        questions = self.make_corpus().questions
        batch = self.search(retriever, questions, self.k)
        alone = [self.search(retriever, [q], self.k) for q in questions]
        back = self.search(retriever, questions[::-1], self.k)
        for i, hits in enumerate(alone):
            assert np.array_equal(hits.ids[0], batch.ids[i]) and np.allclose(
                hits.scores[0], batch.scores[i], atol=1e-5
            ), (
                f"query {i} alone gets {hits.ids[0].tolist()} {hits.scores[0].tolist()}, in "
                f"a batch {batch.ids[i].tolist()} {batch.scores[i].tolist()} (a query's hits "
                "must not depend on the other queries: no normalising over the batch)"
            )
        assert np.array_equal(back.ids[::-1], batch.ids) and np.allclose(
            back.scores[::-1], batch.scores, atol=1e-5
        ), "reversing the queries does not reverse their hits"

    def test_top_k_is_a_prefix_of_a_longer_search(self) -> None:
        retriever = self.build()
        corpus = self.make_corpus()
        deep = self.search(retriever, corpus.questions, len(corpus.passages))
        for k in (1, self.k):
            top = self.search(retriever, corpus.questions, k)
            assert np.allclose(top.scores, deep.scores[:, :k], atol=1e-5), (
                f"the top-{k} scores {top.scores.tolist()} are not the first {k} of a "
                f"longer search {deep.scores[:, :k].tolist()}"
            )
            for q in range(len(corpus.questions)):  # ids must agree where no score ties
                for j in range(k):
                    s = deep.scores[q, j]
                    ties = np.isclose(deep.scores[q], s, atol=1e-6).sum()
                    assert ties > 1 or top.ids[q, j] == deep.ids[q, j], (
                        f"query {q}: rank {j} is passage {top.ids[q, j]} in a top-{k} search "
                        f"but {deep.ids[q, j]} in a longer one"
                    )

    def test_finds_the_known_answers(self) -> None:
        retriever = self.build()
        corpus = self.make_corpus()
        hits = self.search(retriever, corpus.questions, self.k)
        recall, rank = recall_at_k(hits.ids, corpus.gold, self.k), mrr(hits.ids, corpus.gold)
        assert recall >= self.min_recall_at_k and rank >= self.min_mrr, (
            f"recall@{self.k} {recall:.3f} (needs >= {self.min_recall_at_k}) and MRR "
            f"{rank:.3f} (needs >= {self.min_mrr}) on {len(corpus.questions)} questions whose "
            f"passage is known; ranked {hits.ids.tolist()}, relevant {corpus.gold}"
        )

    def test_round_trips_through_a_run_folder(self, tmp_path: Any) -> None:
        from splice_rag.store import load_retriever, save_retriever

        retriever = self.build()
        questions = self.make_corpus().questions
        want = self.search(retriever, questions, self.k)
        folder = save_retriever(retriever, Path(tmp_path) / "run" / "retriever")
        pickles = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
        pickles = [p for p in pickles if _pickled(folder / p)]
        assert not pickles, f"save() wrote pickled files {pickles}; use JSON, .npy, safetensors"
        again = load_retriever(folder)
        assert type(again) is type(retriever), (
            f"load_retriever gave a {type(again).__name__}, saved a {type(retriever).__name__}"
        )
        got = self.search(again, questions, self.k)
        assert np.array_equal(got.ids, want.ids) and np.allclose(
            got.scores, want.scores, atol=1e-6
        ), (
            f"hits differ after save/load: {want.ids.tolist()} became {got.ids.tolist()} "
            "(save() must write everything search needs; load_state() must restore it)"
        )

    def test_deterministic(self) -> None:
        questions = self.make_corpus().questions
        a = self.search(self.build(), questions, self.k)
        b = self.search(self.build(), questions, self.k)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores), (
            "two builds of the same config give different hits (seed every random choice "
            "from the config)"
        )

    def test_config_roundtrips_through_json(self) -> None:
        from splice.testing import check_config_roundtrip

        check_config_roundtrip(self.make_config(), kind="retriever")

    def test_config_fields_are_honoured(self) -> None:
        from splice.testing.wiring import check_fields_change

        questions = self.make_corpus().questions

        def scores(config: Any) -> Any:
            hits = self.search(self.build(config), questions, self.k)
            return (hits.ids, hits.scores)

        check_fields_change(
            self.make_config(), scores, exempt=self.config_fields_exempt, what="the hits"
        )


__all__ = ["KnownAnswers", "RetrieverConformance", "fictional_facts"]
