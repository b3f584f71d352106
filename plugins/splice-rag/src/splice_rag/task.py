"""The ``rag`` task: questions whose prompts carry retrieved passages (and distractors).

Each split is a JSONL of ``{"question", "answer", "passage_id"}`` over a knowledge base of
``{"id", "text"}`` passages. Every question's top passages are retrieved once, when the task
is first used; an example's prompt is then::

    (1) <passage>
    (2) <passage>
    question: <question>
    answer:

with completion `` <answer>``. The passages are the top ``k`` retrieved plus ``distractors``
random others, in a seeded random order (so the gold passage has no fixed place). A training
prompt holds the gold passage with probability ``gold_in_train`` (it replaces the lowest
retrieved one when missing): RAFT's recipe, so the model learns both to copy from the right
passage and to live with retrieval misses. Held-out prompts hold exactly what was retrieved.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from splice.data.examples import Example

from splice_rag.configs import RagTaskConfig
from splice_rag.interfaces import Trainable

Split = Literal["train", "held_out"]


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    passage: int  # index into the knowledge base


def read_jsonl(path: str | Path, fields: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of a JSONL file, each checked for ``fields``.

    Raises:
        FileNotFoundError / ValueError: naming the file, line and missing field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [f for f in fields if f not in row]
        if missing:
            raise ValueError(f"{path}:{n}: missing field(s) {missing}")
        rows.append(row)
    return rows


def render(passages: Sequence[str], question: str) -> str:
    """The prompt text (no passages: closed book)."""
    context = "".join(f"({i}) {p}\n" for i, p in enumerate(passages, 1))
    return f"{context}question: {question}\nanswer:"


class RagTask:
    """A retrieval-augmented question-answering task (see the module docstring)."""

    def __init__(self, config: RagTaskConfig) -> None:
        self.config = config
        rows = read_jsonl(config.passages, ["id", "text"])
        self.passages = [str(r["text"]) for r in rows]
        position = {str(r["id"]): i for i, r in enumerate(rows)}
        self.splits: dict[str, list[Question]] = {}
        for split, path in (("train", config.train), ("held_out", config.held_out)):
            qs = []
            for r in read_jsonl(path, ["question", "answer", "passage_id"]):
                if str(r["passage_id"]) not in position:
                    raise ValueError(
                        f"{path}: passage_id {r['passage_id']!r} not in {config.passages}"
                    )
                qs.append(
                    Question(str(r["question"]), str(r["answer"]), position[str(r["passage_id"])])
                )
            if not qs:
                raise ValueError(f"rag task: split {split!r} ({path}) has no questions")
            self.splits[split] = qs
        self._retriever: Any = None
        self._ranked: dict[str, np.ndarray] = {}

    # -- retrieval ---------------------------------------------------------------------------
    @property
    def retriever(self) -> Any:
        """The retriever, loaded from ``retriever_dir`` or built, trained and indexed once."""
        if self._retriever is None:
            c = self.config
            if c.retriever_dir is not None:
                from splice_rag.store import load_retriever

                self._retriever = load_retriever(c.retriever_dir)
            else:
                from splice.registry import get_registry

                retriever = get_registry().build("retriever", c.retriever, None)
                if isinstance(retriever, Trainable):
                    retriever.fit(
                        [(q.question, self.passages[q.passage]) for q in self.splits["train"]]
                    )
                retriever.index(self.passages)
                self._retriever = retriever
        return self._retriever

    def ranked(self, split: Split, depth: int) -> np.ndarray:
        """``(Q, depth)`` retrieved passage ids of every question of ``split`` (cached)."""
        have = self._ranked.get(split)
        if have is None or have.shape[1] < depth:
            questions = [q.question for q in self.split(split)]
            have = self.retriever.search(questions, max(depth, 1)).ids
            self._ranked[split] = have
        return have[:, :depth]

    def retrieval_metrics(self, split: Split, ks: Sequence[int]) -> dict[str, float]:
        """``recall@k`` for each ``k`` and ``mrr`` of the retriever on ``split``'s questions."""
        from splice_rag.metrics import mrr, recall_at_k

        gold = [q.passage for q in self.split(split)]
        ranked = self.ranked(split, max(ks))
        out = {f"recall@{k}": recall_at_k(ranked, gold, k) for k in ks}
        out["mrr"] = mrr(ranked, gold)
        return out

    # -- examples ----------------------------------------------------------------------------
    def split(self, split: Split) -> list[Question]:
        if split not in self.splits:
            raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
        return self.splits[split]

    def example(self, split: Split, i: int, rng: random.Random) -> Example:
        """The ``i``-th question of ``split`` with its passages drawn by ``rng``."""
        c, q = self.config, self.split(split)[i]
        chosen: list[int] = []
        if not c.closed_book:
            chosen = [int(d) for d in self.ranked(split, c.k)[i] if d >= 0] if c.k else []
            if split == "train" and q.passage not in chosen and rng.random() < c.gold_in_train:
                chosen = [*chosen[: max(c.k - 1, 0)], q.passage]
            chosen += self._distractors(chosen, rng)
            rng.shuffle(chosen)
        prompt = render([self.passages[d] for d in chosen], q.question)
        return Example(prompt=prompt, completion=f" {q.answer}", answer=q.answer)

    def _distractors(self, taken: list[int], rng: random.Random) -> list[int]:
        """``distractors`` random passages not in ``taken`` (fewer if the base is that small)."""
        want = min(self.config.distractors, len(self.passages) - len(taken))
        extra: list[int] = []
        while len(extra) < want:
            d = rng.randrange(len(self.passages))
            if d not in taken and d not in extra:
                extra.append(d)
        return extra

    def examples(self, split: Split, *, seed: int = 0) -> Iterator[Example]:
        """Endless: every question once per epoch, a new seeded order and passages each epoch."""
        n, epoch = len(self.split(split)), 0
        while True:
            rng = random.Random(f"rag-{seed}-{split}-{epoch}")
            order = list(range(n))
            rng.shuffle(order)
            for i in order:
                yield self.example(split, i, rng)
            epoch += 1

    def sample(self, split: Split, n: int, *, seed: int = 0) -> list[Example]:
        """``min(n, size)`` distinct questions of ``split`` (the first epoch's order)."""
        it = self.examples(split, seed=seed)
        return [next(it) for _ in range(min(n, len(self.split(split))))]

    def __len__(self) -> int:
        return len(self.splits["train"])


def build_rag_task(config: RagTaskConfig, ctx: object = None) -> RagTask:
    return RagTask(config)


__all__ = ["Question", "RagTask", "build_rag_task", "read_jsonl", "render"]
