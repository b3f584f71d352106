"""Chunking into word windows; recall@k and MRR on hand-checked rankings."""

import numpy as np
import pytest
from splice_rag.chunking import chunk_documents, chunk_text
from splice_rag.metrics import mrr, recall_at_k


def test_chunk_windows_overlap_and_cover_the_end():
    text = " ".join(f"w{i}" for i in range(10))
    assert chunk_text(text, size=4, overlap=1) == [
        (0, "w0 w1 w2 w3"),
        (3, "w3 w4 w5 w6"),
        (6, "w6 w7 w8 w9"),
    ]
    assert chunk_text(text, size=4) == [(0, "w0 w1 w2 w3"), (4, "w4 w5 w6 w7"), (8, "w8 w9")]
    assert chunk_text("a b", size=5) == [(0, "a b")]
    assert chunk_text("   ", size=3) == []
    chunks = chunk_documents([("d1", text), ("d2", "x y")], size=6, overlap=2)
    assert [(c.doc_id, c.index, c.start) for c in chunks] == [
        ("d1", 0, 0),
        ("d1", 1, 4),
        ("d2", 0, 0),
    ]


def test_chunk_errors_name_the_value():
    with pytest.raises(ValueError, match="chunk size must be >= 1"):
        chunk_text("a", size=0)
    with pytest.raises(ValueError, match=r"overlap must be in \[0, size=3\), got 3"):
        chunk_text("a", size=3, overlap=3)


def test_recall_and_mrr():
    ranked = np.array([[4, 2, 9], [1, 3, 5], [7, 8, -1]])
    relevant = [2, [5, 1], 0]
    assert recall_at_k(ranked, relevant, 1) == pytest.approx((0 + 0.5 + 0) / 3)
    assert recall_at_k(ranked, relevant, 3) == pytest.approx((1 + 1 + 0) / 3)
    assert mrr(ranked, relevant) == pytest.approx((1 / 2 + 1 / 1 + 0) / 3)
    with pytest.raises(ValueError, match="recall@4 needs >= 4"):
        recall_at_k(ranked, relevant, 4)
