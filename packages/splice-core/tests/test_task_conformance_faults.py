"""``TaskConformance`` catches planted faults: a small addition dataset, registered as a
plugin would be, is wrong in one way per ``fault``, and the check that should notice fails
with a message naming the task's tag, plugin and module. (Every registered task runs the
suite in the repository's ``tests/test_registered_conformance.py``.)"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from splice.config import ComponentConfig
from splice.data.collate import SFTCollator
from splice.data.examples import Example
from splice.hookspecs import hookimpl
from splice.registry import get_registry
from splice.testing import run_suite
from splice.testing.tasks import TaskConformance

Fault = Literal[
    "none", "leaky_split", "ignores_seed", "unseeded", "one_epoch", "no_truncation",
    "ignores_offset", "empty_held_out", "unnamed_lines", "lines_skip_held_out",
    "epochs_hold_held_out",
]  # fmt: skip


class AddConfig(ComponentConfig):
    type: Literal["test_add_task"] = "test_add_task"
    fault: Fault = "none"
    offset: int = 3


class AddTask:
    """``"i+offset="`` -> ``"i+offset"`` for i < 24; every fourth i held out."""

    def __init__(self, config: AddConfig) -> None:
        self.fault = config.fault
        off = 3 if self.fault == "ignores_offset" else config.offset
        self.data = {"train": [], "held_out": []}
        for i in range(24):
            ex = Example(f"{i}+{off}=", f"{i + off}", f"{i + off}")
            self.data["held_out" if i % 4 == 0 else "train"].append(ex)
        if self.fault == "leaky_split":
            self.data["held_out"].append(self.data["train"][0])
        if self.fault == "empty_held_out":
            self.data["held_out"] = []

    def split(self, split: str) -> list[Example]:
        return self.data[split]

    def epoch_examples(self) -> list[Example]:
        extra = self.data["held_out"][:1] if self.fault == "epochs_hold_held_out" else []
        return self.data["train"] + extra

    def examples(self, split: str, *, seed: int = 0) -> Iterator[Example]:
        epoch = 0
        while True:
            order = list(self.data[split])
            rng = random.Random(f"{0 if self.fault == 'ignores_seed' else seed}-{split}-{epoch}")
            if self.fault == "unseeded":
                rng = random.Random()
            rng.shuffle(order)
            yield from order
            if self.fault == "one_epoch":
                return
            epoch += 1

    def sample(self, split: str, n: int, *, seed: int = 0) -> list[Example]:
        it = self.examples(split, seed=seed)
        return [next(it) for _ in range(min(n, len(self.data[split])))]

    def collator(self, tokenizer: Any, *, max_len: int) -> Any:
        return SFTCollator(tokenizer, max_len=max_len * (4 if self.fault == "no_truncation" else 1))

    def lines(self) -> Iterator[tuple[str, Example]]:
        splits = ["train"] if self.fault == "lines_skip_held_out" else ["train", "held_out"]
        for split in splits:
            for i, ex in enumerate(self.data[split]):
                yield (f"line {i}" if self.fault == "unnamed_lines" else f"{split}.jsonl:{i}"), ex


class _Plugin:
    @staticmethod
    @hookimpl
    def register_tasks(register: Any) -> None:
        register(AddConfig, lambda config, ctx: AddTask(config))


@pytest.fixture(autouse=True)
def task_plugin() -> Iterator[None]:
    reg = get_registry()
    reg.register_plugin(_Plugin, name="task_faults", distribution="task-faults")
    yield
    reg.unregister_plugin("task_faults")


def _suite(fault: str, **knobs: Any) -> Any:
    # fault is the planted switch: another value plants another fault.
    attrs = {"make_config": lambda self: AddConfig(fault=fault), "config_fields_exempt": ("fault",)}
    return type("Suite", (TaskConformance,), {**attrs, **knobs})()


def test_the_sound_task_passes_every_check() -> None:
    results = run_suite(_suite("none"))
    assert set(results.values()) == {"passed"} and len(results) == 9, results


@pytest.mark.parametrize(
    ("fault", "test", "match"),
    [
        ("leaky_split", "test_held_out_is_disjoint_from_train", "also in the training split"),
        ("ignores_seed", "test_sampling_is_deterministic_and_seeded", "the seed is ignored"),
        ("unseeded", "test_sampling_is_deterministic_and_seeded", "differs between two builds"),
        ("one_epoch", "test_examples_are_endless", "stopped after 18 examples"),
        ("no_truncation", "test_collates_into_bounded_batches", "max_len=8"),
        ("ignores_offset", "test_config_fields_are_honoured", r"\['offset=3'\]"),
        ("empty_held_out", "test_both_splits_give_examples", r"sample\('held_out', 12\) is empty"),
        ("unnamed_lines", "test_lines_name_every_example", "'file:line'"),
        ("lines_skip_held_out", "test_lines_name_every_example", "lines\\(\\) holds 18"),
        (
            "epochs_hold_held_out",
            "test_epoch_examples_are_the_training_items",
            r"epoch_examples\(\) is not its split\('train'\) \(19 items, the split 18\)",
        ),
    ],
)
def test_each_planted_fault_is_caught_and_named(fault: str, test: str, match: str) -> None:
    where = f"task 'test_add_task' of plugin 'task_faults' (task-faults), module {__name__}: "
    suite = _suite(fault, max_len=8) if fault == "no_truncation" else _suite(fault)
    with pytest.raises(AssertionError, match=re.escape(where) + ".*" + match):
        getattr(suite, test)()
