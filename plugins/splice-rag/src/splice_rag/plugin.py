"""splice-rag entry point: the ``bm25``, ``dense`` and ``hybrid`` retrievers and the ``rag`` task."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_rag.configs import (
    BM25RetrieverConfig,
    DenseRetrieverConfig,
    HybridRetrieverConfig,
    RagTaskConfig,
)


@hookimpl
def register_retrievers(register: Any) -> None:
    register(BM25RetrieverConfig, "splice_rag.bm25:BM25Retriever")
    register(DenseRetrieverConfig, "splice_rag.dense:DenseRetriever")
    register(HybridRetrieverConfig, "splice_rag.hybrid:build_hybrid")


@hookimpl
def register_tasks(register: Any) -> None:
    register(RagTaskConfig, "splice_rag.task:build_rag_task")
