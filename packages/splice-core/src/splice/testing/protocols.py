"""Conformance checks for the optional capabilities in ``splice.interfaces``.

The Trainer and ``run_experiment`` find an optional capability with ``isinstance(x,
Protocol)``, which only checks that the names exist. These checks call the methods with
real tensors and assert what the Trainer relies on, so a third-party component learns
about a broken contract from its own tests, not from a failed resume three hours in::

    from splice.testing.protocols import check_stateful, check_param_lr_scaled

    check_stateful(MyObjective(...))                # state_dict round-trips
    check_param_lr_scaled(MyLayer(...))             # scales name the layer's own parameters

Each check raises ``ProtocolViolation`` (an ``AssertionError``) naming the component, the
method and what was wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from splice.generation.sampling import GenerationOutput
from splice.interfaces import (
    AfterOptimizerStep,
    ClosedAlphabet,
    CollatingTask,
    EpochTask,
    HasTrainableModules,
    LocatedTask,
    Minibatched,
    ParamLRScaled,
    RolloutFactory,
    SetsUp,
    SplitTask,
    Stateful,
)


class ProtocolViolation(AssertionError):
    """A component claims an optional capability but breaks its contract."""


def _name(obj: Any) -> str:
    return type(obj).__name__


def _require(obj: Any, protocol: type, method: str) -> None:
    if not isinstance(obj, protocol):
        raise ProtocolViolation(
            f"{_name(obj)} does not implement {protocol.__name__} (no `{method}`)"
        )


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_sets_up(component: Any, model: nn.Module, data: Iterable[Any] | None = None) -> None:
    """``setup(model, data)`` runs and leaves the model's weights as they were (it snapshots
    the starting weights; it must not train or re-initialise them)."""
    _require(component, SetsUp, "setup")
    before = _snapshot(model)
    component.setup(model, data)
    for name, value in model.state_dict().items():
        if name in before and not torch.equal(before[name], value.detach()):
            raise ProtocolViolation(f"{_name(component)}.setup changed the model's {name!r}")


def check_stateful(component: Any) -> None:
    """``state_dict()`` is tensors and JSON-able values, and ``load_state_dict`` of it into the
    same component gives back the same state (what an exact resume needs)."""
    _require(component, Stateful, "state_dict / load_state_dict")
    state = dict(component.state_dict())
    for key, value in state.items():
        if not isinstance(key, str):
            raise ProtocolViolation(f"{_name(component)}.state_dict key {key!r} is not a string")
        if isinstance(value, Tensor):
            continue
        try:
            json.dumps(value)
        except TypeError as e:
            raise ProtocolViolation(
                f"{_name(component)}.state_dict[{key!r}] is neither a tensor nor JSON-able: {e}"
            ) from None
    saved = {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
    component.load_state_dict(saved)
    again = dict(component.state_dict())
    if set(again) != set(state):
        raise ProtocolViolation(
            f"{_name(component)}: keys changed by a state_dict round trip: "
            f"{sorted(set(state) ^ set(again))}"
        )
    for key, value in state.items():
        other = again[key]
        same = (
            torch.equal(value, other)
            if isinstance(value, Tensor) and isinstance(other, Tensor)
            else value == other
        )
        if not same:
            raise ProtocolViolation(
                f"{_name(component)}.load_state_dict did not restore {key!r}: "
                f"{value!r} became {other!r}"
            )


def check_trainable_modules(objective: Any) -> dict[str, nn.Module]:
    """``trainable_modules()`` maps names to modules with at least one trainable parameter.

    Returns the mapping (for further checks)."""
    _require(objective, HasTrainableModules, "trainable_modules")
    modules = dict(objective.trainable_modules())
    for name, module in modules.items():
        if not isinstance(name, str) or not isinstance(module, nn.Module):
            raise ProtocolViolation(
                f"{_name(objective)}.trainable_modules() must map str to nn.Module, got "
                f"{name!r}: {_name(module)}"
            )
        if not any(p.requires_grad for p in module.parameters()):
            raise ProtocolViolation(
                f"{_name(objective)}.trainable_modules()[{name!r}] has no trainable parameter"
            )
    return modules


def check_minibatches(objective: Any, experience: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``minibatches(experience)`` yields mappings, the same number each time it is asked for
    the same experience (every rank must make the same number of updates).

    Returns the first pass's minibatches."""
    _require(objective, Minibatched, "minibatches")
    first = list(objective.minibatches(experience))
    second = list(objective.minibatches(experience))
    for mb in first:
        if not isinstance(mb, Mapping):
            raise ProtocolViolation(
                f"{_name(objective)}.minibatches yielded a {_name(mb)}, expected a mapping"
            )
    if len(first) != len(second):
        raise ProtocolViolation(
            f"{_name(objective)}.minibatches gave {len(first)} then {len(second)} minibatches "
            "for the same experience"
        )
    return first


def check_param_lr_scaled(module: nn.Module) -> None:
    """Every key of ``param_lr_scale`` names one of the module's own parameters (as its
    ``named_parameters()`` spells them) and every scale is a positive finite number."""
    _require(module, ParamLRScaled, "param_lr_scale")
    own = dict(module.named_parameters())
    for key, scale in cast(ParamLRScaled, module).param_lr_scale.items():
        if key not in own:
            raise ProtocolViolation(
                f"{_name(module)}.param_lr_scale names {key!r}, which is not one of its "
                f"parameters ({sorted(own)})"
            )
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ProtocolViolation(
                f"{_name(module)}.param_lr_scale[{key!r}] = {scale!r}: expected a positive number"
            )


def check_after_optimizer_step(module: nn.Module) -> Mapping[str, Any]:
    """``after_optimizer_step()`` returns None or ``{name: tensor | float}`` and leaves no
    gradient behind (it runs after ``zero_grad``, outside autograd).

    Returns the metrics it gave (empty for None)."""
    _require(module, AfterOptimizerStep, "after_optimizer_step")
    out = module.after_optimizer_step()  # type: ignore[operator]
    metrics: Mapping[str, Any] = out or {}
    if not isinstance(metrics, Mapping):
        raise ProtocolViolation(
            f"{_name(module)}.after_optimizer_step returned a {_name(out)}, expected a mapping"
        )
    for key, value in metrics.items():
        if not isinstance(value, (Tensor, int, float)):
            raise ProtocolViolation(
                f"{_name(module)}.after_optimizer_step()[{key!r}] is a {_name(value)}, "
                "expected a tensor or a number"
            )
        if isinstance(value, Tensor) and (value.requires_grad or value.numel() != 1):
            raise ProtocolViolation(
                f"{_name(module)}.after_optimizer_step()[{key!r}] must be a one-element tensor "
                f"without grad, got shape {tuple(value.shape)} "
                f"(requires_grad={value.requires_grad})"
            )
    stray = [n for n, p in module.named_parameters() if p.grad is not None]
    if stray:
        raise ProtocolViolation(
            f"{_name(module)}.after_optimizer_step left gradients on {stray[:3]}"
        )
    return metrics


def check_split_task(task: Any) -> tuple[Sequence[Any], Sequence[Any]]:
    """``split("train")`` and ``split("held_out")`` are non-empty, the same on every call,
    and share no example (held-out scores would otherwise be training scores).

    Returns ``(train, held_out)``."""
    _require(task, SplitTask, "split")
    train, held = task.split("train"), task.split("held_out")
    if not len(train):
        raise ProtocolViolation(f"{_name(task)}.split('train') is empty")
    if list(task.split("train")) != list(train) or list(task.split("held_out")) != list(held):
        raise ProtocolViolation(f"{_name(task)}.split gives different examples on each call")
    shared = [ex for ex in held if ex in list(train)]
    if shared:
        raise ProtocolViolation(
            f"{_name(task)}: {len(shared)} held-out example(s) are also in the training split, "
            f"e.g. {shared[0]!r}"
        )
    return train, held


def check_epoch_task(task: Any) -> Sequence[Any]:
    """``epoch_examples()`` is non-empty, the same on every call, and holds what the task
    samples for training (a batch of it collates as a sampled one would): the items of
    ``split("train")`` where the task splits, else items of the type ``sample`` returns.

    Returns the items."""
    _require(task, EpochTask, "epoch_examples")
    items = task.epoch_examples()
    if not len(items):
        raise ProtocolViolation(f"{_name(task)}.epoch_examples() is empty")
    if list(task.epoch_examples()) != list(items):
        raise ProtocolViolation(f"{_name(task)}.epoch_examples() differs between calls")
    if isinstance(task, SplitTask):
        if list(items) != list(task.split("train")):
            raise ProtocolViolation(
                f"{_name(task)}.epoch_examples() is not its split('train') "
                f"({len(items)} items, the split {len(task.split('train'))})"
            )
    else:
        sampled = task.sample("train", 1, seed=0)
        if sampled and type(items[0]) is not type(sampled[0]):
            raise ProtocolViolation(
                f"{_name(task)}.epoch_examples() holds {_name(items[0])}, but sample() gives "
                f"{_name(sampled[0])}: training batches would reach the collator as neither"
            )
    return items


def check_collating_task(
    task: Any, tokenizer: Any, examples: Sequence[Any], *, max_len: int
) -> dict[str, Any]:
    """``collator(tokenizer, max_len=...)`` returns a callable that turns ``examples`` into a
    dict whose tensors all have one row per example (or per pair row) and at most
    ``max_len`` positions.

    Returns the batch."""
    _require(task, CollatingTask, "collator")
    collate = task.collator(tokenizer, max_len=max_len)
    if not callable(collate):
        raise ProtocolViolation(f"{_name(task)}.collator returned a {_name(collate)}")
    batch = collate(list(examples))
    if not isinstance(batch, Mapping):
        raise ProtocolViolation(f"{_name(task)}'s collator returned a {_name(batch)}, not a dict")
    tensors = {k: v for k, v in batch.items() if isinstance(v, Tensor) and v.ndim >= 2}
    if not tensors:
        raise ProtocolViolation(f"{_name(task)}'s collator gave no (rows, positions) tensor")
    for key, value in tensors.items():
        if value.shape[-1] > max_len:
            raise ProtocolViolation(
                f"{_name(task)}'s collator: {key!r} has {value.shape[-1]} positions, more than "
                f"max_len={max_len}"
            )
    return dict(batch)


def check_located_task(task: Any) -> list[tuple[str, Any]]:
    """``lines()`` yields ``(where, example)`` with a non-empty ``where`` for each, and, for a
    task that also splits (``SplitTask``), every example of both splits is among them: a
    check before step 1 reads ``lines()`` instead of the splits, so an example it leaves out
    is never checked.

    Returns the pairs."""
    _require(task, LocatedTask, "lines")
    pairs = list(task.lines())
    if not pairs:
        raise ProtocolViolation(f"{_name(task)}.lines() yielded nothing")
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ProtocolViolation(
                f"{_name(task)}.lines() yielded {pair!r}, expected a (where, example) pair"
            )
        if not pair[0]:
            raise ProtocolViolation(f"{_name(task)}.lines(): an example without a location")
    if isinstance(task, SplitTask):
        located = [ex for _, ex in pairs]
        for split in ("train", "held_out"):
            missing = [ex for ex in task.split(split) if ex not in located]
            if missing:
                raise ProtocolViolation(
                    f"{_name(task)}.lines() leaves out {len(missing)} {split} example(s), "
                    f"e.g. {missing[0]!r}"
                )
    return pairs


def check_closed_alphabet(tokenizer: Any, outside: str = "\u2603") -> None:
    """``alphabet`` is a non-empty string without repeats, every character of it encodes and
    decodes back, and a character ``outside`` it raises ``ValueError`` on ``encode`` (what
    the check before step 1 stands in for)."""
    _require(tokenizer, ClosedAlphabet, "alphabet")
    alphabet = tokenizer.alphabet
    if not isinstance(alphabet, str) or not alphabet:
        raise ProtocolViolation(f"{_name(tokenizer)}.alphabet must be a non-empty str")
    if len(set(alphabet)) != len(alphabet):
        raise ProtocolViolation(f"{_name(tokenizer)}.alphabet repeats a character")
    back = tokenizer.decode(tokenizer.encode(alphabet))
    if back != alphabet:
        raise ProtocolViolation(
            f"{_name(tokenizer)}: the alphabet encodes and decodes to {back!r}, not itself"
        )
    if outside in alphabet:
        raise ValueError(f"outside={outside!r} is in the alphabet; pass another character")
    try:
        tokenizer.encode(outside)
    except ValueError:
        return
    raise ProtocolViolation(
        f"{_name(tokenizer)}.encode({outside!r}) did not raise ValueError for a character "
        "outside its alphabet"
    )


def check_rollout_factory(factory: Any, model: nn.Module, prompt_ids: Sequence[list[int]]) -> None:
    """``prompts_per_step`` is a non-negative int, and two generators of one step sample the
    same tokens from ``model`` (a resumed run repeats the killed run's rollouts exactly)."""
    _require(factory, RolloutFactory, "generator / prompts_per_step")
    per_step = factory.prompts_per_step
    if not isinstance(per_step, int) or per_step < 0:
        raise ProtocolViolation(
            f"{_name(factory)}.prompts_per_step = {per_step!r}: expected an int >= 0"
        )
    first = factory.generator(3, 0)(model, list(prompt_ids))
    again = factory.generator(3, 0)(model, list(prompt_ids))
    for out in (first, again):
        if not isinstance(out, GenerationOutput):
            raise ProtocolViolation(
                f"{_name(factory)}'s generator returned a {_name(out)}, not a GenerationOutput"
            )
    if not torch.equal(first.tokens, again.tokens):
        raise ProtocolViolation(
            f"{_name(factory)}.generator(3, 0) sampled different tokens on a second call "
            "for the same step"
        )


__all__ = [
    "ProtocolViolation",
    "check_after_optimizer_step",
    "check_closed_alphabet",
    "check_collating_task",
    "check_epoch_task",
    "check_located_task",
    "check_minibatches",
    "check_param_lr_scaled",
    "check_rollout_factory",
    "check_sets_up",
    "check_split_task",
    "check_stateful",
    "check_trainable_modules",
]
