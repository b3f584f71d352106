"""splice-rag's dense retriever with splice-vision's CLIP text tower as the encoder (both
plugins installed): trained contrastively it learns to retrieve, and round-trips a folder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("splice_vision")
pytest.importorskip("splice_rag")

from splice_rag.configs import DenseRetrieverConfig
from splice_rag.dense import DenseRetriever
from splice_rag.metrics import recall_at_k
from splice_rag.store import load_retriever, save_retriever

PEOPLE = ["zorvan", "tibbet", "quella", "marnok", "sefira", "oddlan", "previn", "halcor"]
PLACES = ["quellmoor", "tarnok", "vessin", "ulmarch", "brisk", "oskany", "fennow", "draith"]


def _clip(**kw) -> DenseRetrieverConfig:
    encoder = {
        "type": "clip", "embed_dim": 32,
        "text": {"vocab_size": 130, "d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 17,
                 "eos_token_id": 129},
        "vision": {"image_size": 8, "patch_size": 4, "d_model": 16, "n_layers": 1, "n_heads": 2},
    }  # fmt: skip
    return DenseRetrieverConfig(encoder=encoder, buckets=128, max_words=16, **kw)


@pytest.mark.slow
def test_clip_text_tower_as_dense_encoder(tmp_path):
    passages = [f"{p} lives in {c} ." for p, c in zip(PEOPLE, PLACES)]
    passages += [f"{p} keeps a dog named {c[::-1]} ." for p, c in zip(PEOPLE, PLACES)]
    questions = [f"where does {p} live ?" for p in PEOPLE] + [
        f"what is the dog of {p} ?" for p in PEOPLE
    ]
    gold = list(range(len(passages)))
    r = DenseRetriever(_clip(epochs=60, batch_size=16, lr=3e-3, temperature=0.1))
    before = DenseRetriever(_clip(epochs=0))
    before.index(passages)
    losses = r.fit(list(zip(questions, passages)))
    r.index(passages)
    hits = r.search(questions, 2)
    assert losses["last_epoch_loss"] < 0.5 * losses["first_epoch_loss"]
    assert (
        recall_at_k(hits.ids, gold, 1)
        >= 0.8
        > recall_at_k(before.search(questions, 1).ids, gold, 1)
    )
    back = load_retriever(save_retriever(r, tmp_path / "clip")).search(questions, 2)
    assert np.array_equal(back.ids, hits.ids) and np.allclose(back.scores, hits.scores, atol=1e-6)


def test_clip_encoder_needs_the_end_of_text_id():
    bad = _clip().model_dump()
    bad["encoder"]["text"]["eos_token_id"] = 5
    with pytest.raises(ValueError, match=r"eos_token_id = buckets \+ 1 = 129"):
        DenseRetriever(DenseRetrieverConfig.model_validate(bad))
