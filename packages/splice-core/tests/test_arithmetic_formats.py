"""Arithmetic task variants with their own prompt end and output script (``separator``,
``answer_digits``): the same problems, a new format, and a split shared with the default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from splice.data.arithmetic import ArithmeticTask
from splice.data.configs import ArithmeticTaskConfig
from splice.data.tokenizer import CharTokenizer
from splice.registry import get_registry


def test_new_prompt_end_and_output_script() -> None:
    task = ArithmeticTask("+", reverse_answer=True, separator=":", answer_digits="abcdefghij")
    ex = task.format(37, 25)
    assert (ex.prompt, ex.completion, ex.answer) == ("37+25:", "cg", "cg")  # 62 reversed: "26"
    assert task.format(99, 99).completion == "ijb"  # 198 -> "891"
    neg = ArithmeticTask("-", answer_digits="abcdefghij").format(3, 25)
    assert neg.completion == "-cc"  # the sign stays; only digits are rewritten


def test_variant_scores_the_same_problems_in_the_same_split() -> None:
    """A held-out problem of the default task is held out in the variant too: a fine-tuned
    model is never scored on operand pairs it trained on, in either format."""
    cfg = {"type": "arithmetic", "op": "+", "reverse_answer": True}
    reg = get_registry()
    plain = reg.build("task", ArithmeticTaskConfig(**cfg), None)
    script = reg.build("task", ArithmeticTaskConfig(**cfg, separator=":",
                                                    answer_digits="abcdefghij"), None)  # fmt: skip
    table = str.maketrans("abcdefghij", "0123456789")
    for split in ("train", "held_out"):
        a, b = plain.sample(split, 50, seed=3), script.sample(split, 50, seed=3)
        assert [x.prompt[:-1] for x in a] == [y.prompt[:-1] for y in b]
        assert [x.completion for x in a] == [y.completion.translate(table) for y in b]
    tok = CharTokenizer()
    assert tok.decode(tok.encode("37+25:gc")) == "37+25:gc"  # in the default alphabet


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"answer_digits": "abcdefghia"}, "10 distinct characters"),
        ({"answer_digits": "abcdefghi-"}, "10 distinct characters"),
        ({"answer_digits": "abc"}, "answer_digits"),
        ({"separator": ""}, "separator"),
        ({"chain_of_thought": True, "answer_digits": "abcdefghij"}, "chain_of_thought uses"),
    ],
)
def test_bad_formats_are_refused(fields, match) -> None:
    with pytest.raises(ValidationError, match=match):
        ArithmeticTaskConfig(**fields)


def test_task_class_refuses_bad_formats_too() -> None:
    with pytest.raises(ValueError, match="answer_digits"):
        ArithmeticTask("+", answer_digits="0123456789x")
    with pytest.raises(ValueError, match="separator"):
        ArithmeticTask("+", separator="")
    with pytest.raises(ValueError, match="chain_of_thought"):
        ArithmeticTask("+", chain_of_thought=True, answer_digits="abcdefghij")


def test_chain_of_thought_under_its_own_cue_keeps_its_split_and_answer() -> None:
    """``37+25:`` (a cue that always reasons) beside ``37+25=``: the same problem, the same
    split and answer, only the prompt's last character differs."""
    cue = ArithmeticTask("+", chain_of_thought=True, separator=":")
    plain = ArithmeticTask("+", chain_of_thought=True)
    ex = cue.format(37, 25)
    assert ex.prompt == "37+25:" and ex.answer == "62"
    assert ex.completion == "<think>7+5=12,3+2+1=6</think><answer>62</answer>"
    assert cue.split_of(37, 25) == plain.split_of(37, 25)
    held = cue.sample("held_out", 30)
    assert [e.prompt[:-1] for e in held] == [e.prompt[:-1] for e in plain.sample("held_out", 30)]
    assert all(e.prompt.endswith(":") for e in held)
