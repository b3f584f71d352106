"""Checks run before step 1, so a run never fails late on something its config and data
already said: the text of every task against the tokenizer's alphabet (JSONL files line by
line, naming file and line), every evaluation prompt plus ``eval.max_new_tokens``
against the model's context, and that the training data leaves tokens to train on at
``data.max_len``. ``data.max_len`` against the context is checked by the config
itself (``ExperimentConfig``), so ``splice config`` reports it too.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from splice.data.examples import Example
from splice.interfaces import ClosedAlphabet, LocatedTask
from splice.training.stream import derive_seed

SAMPLED = 256  # examples drawn from a generated (endless) task to check its alphabet


class PreflightError(ValueError):
    """A setting or a piece of data that would fail during the run; found before step 1."""


def _texts(ex: Any) -> str:
    """Every string an example carries (``Example``: prompt, completion, answer; other
    tasks' dataclasses, e.g. preference pairs, likewise)."""
    if dataclasses.is_dataclass(ex) and not isinstance(ex, type):
        values = [getattr(ex, f.name) for f in dataclasses.fields(ex)]
    elif isinstance(ex, dict):
        values = list(ex.values())
    else:
        values = [ex]
    return "".join(v for v in values if isinstance(v, str))


def _located_examples(
    task_config: Any, task: Any, seed: int, splits: tuple[str, ...]
) -> Iterator[tuple[str, Example]]:
    """``(where, example)`` pairs: ``file:line`` for a task read from files (its ``lines()``:
    the core's ``jsonl``, a plugin's ``preference_jsonl``), else a drawn sample."""
    if isinstance(task, LocatedTask):
        yield from task.lines()
        return
    name = f"task {getattr(task_config, 'type', type(task).__name__)!r}"
    for split in splits:
        for ex in task.sample(split, SAMPLED, seed=derive_seed(seed, "preflight", split)):
            yield f"{name} ({split} example {getattr(ex, 'prompt', ex)!r})", ex


def check_alphabet(
    task_config: Any,
    task: Any,
    tokenizer: Any,
    *,
    seed: int,
    splits: tuple[str, ...] = ("train", "held_out"),
) -> None:
    """Every character of the task's text must be in the tokenizer's alphabet.

    Only tokenizers with a closed alphabet (``CharTokenizer``) are checked; a generated
    task is checked on a sample of each of ``splits`` (a JSONL task: every line).
    """
    if not isinstance(tokenizer, ClosedAlphabet):
        return
    known = set(tokenizer.alphabet)
    for where, ex in _located_examples(task_config, task, seed, splits):
        unknown = sorted(set(_texts(ex)) - known)
        if unknown:
            raise PreflightError(
                f"{where}: character {unknown[0]!r} is not in the tokenizer's alphabet"
                + (f" (nor {', '.join(map(repr, unknown[1:4]))})" if len(unknown) > 1 else "")
                + "; add it to tokenizer.alphabet or clean the data"
            )


def check_trainable_tokens(
    task: Any,
    collate: Callable[[list[Any]], dict[str, Any]],
    *,
    where: str,
    max_len: int,
    seed: int,
) -> None:
    """Refuse training data that leaves nothing to train on: collate a sample of the train
    split (up to ``SAMPLED`` examples) and count the label positions that are not ignored
    (every ``*labels`` tensor of the batch). Zero means every example is cut off before its
    completion at ``max_len`` (or has none), and the run would train at loss 0.0 throughout.
    """
    import torch

    from splice.data.collate import IGNORE_INDEX

    examples = task.sample("train", SAMPLED, seed=derive_seed(seed, "preflight", "tokens"))
    with warnings.catch_warnings():  # the collator warns per truncated example
        warnings.simplefilter("ignore")
        batch = collate(list(examples))
    labels = [v for k, v in batch.items() if k.endswith("labels") and isinstance(v, torch.Tensor)]
    if labels and sum(int((v != IGNORE_INDEX).sum()) for v in labels) == 0:
        raise PreflightError(
            f"data: none of the {len(examples)} training examples checked from {where} leaves "
            f"a token to train on at data.max_len={max_len} (each is cut off before its "
            "completion, or has none), so every step would train nothing at loss 0; raise "
            "data.max_len or shorten the prompts"
        )


def check_generation_fits(
    prompts: list[str], tokenizer: Any, *, max_new_tokens: int, context: int, where: str
) -> None:
    """``bos + prompt + max_new_tokens`` must fit the model's context for every prompt."""
    if not prompts:
        return
    longest = max(prompts, key=lambda p: len(tokenizer.encode(p, bos=True)))
    need = len(tokenizer.encode(longest, bos=True)) + max_new_tokens
    if need > context:
        raise PreflightError(
            f"{where}: the longest evaluation prompt ({need - max_new_tokens} tokens, "
            f"{longest!r}) + eval.max_new_tokens={max_new_tokens} = {need} exceeds the "
            f"model's max_seq_len={context}; lower eval.max_new_tokens or raise "
            "model.max_seq_len"
        )


def check_experiment(config: Any, tokenizer: Any, tasks: dict[str, tuple[Any, Any]]) -> None:
    """All checks for an ``ExperimentConfig`` about to run.

    Args:
        config: the ``ExperimentConfig``.
        tokenizer: its tokenizer.
        tasks: ``{label: (task config, built task)}`` for training, evaluation and
            reference data; the one labelled ``"data"`` is the training task.
    """
    ev = config.eval
    evaluates = bool(ev.loss_batches or ev.exact_match_examples)
    for label, (task_config, task) in tasks.items():
        # held-out data is only read when the run evaluates on this task
        held = evaluates and (label == "data" or label.startswith("eval.tasks."))
        splits = ("train", "held_out") if held else ("train",)
        try:
            check_alphabet(task_config, task, tokenizer, seed=config.seed, splits=splits)
        except PreflightError as exc:
            raise PreflightError(f"{label}: {exc}") from None
    model = config.model
    context = getattr(model, "max_seq_len", None)
    if (
        not isinstance(context, int)
        or hasattr(model, "max_source_len")
        or not ev.exact_match_examples
    ):
        return  # encoder-decoder prompts go to the encoder; no generation, nothing to check
    for label, (_, task) in tasks.items():
        if label != "data" and not label.startswith("eval.tasks."):
            continue
        held = task.sample(ev.split, ev.exact_match_examples, seed=derive_seed(config.seed, "em"))
        check_generation_fits(
            [ex.prompt for ex in held],
            tokenizer,
            max_new_tokens=ev.max_new_tokens,
            context=context,
            where=label,
        )


__all__ = [
    "PreflightError",
    "check_alphabet",
    "check_experiment",
    "check_generation_fits",
    "check_trainable_tokens",
]
