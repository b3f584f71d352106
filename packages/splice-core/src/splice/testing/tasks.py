"""Conformance of a task (kind ``task``): ``TaskConformance``.

A task object has ``sample(split, n, *, seed) -> list[Example]`` for the splits ``"train"``
and ``"held_out"`` (what the trainer and the evaluator call), usually ``examples(split, *,
seed) -> Iterator[Example]`` (an endless stream), and may add ``split(name) -> list`` (a finite dataset, ``SplitTask``), ``epoch_examples()`` (trained in reshuffled epochs, ``EpochTask``), ``collator(tokenizer, *,
max_len)`` (it batches its own examples, ``CollatingTask``) and ``lines()`` (``("file:line",
example)`` of every example read, so a check can name a bad line). Subclass the suite and
define ``make_config()``; it checks, on real examples:

- both splits give examples (``sample`` returns at most ``n``, all of one type);
- ``sample`` and ``examples`` are deterministic for a seed (across two builds too), and
  the seed matters;
- ``examples``, where present, is endless (a stream is drawn past one epoch);
- the held-out split shares no example with the training split (and ``split`` obeys
  ``splice.testing.protocols.check_split_task``);
- ``epoch_examples()``, where present, holds the training items
  (``splice.testing.protocols.check_epoch_task``);
- a batch collates (the task's own collator, else the SFT collator for ``Example``s) into
  tensors with one row per example (or per pair half) and at most ``max_len`` positions;
- ``lines()``, where present, names a ``file:line`` for each example, and holds exactly the
  examples of the two splits;
- the config round-trips through JSON and every config field changes the examples.

Every failure names the task's tag, plugin and module.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from itertools import islice
from typing import Any, ClassVar

import torch
from torch import Tensor

from splice.interfaces import CollatingTask, EpochTask, SplitTask
from splice.testing.naming import NamedConformance

SPLITS = ("train", "held_out")


def example_key(value: Any) -> Any:
    """A hashable, exact stand-in for an example (dataclasses, tensors, lists, dicts)."""
    if isinstance(value, Tensor):
        return (tuple(value.shape), str(value.dtype), value.detach().cpu().numpy().tobytes())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ((f.name, example_key(getattr(value, f.name))) for f in dataclasses.fields(value))
        return (type(value).__name__, *fields)
    if isinstance(value, list | tuple):
        return tuple(example_key(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), example_key(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def texts_of(value: Any) -> list[str]:
    """Every string inside an example (to build a tokenizer that knows all its characters)."""
    if isinstance(value, str):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in texts_of(getattr(value, f.name))]
    if isinstance(value, list | tuple):
        return [t for v in value for t in texts_of(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in texts_of(v)]
    return []


class TaskConformance(NamedConformance):
    """The checks of one registered task; define ``make_config()``.

    Knobs:
        n: examples sampled per split.
        max_len: the collators' token limit.
        config_fields_exempt: fields that cannot change the examples here (say why).
    """

    kind: ClassVar[str] = "task"
    n: ClassVar[int] = 12
    max_len: ClassVar[int] = 48
    config_fields_exempt: ClassVar[tuple[str, ...]] = ()

    def build(self, config: Any = None) -> Any:
        from splice.registry import get_registry

        return get_registry().build("task", self.make_config() if config is None else config)

    def _sample(self, task: Any, split: str, n: int, seed: int = 0) -> list[Any]:
        got = task.sample(split, n, seed=seed)
        assert isinstance(got, list), f"sample({split!r}) returned a {type(got).__name__}"
        assert len(got) <= n, f"sample({split!r}, {n}) returned {len(got)} examples"
        return got

    # -- the tests -----------------------------------------------------------
    def test_both_splits_give_examples(self) -> None:
        task = self.build()
        kinds = set()
        for split in SPLITS:
            got = self._sample(task, split, self.n)
            assert got, f"sample({split!r}, {self.n}) is empty"
            kinds |= {type(ex).__name__ for ex in got}
        assert len(kinds) == 1, f"the splits mix example types {sorted(kinds)}"

    def test_sampling_is_deterministic_and_seeded(self) -> None:
        a, b = self.build(), self.build()
        for split in SPLITS:
            first = [example_key(e) for e in self._sample(a, split, self.n, seed=0)]
            again = [example_key(e) for e in self._sample(b, split, self.n, seed=0)]
            assert first == again, (
                f"sample({split!r}, seed=0) differs between two builds or calls (derive every "
                "random choice from the seed)"
            )
            if not hasattr(a, "examples"):
                continue
            stream = [example_key(e) for e in islice(a.examples(split, seed=0), self.n)]
            assert stream == [example_key(e) for e in islice(b.examples(split, seed=0), self.n)], (
                f"examples({split!r}, seed=0) differs between two builds"
            )
        others = [
            [example_key(e) for e in self._sample(a, "train", self.n, seed=s)] for s in (1, 2, 3)
        ]
        base = [example_key(e) for e in self._sample(a, "train", self.n, seed=0)]
        assert any(o != base for o in others), (
            "sample('train', seed=s) is the same for seeds 0-3: the seed is ignored, so every "
            "seed of a study trains on the same data in the same order"
        )

    def test_examples_are_endless(self) -> None:
        task = self.build()
        if not hasattr(task, "examples"):
            import pytest

            pytest.skip("no examples() stream (the trainer calls sample)")
        size = len(task.split("train")) if isinstance(task, SplitTask) else self.n
        want = 2 * size + 1
        got = list(islice(task.examples("train", seed=0), want))
        assert len(got) == want, (
            f"examples('train') stopped after {len(got)} examples (a dataset of {size}): the "
            "trainer draws past one epoch; loop over the data, reshuffled each epoch"
        )

    def test_held_out_is_disjoint_from_train(self) -> None:
        from splice.testing.protocols import check_split_task

        task = self.build()
        if isinstance(task, SplitTask):
            check_split_task(task)
            train, held = task.split("train"), task.split("held_out")
        else:
            train = self._sample(task, "train", 20 * self.n)
            held = self._sample(task, "held_out", 5 * self.n)
        seen = {example_key(e) for e in train}
        shared = [e for e in held if example_key(e) in seen]
        assert not shared, (
            f"{len(shared)} of {len(held)} held-out examples are also training examples, "
            f"e.g. {str(shared[0])[:200]} (held-out scores would measure memorisation)"
        )

    def test_epoch_examples_are_the_training_items(self) -> None:
        from splice.testing.protocols import check_epoch_task

        task = self.build()
        if not isinstance(task, EpochTask):
            import pytest

            pytest.skip("no epoch_examples() (training samples a batch at a time)")
        check_epoch_task(task)

    def test_collates_into_bounded_batches(self) -> None:
        from splice.data.collate import SFTCollator
        from splice.data.examples import Example
        from splice.data.tokenizer import CharTokenizer

        task = self.build()
        examples = self._sample(task, "train", 4)
        alphabet = "".join(sorted({c for ex in examples for t in texts_of(ex) for c in t}))
        tokenizer = CharTokenizer(alphabet)
        if isinstance(task, CollatingTask):
            collate = task.collator(tokenizer, max_len=self.max_len)
        elif all(isinstance(ex, Example) for ex in examples):
            collate = SFTCollator(tokenizer, max_len=self.max_len)
        else:
            import pytest

            pytest.skip(f"{type(examples[0]).__name__} examples and no collator of the task's")
        batch = collate(examples)
        assert isinstance(batch, dict), f"the collator returned a {type(batch).__name__}"
        grid = {k: v for k, v in batch.items() if isinstance(v, Tensor) and v.ndim >= 2}
        assert grid, f"the collator gave no (rows, positions) tensor: {sorted(batch)}"
        n = len(examples)
        rows = {n, 2 * n}  # a pair task may stack both halves
        for key, value in grid.items():
            if "doc_ids" in batch:  # packed rows: at most twice a padded pair batch's slots
                bounded = value.shape[0] <= 2 * n and value.numel() <= 4 * n * self.max_len
            else:
                bounded = value.shape[0] in rows and value.shape[1] <= self.max_len
            assert bounded, (
                f"batch[{key!r}] has shape {tuple(value.shape)} for {n} examples "
                f"and max_len={self.max_len}"
            )
            if not value.is_floating_point():
                assert (value >= -100).all(), f"batch[{key!r}] holds ids below -100"
        ids = batch.get("input_ids")
        if isinstance(ids, Tensor):
            assert ids.dtype == torch.long and int(ids.max()) < tokenizer.vocab_size, (
                f"input_ids must be long ids below the vocabulary ({tokenizer.vocab_size})"
            )

    def test_lines_name_every_example(self) -> None:
        task = self.build()
        if not hasattr(task, "lines"):
            import pytest

            pytest.skip("no lines()")
        lines = list(task.lines())
        bad = [where for where, _ in lines if not re.fullmatch(r".+:\d+", str(where))]
        assert not bad, f"lines() must give ('file:line', example); got places {bad[:3]}"
        if isinstance(task, SplitTask):
            want = sorted(map(repr, (example_key(e) for s in SPLITS for e in task.split(s))))
            got = sorted(repr(example_key(e)) for _, e in lines)
            assert got == want, (
                f"lines() holds {len(got)} examples, the splits {len(want)}, or they differ"
            )

    def test_config_roundtrips_through_json(self) -> None:
        from splice.testing.checks import check_config_roundtrip

        check_config_roundtrip(self.make_config(), kind="task")

    def test_config_fields_are_honoured(self) -> None:
        from splice.testing.wiring import check_fields_change

        def examples(config: Any) -> Sequence[Any]:
            task = self.build(config)
            return [[example_key(e) for e in self._sample(task, split, self.n)] for split in SPLITS]

        check_fields_change(
            self.make_config(), examples, exempt=self.config_fields_exempt, what="the examples"
        )


__all__ = ["TaskConformance", "example_key", "texts_of"]
