"""Every registered retriever passes ``RetrieverConformance``.

One suite class per registered tag, made at collection from the registry, so a new
registration is covered without editing this file: it runs with its config's defaults
unless ``CONFIGS`` gives a tiny one (a dense encoder small enough for a test).
"""

from __future__ import annotations

from typing import Any

from splice.registry import get_registry
from splice_rag.configs import BM25RetrieverConfig, DenseRetrieverConfig, HybridRetrieverConfig
from splice_rag.testing import RetrieverConformance


def _tiny_dense() -> DenseRetrieverConfig:
    encoder = {
        "type": "decoder", "vocab_size": 258, "d_model": 32, "n_layers": 1, "max_seq_len": 16,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
    }  # fmt: skip
    # max_words=6 cuts the longest passages, so max_words is seen changing the hits.
    return DenseRetrieverConfig(
        encoder=encoder, buckets=256, max_words=6, epochs=30, batch_size=6, lr=3e-3,
        temperature=0.1,
    )  # fmt: skip


CONFIGS: dict[str, Any] = {
    "dense": _tiny_dense,
    "hybrid": lambda: HybridRetrieverConfig(
        retrievers=[BM25RetrieverConfig(), _tiny_dense()], depth=4
    ),
}
EXEMPT: dict[str, tuple[str, ...]] = {
    # weights is a list (one per member): the field sweep has no other value of a list to
    # try; test_retrievers.py::test_fusion_by_hand shows weights changing the fused scores.
    "hybrid": ("weights",),
}


def _suite(tag: str) -> type:
    config_cls = get_registry().get("retriever", tag).config_cls
    make = CONFIGS.get(tag, config_cls)
    return type(
        f"TestRetriever_{tag}",
        (RetrieverConformance,),
        {"make_config": lambda self: make(), "config_fields_exempt": EXEMPT.get(tag, ())},
    )


for _tag in get_registry().tags("retriever"):
    globals()[f"TestRetriever_{_tag}"] = _suite(_tag)
