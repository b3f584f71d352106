"""The number-words translation task: spelling rules, splits, determinism, tokenizer coverage."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from splice.data.tokenizer import CharTokenizer
from splice.data.translation import (
    NumberWordsTask,
    NumberWordsTaskConfig,
    number_to_words,
    with_separator,
)


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (42, "forty two"),
        (100, "one hundred"),
        (407, "four hundred seven"),
        (999, "nine hundred ninety nine"),
        (1000, "one thousand"),
        (12019, "twelve thousand nineteen"),
        (700010, "seven hundred thousand ten"),
        (999999, "nine hundred ninety nine thousand nine hundred ninety nine"),
    ],
)
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


def test_number_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="n must be in"):
        number_to_words(1_000_000)


def test_directions() -> None:
    to_words = NumberWordsTask(NumberWordsTaskConfig())
    to_digits = NumberWordsTask(NumberWordsTaskConfig(direction="to_digits"))
    assert to_words.format(407).prompt == "407"
    assert to_words.format(407).completion == to_words.format(407).answer == "four hundred seven"
    assert to_digits.format(407).prompt == "four hundred seven"
    assert to_digits.format(407).completion == "407"


def test_splits_are_disjoint_deterministic_and_cover_every_number() -> None:
    task = NumberWordsTask(NumberWordsTaskConfig(max_digits=3, held_out_fraction=0.2))
    train = {ex.prompt for ex in task.all_examples("train")}
    held = {ex.prompt for ex in task.all_examples("held_out")}
    assert not train & held
    assert train | held == {str(n) for n in range(1000)}
    assert 0.15 < len(held) / 1000 < 0.25
    sampled = {ex.prompt for ex in task.sample("held_out", 300, seed=5)}
    assert sampled <= held
    assert task.sample("train", 50, seed=3) == task.sample("train", 50, seed=3)
    assert task.sample("train", 50, seed=3) != task.sample("train", 50, seed=4)


def test_digit_range_is_respected() -> None:
    task = NumberWordsTask(NumberWordsTaskConfig(min_digits=2, max_digits=3))
    lengths = {len(ex.prompt) for ex in task.sample("train", 200)}
    assert lengths == {2, 3}


def test_char_tokenizer_covers_the_task() -> None:
    tok = CharTokenizer()
    task = NumberWordsTask(NumberWordsTaskConfig(max_digits=6))
    for ex in task.sample("train", 200) + with_separator(task.sample("held_out", 50)):
        assert tok.decode(tok.encode(ex.prompt + ex.completion)) == ex.prompt + ex.completion


def test_with_separator_marks_the_end_of_the_source() -> None:
    (ex,) = with_separator([NumberWordsTask().format(42)], "=")
    assert (ex.prompt, ex.completion, ex.answer) == ("42=", "forty two", "forty two")


def test_config_errors_name_the_fields() -> None:
    with pytest.raises(ValidationError, match="max_digits"):
        NumberWordsTaskConfig(min_digits=3, max_digits=2)
    with pytest.raises(ValidationError, match="max_digits"):
        NumberWordsTaskConfig(max_digits=7)
    with pytest.raises(ValueError, match="split"):
        next(NumberWordsTask().examples("test"))  # type: ignore[arg-type]
