"""The chain-of-thought arithmetic format, the mixture task, and decoding ids past a char
tokenizer's alphabet (an RL policy with a padded vocabulary can sample them)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from splice.data.arithmetic import ArithmeticTask, _is_held_out, addition_steps
from splice.data.configs import ArithmeticTaskConfig, MixtureTaskConfig
from splice.data.tokenizer import CharTokenizer
from splice.registry import get_registry


@pytest.mark.parametrize(
    ("a", "b", "steps"),
    [
        (37, 25, "7+5=12,3+2+1=6"),
        (99, 99, "9+9=18,9+9+1=19"),
        (5, 37, "5+7=12,0+3+1=4"),
        (3, 4, "3+4=7"),
        (0, 0, "0+0=0"),
    ],
)
def test_column_addition_steps(a, b, steps):
    assert addition_steps(a, b) == steps


def test_chain_of_thought_example_keeps_the_plain_answer():
    ex = ArithmeticTask("+", chain_of_thought=True).format(37, 25)
    assert ex.prompt == "37+25="
    assert ex.completion == "<think>7+5=12,3+2+1=6</think><answer>62</answer>"
    assert ex.answer == "62"


def test_chain_of_thought_is_refused_where_it_is_not_defined():
    with pytest.raises(ValidationError, match="chain_of_thought is defined for op '\\+'"):
        ArithmeticTaskConfig(op="-", chain_of_thought=True)
    with pytest.raises(ValueError, match="cannot be combined"):
        ArithmeticTask("+", chain_of_thought=True, reverse_answer=True)


def test_mixture_draws_each_task_by_weight_deterministically():
    cfg = MixtureTaskConfig.model_validate(
        {
            "tasks": [{"type": "arithmetic", "op": "+"}, {"type": "arithmetic", "op": "-"}],
            "weights": [3, 1],
        }
    )
    task = get_registry().build("task", cfg, None)
    a = task.sample("train", 400, seed=1)
    assert a == task.sample("train", 400, seed=1) and a != task.sample("train", 400, seed=2)
    share = sum("+" in e.prompt for e in a) / len(a)
    assert 0.65 < share < 0.85
    # each component keeps its own split: held-out mixture examples are held-out problems
    for e in task.sample("held_out", 100, seed=3):
        a_, op, b_ = (
            e.prompt[:-1].partition("+") if "+" in e.prompt else e.prompt[:-1].partition("-")
        )
        assert _is_held_out(int(a_), int(b_), op, 0.1), e.prompt


def test_mixture_weights_are_validated():
    with pytest.raises(ValidationError, match="weights"):
        MixtureTaskConfig.model_validate({"tasks": [{"type": "arithmetic"}], "weights": [1.0, 2.0]})


def test_decode_skips_ids_past_the_alphabet():
    tok = CharTokenizer("ab")
    assert tok.vocab_size == 5
    assert tok.decode([3, 4, 7, 2]) == "ab"
    assert tok.decode([3, 7], skip_special=False) == "a<unk:7>"


def test_reasoning_share_leaves_the_rest_answering_at_once() -> None:
    """``reasoning_share`` of the drawn problems work the carries out; the others have an
    empty think block; the problems drawn do not depend on the share; bad shares fail."""
    mixed = ArithmeticTask("+", min_digits=2, max_digits=2, chain_of_thought=True,
                           reasoning_share=0.3).sample("train", 1000)  # fmt: skip
    full = ArithmeticTask("+", min_digits=2, max_digits=2, chain_of_thought=True)
    assert [e.prompt for e in mixed] == [e.prompt for e in full.sample("train", 1000)]
    empty = [e for e in mixed if e.completion.startswith("<think></think>")]
    assert 0.62 < len(empty) / len(mixed) < 0.78
    e = empty[0]
    assert e.completion == f"<think></think><answer>{e.answer}</answer>"
    assert e.answer == str(eval(e.prompt[:-1]))
    with pytest.raises(ValidationError, match="reasoning_share"):
        ArithmeticTaskConfig(chain_of_thought=True, reasoning_share=1.5)


def test_mixture_held_out_gives_a_small_split_once_and_never_repeats():
    """A component whose held-out split is smaller than its share of the picks (here 1-digit
    subtraction: 10 held-out problems at fraction 0.1) gives each problem once."""
    cfg = MixtureTaskConfig.model_validate(
        {
            "tasks": [
                {"type": "arithmetic", "op": "+", "max_digits": 2},
                {"type": "arithmetic", "op": "-", "max_digits": 1},
            ],
            "weights": [1, 1],
        }
    )
    task = get_registry().build("task", cfg, None)
    drawn = task.sample("held_out", 200, seed=0)
    minus = [e.prompt for e in drawn if "-" in e.prompt]
    small = len(task.tasks[1].sample("held_out", 10_000))
    assert len(minus) == small < 100  # every held-out subtraction once, no more
    assert len(set(minus)) == len(minus)
    assert len(drawn) < 200  # the surplus subtraction picks are dropped, not repeated
