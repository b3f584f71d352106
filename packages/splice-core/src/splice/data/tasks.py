"""The built-in tasks (kind ``"task"``) and their factories; configs are in ``task_configs``.

A task object has ``examples(split, *, seed) -> Iterator[Example]`` (an endless,
deterministic stream) and ``sample(split, n, *, seed) -> list[Example]``; splits are
``"train"`` and ``"held_out"``.

* ``{"type": "arithmetic", "op": "+", "min_digits": 1, "max_digits": 2, ...}``: the
  synthetic problems of ``splice.data.arithmetic`` (unlimited, disjoint splits).
* ``{"type": "jsonl", "train": "train.jsonl", "held_out": "eval.jsonl"}``: examples read
  from JSONL files (``splice.data.jsonl``). Without a ``held_out`` file,
  ``held_out_fraction`` of the train file is set aside by a hash of each example, so the
  split does not depend on line order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from splice.data.arithmetic import ArithmeticTask
from splice.data.configs import ArithmeticTaskConfig, JsonlTaskConfig, MixtureTaskConfig
from splice.data.examples import Example

Split = Literal["train", "held_out"]


def build_arithmetic(config: ArithmeticTaskConfig, ctx: object = None) -> ArithmeticTask:
    return ArithmeticTask(
        config.op,
        min_digits=config.min_digits,
        max_digits=config.max_digits,
        held_out_fraction=config.held_out_fraction,
        dev_fraction=config.dev_fraction,
        reverse_answer=config.reverse_answer,
        chain_of_thought=config.chain_of_thought,
        reasoning_share=config.reasoning_share,
        separator=config.separator,
        answer_digits=config.answer_digits,
    )


class MixtureTask:
    """Examples of several tasks, task ``i`` with probability ``weights[i]``.

    ``sample(split, n, seed)`` decides each example's task with a seeded RNG, then takes the
    first ``k_i`` examples of task ``i``'s own stream (seeded by ``(seed, i)``), in the drawn
    order: deterministic, and the tasks' splits stay disjoint as they are. A held-out split
    smaller than its share gives each of its problems once, so fewer than ``n`` may return.
    """

    def __init__(self, tasks: list[Any], weights: list[float] | None = None) -> None:
        self.tasks = tasks
        self.weights = weights or [1.0] * len(tasks)

    def sample(self, split: Split, n: int, *, seed: int = 0) -> list[Example]:
        rng = random.Random(f"mixture-{seed}-{split}")
        picks = rng.choices(range(len(self.tasks)), weights=self.weights, k=n)
        streams = [
            iter(t.sample(split, picks.count(i), seed=seed * 1009 + i))
            for i, t in enumerate(self.tasks)
        ]
        # A held-out split may hold fewer distinct problems than its picks (``sample`` then
        # returns each once): such a task's surplus picks are dropped, never repeated.
        drawn = (next(streams[i], None) for i in picks)
        return [ex for ex in drawn if ex is not None]

    def examples(self, split: Split, *, seed: int = 0) -> Iterator[Example]:
        """An endless stream: blocks of 256 drawn with successive seeds."""
        block = 0
        while True:
            yield from self.sample(split, 256, seed=seed * 7919 + block)
            block += 1


def build_mixture(config: MixtureTaskConfig, ctx: object = None) -> MixtureTask:
    from splice.registry import get_registry

    reg = get_registry()
    return MixtureTask([reg.build("task", t, None) for t in config.tasks], config.weights)


def hash_fraction(ex: Example) -> float:
    """A fixed pseudo-random number in [0, 1) from the example's text (held-out splits)."""
    digest = hashlib.sha256(f"{ex.prompt}\x00{ex.completion}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32


class JsonlTask:
    """A finite dataset read from JSONL; files are read on first use.

    ``examples`` loops over the split forever, reshuffled each epoch (seeded);
    ``sample(split, n)`` returns ``min(n, size)`` distinct examples: a seeded
    random subset, never repeats. Training draws epochs of ``epoch_examples()``
    (``EpochTask``), not a ``sample`` per batch, which would shuffle the whole file each time.
    """

    def __init__(self, config: JsonlTaskConfig) -> None:
        self.config = config
        self._splits: dict[str, list[Example]] | None = None

    def read_lines(self, path: str) -> list[tuple[int, Any]]:
        """``(line number, example)`` for every example of one of the task's files."""
        from splice.data.chat import SIMPLE_TEMPLATE, chat_template
        from splice.data.jsonl import read_jsonl_lines

        cfg = self.config
        tmpl = SIMPLE_TEMPLATE if cfg.chat_template is None else chat_template(cfg.chat_template)
        return read_jsonl_lines(path, format=cfg.format, template=tmpl)

    def lines(self) -> Iterator[tuple[str, Any]]:
        """``("file:line", example)`` for every example of the task's files, so a check
        (``splice.training.preflight``) names the line of a bad one."""
        for path in (self.config.train, self.config.held_out):
            if path is not None:
                for lineno, ex in self.read_lines(path):
                    yield f"{path}:{lineno}", ex

    def _load(self) -> dict[str, list[Example]]:
        if self._splits is None:
            from splice.data.chat import SIMPLE_TEMPLATE, chat_template
            from splice.data.jsonl import read_jsonl

            cfg = self.config
            tmpl = (
                SIMPLE_TEMPLATE if cfg.chat_template is None else chat_template(cfg.chat_template)
            )
            train = read_jsonl(Path(cfg.train), format=cfg.format, template=tmpl)
            if cfg.held_out is not None:
                held = read_jsonl(Path(cfg.held_out), format=cfg.format, template=tmpl)
            else:
                frac = cfg.held_out_fraction
                held = [ex for ex in train if hash_fraction(ex) < frac]
                train = [ex for ex in train if hash_fraction(ex) >= frac]
            self._splits = {"train": train, "held_out": held}
        return self._splits

    def split(self, split: Split) -> list[Example]:
        """Every example of ``split``, in file order."""
        data = self._load()
        if split not in data:
            raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
        if not data[split]:
            cfg = self.config
            if split == "train" or cfg.held_out is not None:
                where = f"every example of {cfg.train} went to the held-out split"
            elif cfg.held_out_fraction > 0:
                n = len(data["train"])
                where = (
                    f"none of its {n} examples fell in held_out_fraction="
                    f"{cfg.held_out_fraction}; raise it, or set `held_out` to a file"
                )
            else:
                where = "set `held_out` to a file or `held_out_fraction` > 0"
            raise ValueError(f"jsonl task ({cfg.train}): split {split!r} is empty; {where}")
        return data[split]

    def __len__(self) -> int:
        return len(self._load()["train"])

    def epoch_examples(self) -> list[Example]:
        """The training split, which training draws in reshuffled epochs (``EpochTask``)."""
        return self.split("train")

    def examples(self, split: Split, *, seed: int = 0) -> Iterator[Example]:
        """Endless stream: every example once per epoch, a new seeded order each epoch."""
        data = self.split(split)
        epoch = 0
        while True:
            order = list(range(len(data)))
            random.Random(f"{seed}-{split}-{epoch}").shuffle(order)
            for i in order:
                yield data[i]
            epoch += 1

    def sample(self, split: Split, n: int, *, seed: int = 0) -> list[Example]:
        """``min(n, size)`` distinct examples of ``split`` (the first epoch's order)."""
        data = self.split(split)
        it = self.examples(split, seed=seed)
        return [next(it) for _ in range(min(n, len(data)))]


def build_jsonl(config: JsonlTaskConfig, ctx: object = None) -> JsonlTask:
    return JsonlTask(config)


__all__ = [
    "ArithmeticTaskConfig",
    "JsonlTask",
    "JsonlTaskConfig",
    "MixtureTask",
    "MixtureTaskConfig",
    "build_arithmetic",
    "build_jsonl",
    "build_mixture",
    "hash_fraction",
]
