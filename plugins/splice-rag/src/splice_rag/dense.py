"""Dense retrieval: a splice encoder trained contrastively on (question, passage) pairs.

A text becomes hashed word ids (``HashWords``), runs through any registered splice model, and
is the mean of its hidden states over real tokens, normalised to unit length; or, with a CLIP
model as the encoder (splice-vision's ``clip``), its projected text-tower embedding. Training is
InfoNCE with in-batch negatives, symmetric (question -> passage and passage -> question); two
questions about the same passage in one batch are not each other's negatives. Passages go into
a faiss inner-product index.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xxhash
from torch import Tensor, nn

from splice_rag.configs import DenseRetrieverConfig
from splice_rag.index import VectorIndex
from splice_rag.interfaces import Hits, words


class HashWords:
    """Words to ids by hashing: ``0`` is padding, ``1 + xxh64(word) % buckets`` the rest
    (no vocabulary to fit or save; collisions are rare at a few thousand words). With
    ``end_id``, every row ends with that id (the read-out token of a CLIP text tower)."""

    def __init__(self, buckets: int, max_words: int, end_id: int | None = None) -> None:
        self.buckets, self.max_words, self.end_id = buckets, max_words, end_id

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(ids (B, T) long, mask (B, T) bool)``, right-padded, ``T <= max_words (+1)``."""
        end = [] if self.end_id is None else [self.end_id]
        rows = [
            [
                1 + xxhash.xxh64_intdigest(w.encode()) % self.buckets
                for w in words(t)[: self.max_words]
            ]
            or [1]
            for t in texts
        ]
        rows = [row + end for row in rows]
        width = max(map(len, rows))
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids, ids != 0


class TextEncoder(nn.Module):
    """``texts -> (B, D)`` unit vectors: the mean-pooled hidden states of a splice model, or a
    CLIP model's projected text-tower embedding (a model with ``encode_text``)."""

    def __init__(self, model: nn.Module, tokenize: HashWords) -> None:
        super().__init__()
        self.model, self.tokenize = model, tokenize

    def forward(self, texts: Sequence[str]) -> Tensor:
        device = next(self.model.parameters()).device
        ids, mask = (t.to(device) for t in self.tokenize(texts))
        if hasattr(self.model, "encode_text"):  # CLIP: read out at the end-of-text token
            return F.normalize(self.model.encode_text(ids, mask.long()).float(), dim=-1)
        hidden = self.model(ids, attention_mask=mask.long()).hidden  # (B, T, D)
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, D)
        return F.normalize(pooled.float(), dim=-1)


def _end_of_text(model: nn.Module, config: DenseRetrieverConfig) -> int | None:
    """The id every row must end with: CLIP's text ``eos_token_id`` (checked to be
    ``buckets + 1``, past every word id), else None."""
    if not hasattr(model, "encode_text"):
        return None
    text = model.config.text
    want = config.buckets + 1
    if text.eos_token_id != want:
        raise ValueError(
            f"dense: a CLIP encoder needs encoder.text.eos_token_id = buckets + 1 = {want} "
            f"(the end-of-text id after the hashed words), got {text.eos_token_id}"
        )
    if text.max_len < config.max_words + 1:
        raise ValueError(
            f"dense: encoder.text.max_len {text.max_len} < max_words + 1 = {config.max_words + 1}"
        )
    return want


def contrastive_loss(q: Tensor, p: Tensor, same: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE over a batch: ``q (B, D)`` and ``p (B, D)`` unit vectors, row ``i``
    of each a positive pair; ``same (B, B)`` bool marks pairs sharing a passage, which are
    masked out as negatives (the diagonal stays the target)."""
    logits = q @ p.T / temperature  # (B, B)
    eye = torch.eye(len(q), dtype=torch.bool, device=q.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(q), device=q.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class DenseRetriever:
    """Bi-encoder + faiss index. ``fit(pairs)`` trains, ``index(passages)`` embeds them."""

    def __init__(self, config: DenseRetrieverConfig, ctx: object = None) -> None:
        from splice.registry import get_registry

        self.config = config
        torch.manual_seed(config.seed)
        model = get_registry().build("model", config.encoder, None)
        end = _end_of_text(model, config)
        cfg = getattr(model, "config", None)
        vocab = getattr(getattr(cfg, "text", cfg), "vocab_size", None)
        need = config.buckets + (2 if end is not None else 1)
        if vocab is not None and vocab < need:
            raise ValueError(
                f"dense: encoder.vocab_size {vocab} is smaller than buckets + "
                f"{need - config.buckets} ({need}); raise encoder.vocab_size or lower buckets"
            )
        self.encoder = TextEncoder(model, HashWords(config.buckets, config.max_words, end))
        self._index: VectorIndex | None = None

    def fit(self, pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
        """Train on ``(question, passage)`` pairs for ``config.epochs``; returns the first and
        last epoch's mean loss."""
        c = self.config
        if not pairs:
            raise ValueError("dense: fit needs at least one (question, passage) pair")
        rng = random.Random(c.seed)
        opt = torch.optim.AdamW(self.encoder.parameters(), lr=c.lr, weight_decay=0.01)
        self.encoder.train()
        losses: list[float] = []
        for _ in range(c.epochs):
            order = list(range(len(pairs)))
            rng.shuffle(order)
            total, n = 0.0, 0
            for start in range(0, len(order), c.batch_size):
                batch = [pairs[i] for i in order[start : start + c.batch_size]]
                if len(batch) < 2:
                    continue
                questions, passages = zip(*batch)
                same = torch.tensor([[a == b for b in passages] for a in passages])
                loss = contrastive_loss(
                    self.encoder(questions), self.encoder(passages), same, c.temperature
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + loss.item(), n + 1
            losses.append(total / max(n, 1))
        self.encoder.eval()
        return {"first_epoch_loss": losses[0], "last_epoch_loss": losses[-1]} if losses else {}

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """``(N, D)`` float32 unit vectors."""
        self.encoder.eval()
        chunks = [
            self.encoder(texts[i : i + batch_size]).cpu().numpy()
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(chunks).astype(np.float32)

    def index(self, passages: Sequence[str]) -> None:
        if not passages:
            raise ValueError("dense: no passages to index")
        vectors = self.embed(list(passages))
        self._index = VectorIndex(vectors.shape[1])
        self._index.add(vectors)

    def search(self, queries: Sequence[str], k: int) -> Hits:
        if self._index is None:
            raise RuntimeError("dense: search before index (call index(passages) or load_state)")
        scores, ids = self._index.search(self.embed(list(queries)), k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return Hits(ids=ids, scores=scores)

    def save(self, folder: Path) -> None:
        from splice.checkpoint import save_model_weights

        if self._index is None:
            raise RuntimeError("dense: nothing to save before index")
        save_model_weights(self.encoder.model, folder / "encoder.safetensors")
        self._index.save(folder)
        (folder / "dense.json").write_text(
            json.dumps({"dim": self._index.dim, "size": len(self._index)})
        )

    def load_state(self, folder: Path) -> None:
        from splice.checkpoint import load_model_weights

        load_model_weights(self.encoder.model, folder / "encoder.safetensors")
        self.encoder.eval()
        self._index = VectorIndex.load(folder)


__all__ = ["DenseRetriever", "HashWords", "TextEncoder", "contrastive_loss"]
