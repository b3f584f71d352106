"""Evaluation sets are honest: distinct problems, every one at most once, disjoint from
training, and a dev split apart from the reported one."""

from __future__ import annotations

import pytest
from splice.data.arithmetic import ArithmeticTask, check_disjoint
from splice.data.configs import ArithmeticTaskConfig
from splice.data.examples import Example
from splice.data.translation import NumberWordsTask, NumberWordsTaskConfig
from splice.training.experiment import build_task, loss_examples


def _prompts(examples):
    return [ex.prompt for ex in examples]


def test_arithmetic_held_out_is_distinct_and_disjoint_from_train():
    task = ArithmeticTask("+", reverse_answer=True)
    every = task.all_examples("held_out")
    train = set(_prompts(task.all_examples("train")))
    assert len(every) + len(train) == 100 * 100  # operands 0..99, each pair in one split
    assert 900 < len(every) < 1100  # 10%: one problem is ~0.1 point of accuracy
    held = task.sample("held_out", 500, seed=3)
    assert len(set(_prompts(held))) == 500  # no repeats (the old draw repeated 1-digit sums)
    assert not set(_prompts(held)) & train
    assert set(_prompts(held)) <= set(_prompts(every))
    assert task.sample("held_out", 500, seed=3) == held  # deterministic
    assert task.sample("held_out", 500, seed=4) != held
    # asking for more than the split holds gives every problem exactly once
    all_once = task.sample("held_out", 10_000)
    assert sorted(_prompts(all_once)) == sorted(_prompts(every))
    # training problems never come from the held-out split
    assert not set(_prompts(task.sample("train", 2000))) & set(_prompts(every))


def test_large_operand_spaces_draw_distinct_problems_from_the_stream():
    task = ArithmeticTask("*", min_digits=3, max_digits=3)  # 810,000 pairs: not enumerated
    held = task.sample("held_out", 300, seed=1)
    assert len(set(_prompts(held))) == 300
    assert all(task.split_of(*map(int, ex.prompt[:-1].split("*"))) == "held_out" for ex in held)


def test_dev_split_is_apart_from_train_and_held_out():
    task = build_task(ArithmeticTaskConfig(op="+", dev_fraction=0.1))
    dev, held = task.all_examples("dev"), task.all_examples("held_out")
    train = task.all_examples("train")
    assert len(dev) > 900 and len(dev) + len(held) + len(train) == 10_000
    assert not set(_prompts(dev)) & set(_prompts(held))
    assert not set(_prompts(dev)) & set(_prompts(train))
    assert not set(_prompts(task.sample("train", 2000))) & set(_prompts(dev))
    assert len(set(_prompts(task.sample("dev", 300)))) == 300
    # the held-out split does not depend on dev_fraction: reported results stay comparable
    assert held == ArithmeticTask("+").all_examples("held_out")
    with pytest.raises(ValueError, match="dev_fraction > 0"):
        ArithmeticTask("+").sample("dev", 5)
    with pytest.raises(ValueError, match="split must be"):
        ArithmeticTask("+").sample("test", 5)  # type: ignore[arg-type]


def test_disjointness_is_asserted():
    ex = Example("1+2=", "3", "3")
    check_disjoint([ex], {"2+2="}, where="x")
    with pytest.raises(RuntimeError, match="also training problems"):
        check_disjoint([ex], {"1+2="}, where="arithmetic + held_out")


def test_number_words_held_out_is_distinct_and_disjoint():
    task = NumberWordsTask(NumberWordsTaskConfig(max_digits=3))
    held = task.sample("held_out", 5000, seed=2)
    assert sorted(_prompts(held)) == sorted(_prompts(task.all_examples("held_out")))
    assert len(set(_prompts(held))) == len(held)
    assert not set(_prompts(held)) & set(_prompts(task.all_examples("train")))


def test_loss_batches_are_one_distinct_draw():
    task = ArithmeticTask("+")
    batches = loss_examples(task, "held_out", 4, 64, seed=0)
    flat = [p for b in batches for p in _prompts(b)]
    assert [len(b) for b in batches] == [64] * 4 and len(set(flat)) == 256
    tiny = ArithmeticTask("-", max_digits=1)  # ~10 held-out problems: fewer, shorter batches
    got = loss_examples(tiny, "held_out", 4, 8, seed=0)
    n = len(tiny.all_examples("held_out"))
    assert sum(len(b) for b in got) == n and all(0 < len(b) <= 8 for b in got)
