"""Configs of splice-rag's retrievers and its retrieval-augmented task (torch-free)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from splice.config import ComponentConfig, ModelField, RetrieverField


class BM25RetrieverConfig(ComponentConfig):
    """Okapi BM25 over lower-cased word tokens (``bm25s``).

    Attributes:
        k1: term-frequency saturation.
        b: document-length normalisation.
        method: bm25s's variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
    """

    type: Literal["bm25"] = "bm25"
    k1: PositiveFloat = 1.5
    b: float = Field(default=0.75, ge=0.0, le=1.0)
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"


def _default_encoder() -> dict[str, Any]:
    return {
        "type": "decoder",
        "vocab_size": 4096 + 2,
        "d_model": 64,
        "n_layers": 2,
        "max_seq_len": 64,
        "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
    }


class DenseRetrieverConfig(ComponentConfig):
    """A bi-encoder: text -> mean-pooled hidden state of a splice model -> unit vector;
    passages in a faiss inner-product index.

    Attributes:
        encoder: any registered model returning ``ModelOutput.hidden`` (default: a 2-layer
            d=64 decoder; ``vocab_size >= buckets + 1``), or a CLIP model (splice-vision's
            ``clip``: its text tower, ``text.eos_token_id = buckets + 1``).
        buckets: words hash into ids ``1 .. buckets`` (0 is padding).
        max_words: longest text encoded (longer ones are cut).
        epochs / batch_size / lr: contrastive training on (question, passage) pairs.
        temperature: the InfoNCE softmax temperature.
        seed: initialisation and batch order.
    """

    type: Literal["dense"] = "dense"
    encoder: ModelField = Field(default_factory=_default_encoder, validate_default=True)  # type: ignore[valid-type]
    buckets: PositiveInt = 4096
    max_words: PositiveInt = 64
    epochs: NonNegativeInt = 3
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 2e-3
    temperature: PositiveFloat = 0.05
    seed: int = 0


class HybridRetrieverConfig(ComponentConfig):
    """Several retrievers' rankings fused into one.

    Attributes:
        retrievers: the members (e.g. ``[{"type": "bm25"}, {"type": "dense"}]``).
        weights: one per member (default equal).
        fusion: ``rrf`` (reciprocal rank fusion, ``sum w / (rrf_k + rank)``) or ``score``
            (each member's scores min-max normalised per query, then weighted and summed).
        depth: how many candidates each member contributes before fusion.
        rrf_k: RRF's rank offset.
    """

    type: Literal["hybrid"] = "hybrid"
    retrievers: list[RetrieverField] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [{"type": "bm25"}, {"type": "dense"}],
        min_length=1,
        validate_default=True,
    )
    weights: list[NonNegativeFloat] | None = None
    fusion: Literal["rrf", "score"] = "rrf"
    depth: PositiveInt = 50
    rrf_k: PositiveFloat = 60.0

    def model_post_init(self, context: Any) -> None:
        if self.weights is not None and len(self.weights) != len(self.retrievers):
            raise ValueError(
                f"weights has {len(self.weights)} entries but there are "
                f"{len(self.retrievers)} retrievers; give one weight per retriever"
            )


class RagTaskConfig(ComponentConfig):
    """Questions answered from a knowledge base, with retrieved passages in the prompt.

    Attributes:
        passages: JSONL of ``{"id", "text"}`` (the knowledge base, already chunked).
        train / held_out: JSONL of ``{"question", "answer", "passage_id"}``.
        retriever: the retriever indexing ``passages`` (built, trained on the train split's
            (question, gold passage) pairs if it trains, and indexed when the task is first used).
        retriever_dir: instead, a retriever saved with ``splice_rag.store.save_retriever``
            (e.g. one a study trained once per seed and shares between its runs).
        k: passages retrieved per question.
        distractors: extra random passages added to the retrieved ones.
        gold_in_train: probability that a training prompt is forced to hold the gold passage
            (RAFT's P; the rest keep only what was retrieved, which teaches the model to
            answer, or guess, from distractors). Held-out prompts never force it.
        closed_book: no passages at all (the baseline).
    """

    type: Literal["rag"] = "rag"
    passages: str
    train: str
    held_out: str
    retriever: RetrieverField = Field(
        default_factory=lambda: {"type": "bm25"}, validate_default=True
    )  # type: ignore[valid-type]
    retriever_dir: str | None = None
    k: NonNegativeInt = 3
    distractors: NonNegativeInt = 1
    gold_in_train: float = Field(default=0.8, ge=0.0, le=1.0)
    closed_book: bool = False


__all__ = [
    "BM25RetrieverConfig",
    "DenseRetrieverConfig",
    "HybridRetrieverConfig",
    "RagTaskConfig",
]
