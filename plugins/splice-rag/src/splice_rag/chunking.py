"""Documents into passages: overlapping windows of words, each remembering its document."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """One passage: ``text`` is words ``start .. start + len`` of document ``doc_id``."""

    doc_id: str
    index: int
    start: int
    text: str


def chunk_text(text: str, *, size: int, overlap: int = 0) -> list[tuple[int, str]]:
    """``(start word, passage)`` windows of ``size`` whitespace words, each starting
    ``size - overlap`` words after the previous; the last window ends at the last word.

    Raises:
        ValueError: ``size < 1`` or ``overlap`` not in ``[0, size)``.
    """
    if size < 1:
        raise ValueError(f"chunk size must be >= 1 word, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size={size}), got {overlap}")
    tokens = text.split()
    if not tokens:
        return []
    step = size - overlap
    starts = list(range(0, max(len(tokens) - overlap, 1), step))
    return [(s, " ".join(tokens[s : s + size])) for s in starts]


def chunk_documents(
    documents: Iterable[tuple[str, str]], *, size: int, overlap: int = 0
) -> list[Chunk]:
    """Chunks of ``(doc_id, text)`` documents, in document order."""
    return [
        Chunk(doc_id, i, start, text)
        for doc_id, body in documents
        for i, (start, text) in enumerate(chunk_text(body, size=size, overlap=overlap))
    ]


__all__ = ["Chunk", "chunk_documents", "chunk_text"]
