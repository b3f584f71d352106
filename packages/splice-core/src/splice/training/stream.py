"""Batch streams that are a pure function of ``(seed, position)``, so a resumed run sees
exactly the batches an uninterrupted run would have seen.

The trainer asks a ``BatchSource`` for ``batches(start)``: the endless iterator of
micro-batches beginning at micro-batch index ``start``. Plain iterables also work;
resuming them replays and discards the first ``start`` batches.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

Batch = Mapping[str, Any]


@runtime_checkable
class BatchSource(Protocol):
    """Anything that can restart its batch stream at a given micro-batch index."""

    def batches(self, start: int = 0) -> Iterator[Batch]: ...


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts; stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class TaskBatches:
    """Micro-batch ``k`` = ``collate(task.sample(split, batch_size, seed=derive_seed(seed, k)))``.

    For generated tasks (endless, cheap to sample): jumping to any position is O(1).
    """

    def __init__(
        self,
        task: Any,
        collate: Callable[[list[Any]], Batch],
        *,
        batch_size: int,
        seed: int,
        split: str = "train",
    ) -> None:
        self.task, self.collate = task, collate
        self.batch_size, self.seed, self.split = batch_size, seed, split

    def batches(self, start: int = 0) -> Iterator[Batch]:
        for k in itertools.count(start):
            seed = derive_seed(self.seed, self.split, k)
            yield self.collate(self.task.sample(self.split, self.batch_size, seed=seed))


class ListBatches:
    """Epochs over a fixed list of examples, reshuffled each epoch by ``(seed, epoch)``.

    Micro-batch ``k`` holds examples ``k*B .. k*B+B-1`` of the concatenated epochs, so a
    batch may straddle two epochs; any position is reached without replaying earlier ones.
    """

    def __init__(
        self,
        examples: Sequence[Any],
        collate: Callable[[list[Any]], Batch],
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
    ) -> None:
        if not examples:
            raise ValueError("ListBatches needs at least one example")
        self.examples, self.collate = examples, collate
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self._order: tuple[int, list[int]] | None = None

    def _epoch_order(self, epoch: int) -> list[int]:
        if self._order is None or self._order[0] != epoch:
            order = list(range(len(self.examples)))
            if self.shuffle:
                random.Random(derive_seed(self.seed, "epoch", epoch)).shuffle(order)
            self._order = (epoch, order)
        return self._order[1]

    def batches(self, start: int = 0) -> Iterator[Batch]:
        n = len(self.examples)
        for k in itertools.count(start):
            items = []
            for i in range(k * self.batch_size, (k + 1) * self.batch_size):
                epoch, j = divmod(i, n)
                items.append(self.examples[self._epoch_order(epoch)[j]])
            yield self.collate(items)


class IterableBatches:
    """Wraps a re-iterable of batches (e.g. a list or DataLoader); resuming replays the prefix."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._batches = batches

    def batches(self, start: int = 0) -> Iterator[Batch]:
        it = iter(self._batches)
        if it is self._batches and start:
            raise ValueError(
                "cannot resume a one-shot iterator at a position; pass a BatchSource or a re-iterable"
            )
        return itertools.islice(it, start, None)


def as_source(batches: BatchSource | Iterable[Batch]) -> BatchSource:
    """A ``BatchSource`` for anything the trainer accepts as training data."""
    return batches if isinstance(batches, BatchSource) else IterableBatches(batches)
