"""Tasks (kind ``task``) over preference JSONL (pairs) and unpaired JSONL (KTO).

They behave like the core's ``jsonl`` task (``split``, ``examples``, ``sample``; a held-out
split from a file or by a hash of each example) and add ``collator(tokenizer, max_len=)``,
which ``splice run`` uses instead of the SFT collator, and ``set_split`` so precomputed
reference log-probs can be attached to the examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from splice.data.jsonl import parse_jsonl_lines
from splice.data.tasks import JsonlTask, Split, hash_fraction

from splice_dpo.configs import PreferenceJsonlTaskConfig, UnpairedJsonlTaskConfig
from splice_dpo.data import (
    PreferenceCollator,
    UnpairedCollator,
    preference_example,
    unpaired_example,
)


class _FileTask(JsonlTask):
    parse: Callable[[dict[str, Any]], Any]  # one JSON object -> one example
    collator_cls: Any

    def __init__(self, config: PreferenceJsonlTaskConfig | UnpairedJsonlTaskConfig) -> None:
        self.config = config  # type: ignore[assignment]
        self._splits = None

    def _load(self) -> dict[str, list[Any]]:
        if self._splits is None:
            cfg = self.config
            train = [ex for _, ex in self.read_lines(cfg.train)]
            if cfg.held_out is not None:
                held = [ex for _, ex in self.read_lines(cfg.held_out)]
            else:
                frac = cfg.held_out_fraction
                held = [ex for ex in train if hash_fraction(ex) < frac]
                train = [ex for ex in train if hash_fraction(ex) >= frac]
            self._splits = {"train": train, "held_out": held}
        return self._splits

    def read_lines(self, path: str) -> list[tuple[int, Any]]:
        """``(line number, example)`` for every example of ``path`` (errors name file:line)."""
        return parse_jsonl_lines(path, type(self).parse)

    def set_split(self, split: Split, examples: Sequence[Any]) -> None:
        """Replace a split's examples (same length; e.g. with reference log-probs attached)."""
        data = self._load()
        if len(examples) != len(data[split]):
            raise ValueError(
                f"set_split({split!r}): {len(examples)} examples for {len(data[split])}"
            )
        data[split] = list(examples)

    def collator(self, tokenizer: Any, *, max_len: int) -> Any:
        return type(self).collator_cls(tokenizer, max_len=max_len)


class PreferenceJsonlTask(_FileTask):
    """Preference pairs (``PreferenceExample``) from JSONL files."""

    parse = staticmethod(preference_example)
    collator_cls = PreferenceCollator

    def collator(self, tokenizer: Any, *, max_len: int) -> Any:
        return PreferenceCollator(tokenizer, max_len=max_len, layout=self.config.layout)


class UnpairedJsonlTask(_FileTask):
    """Unpaired labelled examples (``UnpairedExample``) from JSONL files, for KTO."""

    parse = staticmethod(unpaired_example)
    collator_cls = UnpairedCollator


def build_preference_jsonl(
    config: PreferenceJsonlTaskConfig, ctx: object = None
) -> PreferenceJsonlTask:
    return PreferenceJsonlTask(config)


def build_unpaired_jsonl(config: UnpairedJsonlTaskConfig, ctx: object = None) -> UnpairedJsonlTask:
    return UnpairedJsonlTask(config)


__all__ = [
    "PreferenceJsonlTask",
    "UnpairedJsonlTask",
    "build_preference_jsonl",
    "build_unpaired_jsonl",
]
