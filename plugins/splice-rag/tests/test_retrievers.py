"""BM25, the faiss index, dense (contrastive training) and hybrid retrievers; each round-trips
through a folder with identical results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from splice_rag.bm25 import BM25Retriever
from splice_rag.configs import BM25RetrieverConfig, DenseRetrieverConfig, HybridRetrieverConfig
from splice_rag.dense import DenseRetriever, contrastive_loss
from splice_rag.hybrid import build_hybrid, fuse
from splice_rag.index import VectorIndex
from splice_rag.interfaces import Hits
from splice_rag.metrics import recall_at_k
from splice_rag.store import load_retriever, save_retriever

from .conftest import facts

CORPUS = [
    "zorvan lives in quellmoor",
    "tibbet was born in 1872",
    "the river runs north past quellmoor and tarnok",
    "paris is in france",
]


def _bm25_by_hand(query: list[str], docs: list[list[str]], k1=1.5, b=0.75) -> list[float]:
    """Lucene's BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), and (as Lucene >= 8) no
    constant (k1 + 1) factor in the term weight."""
    n, avg = len(docs), sum(map(len, docs)) / len(docs)
    out = []
    for d in docs:
        s = 0.0
        for t in set(query):
            df = sum(t in x for x in docs)
            if df == 0:
                continue
            tf = d.count(t)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            s += idf * tf / (tf + k1 * (1 - b + b * len(d) / avg))
        out.append(s)
    return out


def test_bm25_scores_match_the_formula_and_round_trip(tmp_path):
    r = BM25Retriever(BM25RetrieverConfig())
    r.index(CORPUS)
    hits = r.search(["Where does Zorvan live?", "quellmoor", "nothing matches"], k=3)
    want = _bm25_by_hand(["quellmoor"], [d.split() for d in CORPUS])
    assert hits.ids[1].tolist()[:2] == [0, 2]  # the shorter passage first
    assert hits.scores[1][:2] == pytest.approx(sorted(want, reverse=True)[:2], rel=1e-5)
    assert hits.ids[0, 0] == 0 and hits.scores[2].max() == 0.0
    wide = r.search(["quellmoor"], k=6)  # more than the corpus: padded
    assert wide.ids[0, 4:].tolist() == [-1, -1] and np.isneginf(wide.scores[0, 4:]).all()
    again = load_retriever(save_retriever(r, tmp_path / "bm25"))
    back = again.search(["Where does Zorvan live?", "quellmoor", "nothing matches"], k=3)
    assert np.array_equal(back.ids, hits.ids) and np.allclose(back.scores, hits.scores)


def test_vector_index_is_exact_inner_product_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    index = VectorIndex(8)
    index.add(vectors)
    scores, ids = index.search(queries, 4)
    want = np.argsort(-(queries @ vectors.T), axis=1)[:, :4]
    assert np.array_equal(ids, want)
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, want, 1), atol=1e-5)
    index.save(tmp_path)
    assert np.array_equal(VectorIndex.load(tmp_path).search(queries, 4)[1], ids)
    with pytest.raises(ValueError, match=r"expected \(N, 8\)"):
        index.add(np.zeros((2, 3), dtype=np.float32))


def test_contrastive_loss_is_infonce_with_shared_passages_masked():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    none = torch.zeros(3, 3, dtype=torch.bool)
    logits = q @ p.T / 0.1
    by_hand = -(logits.diag() - logits.logsumexp(1)).mean() / 2
    by_hand += -(logits.diag() - logits.logsumexp(0)).mean() / 2
    assert contrastive_loss(q, p, none, 0.1).item() == pytest.approx(by_hand.item(), rel=1e-5)
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    masked = logits.masked_fill(same & ~torch.eye(3, dtype=torch.bool), float("-inf"))
    row0 = -(masked[0, 0] - masked[0].logsumexp(0))  # rows 0 and 1 are not each other's negative
    assert torch.isfinite(contrastive_loss(q, p, same, 0.1))
    assert row0 < -(logits[0, 0] - logits[0].logsumexp(0))


def _tiny_dense(**kw) -> DenseRetrieverConfig:
    encoder = {
        "type": "decoder", "vocab_size": 258, "d_model": 32, "n_layers": 1, "max_seq_len": 16,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
    }  # fmt: skip
    return DenseRetrieverConfig(encoder=encoder, buckets=256, max_words=16, **kw)


def test_dense_training_learns_to_retrieve_and_round_trips(tmp_path):
    rows = facts()
    passages = [text for _, text, _, _ in rows]
    questions = [q for _, _, q, _ in rows]
    gold = list(range(len(rows)))
    untrained = DenseRetriever(_tiny_dense(epochs=0))
    untrained.index(passages)
    before = recall_at_k(untrained.search(questions, 1).ids, gold, 1)

    r = DenseRetriever(_tiny_dense(epochs=40, batch_size=8, lr=3e-3, temperature=0.1))
    losses = r.fit(list(zip(questions, passages)))
    r.index(passages)
    hits = r.search(questions, 3)
    after = recall_at_k(hits.ids, gold, 1)
    assert losses["last_epoch_loss"] < 0.5 * losses["first_epoch_loss"]
    assert after >= 0.9 > before + 0.3, (before, after)
    norms = np.linalg.norm(r.embed(passages), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)

    again = load_retriever(save_retriever(r, tmp_path / "dense"))
    back = again.search(questions, 3)
    assert np.array_equal(back.ids, hits.ids) and np.allclose(back.scores, hits.scores, atol=1e-6)
    assert {p.name for p in (tmp_path / "dense").iterdir()} == {
        "retriever.json", "encoder.safetensors", "index.faiss", "dense.json",
    }  # fmt: skip


def test_dense_rejects_a_vocabulary_smaller_than_the_buckets():
    cfg = _tiny_dense().model_copy(update={"buckets": 1000})
    with pytest.raises(ValueError, match=r"encoder.vocab_size 258 is smaller than buckets \+ 1"):
        DenseRetriever(cfg)


def test_fusion_by_hand():
    a = Hits(ids=np.array([[0, 1, 2]]), scores=np.array([[3.0, 2.0, 1.0]], dtype=np.float32))
    b = Hits(ids=np.array([[2, 0, -1]]), scores=np.array([[0.9, 0.1, -np.inf]], dtype=np.float32))
    rrf = fuse([a, b], [1.0, 1.0], 3, fusion="rrf", rrf_k=60.0)
    # 0: 1/61 + 1/62, 2: 1/63 + 1/61, 1: 1/62
    assert rrf.ids[0].tolist() == [0, 2, 1]
    assert rrf.scores[0, 0] == pytest.approx(1 / 61 + 1 / 62)
    score = fuse([a, b], [1.0, 2.0], 2, fusion="score", rrf_k=60.0)
    # a normalised: 0 -> 1, 1 -> 0.5, 2 -> 0; b: 2 -> 1, 0 -> 0 => 0: 1, 1: 0.5, 2: 2
    assert score.ids[0].tolist() == [2, 0]
    assert score.scores[0].tolist() == pytest.approx([2.0, 1.0])


def test_hybrid_fits_its_dense_member_and_round_trips(tmp_path):
    rows = facts()
    passages = [text for _, text, _, _ in rows]
    questions = [q for _, _, q, _ in rows]
    cfg = HybridRetrieverConfig(
        retrievers=[BM25RetrieverConfig(), _tiny_dense(epochs=2, batch_size=8)], depth=5
    )
    r = build_hybrid(cfg)
    assert set(r.fit(list(zip(questions, passages)))) == {"1.first_epoch_loss", "1.last_epoch_loss"}
    r.index(passages)
    hits = r.search(questions, 3)
    assert recall_at_k(hits.ids, list(range(len(rows))), 3) >= 0.9  # BM25 alone finds the names
    back = load_retriever(save_retriever(r, tmp_path / "hybrid")).search(questions, 3)
    assert np.array_equal(back.ids, hits.ids)
    with pytest.raises(ValueError, match="weights has 1 entries but there are 2 retrievers"):
        HybridRetrieverConfig(retrievers=[{"type": "bm25"}, {"type": "bm25"}], weights=[1.0])
