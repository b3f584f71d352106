"""Rewards: the built-in verifiers on real completions, weighted sums, and bad rewards stopping the run."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Iterator, Sequence

import pytest
import torch
from pydantic import ValidationError
from splice.rewards import (
    CallableRewardConfig,
    RewardError,
    RewardSet,
    RewardTermConfig,
    answer_matches,
    build_rewards,
    extract_answer,
)

PROMPTS = ["37+5=", "12-20=", "6*7=", "9+9="]
REFS = ["42", "-8", "42", "18"]
COMPLETIONS = [
    "<think>37 plus 5 carries one</think><answer>42</answer>",  # right, well formed
    "the answer is -8",  # right, no tags
    "<think>six sevens</think> <answer>41</answer>",  # wrong, well formed
    "<answer>18</answer> and then more text",  # right answer, bad format
]


@pytest.fixture
def reward_module() -> Iterator[str]:
    """A throwaway module with reward functions, importable by dotted path."""
    mod = types.ModuleType("splice_test_user_rewards")

    def digits(
        prompts: Sequence[str],
        completions: Sequence[str],
        references: Sequence[str],
        *,
        per: float = 1.0,
    ) -> list[float]:
        return [per * sum(ch.isdigit() for ch in c) for c in completions]

    def boom(
        prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> list[float]:
        raise KeyError("no such thing")

    def short(
        prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> list[float]:
        return [1.0] * (len(completions) - 1)

    def nan_at_2(
        prompts: Sequence[str], completions: Sequence[str], references: Sequence[str]
    ) -> torch.Tensor:
        out = torch.ones(len(completions))
        out[2] = math.nan
        return out

    mod.digits, mod.boom, mod.short, mod.nan_at_2 = digits, boom, short, nan_at_2  # type: ignore[attr-defined]
    mod.not_callable = 3  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    yield mod.__name__
    del sys.modules[mod.__name__]


def test_extract_answer_reads_one_final_answer() -> None:
    assert extract_answer("<think>1</think><answer> 2 </answer>") == "2"
    assert extract_answer("<answer>1</answer> wait <answer> 2 </answer>") == ""  # two: none
    assert extract_answer("  no tags 7 ") == "no tags 7"


# (completion, reference, answer_match, format): the games the issue found and their kin.
ADVERSARIAL = [
    ("<think>7+5=12</think><answer>12</answer>", "12", 1, 1),
    ("\n<think>a\nb</think>\n<answer> 12 </answer>\n", "12", 1, 1),
    ("12", "12", 1, 0),  # a task that answers directly: the bare completion is the answer
    ("", "12", 0, 0),
    ("it is not 12", "12", 0, 0),  # no searching for the last number
    ("11, 12, 13, 12", "12", 0, 0),
    ("<answer>12", "12", 0, 0),  # unclosed answer
    ("<think>x</think><answer>12", "12", 0, 0),
    ("<think><answer>12</answer></think><answer>13</answer>", "12", 0, 0),  # inside think
    ("<think><answer>12</answer></think><answer>13</answer>", "13", 1, 0),
    ("<think>x</think><answer>11</answer><answer>12</answer>", "12", 0, 0),  # two answers
    ("<think>x</think><answer>12</answer><answer>12</answer>", "12", 0, 0),
    ("</answer>12<answer>", "12", 0, 0),  # tags the wrong way round
    ("<think>x</think> 12", "12", 0, 0),  # tags used, but no answer block
    ("<think>12</think>", "12", 0, 0),
    ("<think>x", "12", 0, 0),  # reasoning never closed
    ("<think>a</think><answer>12</answer><think>b", "12", 0, 0),  # reopened after answering
    ("<think>a</think><think>b</think><answer>12</answer>", "12", 1, 0),  # two think blocks
    ("x<think>a</think><answer>12</answer>", "12", 1, 0),  # text before: read, but bad format
    ("<think>a</think><answer>12</answer> and then 13", "12", 1, 0),
    ("<think>a</think><answer></answer>", "12", 0, 1),  # well formed, empty answer
    ("<think>a</think><answer>1,000</answer>", "1000", 1, 1),  # thousands separators
    ("1000", "1,000", 1, 0),  # ... on the reference's side too
    ("<answer>1,00</answer>", "100", 0, 0),  # not a valid grouping: compared as text
    ("<answer>1.2e1</answer>", "12", 1, 0),  # exponent
    ("<answer>1e3</answer>", "1000", 1, 0),
    ("<answer>+12</answer>", "12", 1, 0),  # sign
    ("<answer>-12</answer>", "12", 0, 0),
    ("-0", "0", 1, 0),
    ("<answer>012</answer>", "12", 1, 0),  # leading zeros
    ("<answer>12.0</answer>", "12", 1, 0),
    ("<answer>12 13</answer>", "12", 0, 0),
    ("<answer>inf</answer>", "12", 0, 0),
    ("123456789012345678901234567890123", "123456789012345678901234567890124", 0, 0),  # exact
    ("<think>a</think><answer>paris</answer>", "Paris", 1, 1),  # words ignore case
    ("<answer>NEW   york</answer>", "New York", 1, 0),  # ... and runs of whitespace
    ("<answer>Lyon</answer>", "Paris", 0, 0),
    ("<Answer>12</Answer>", "12", 0, 0),  # not the tag: the whole text is the answer
    ("8-", "8-", 1, 0),  # reversed-digit answers of the arithmetic task compare as text
]


@pytest.mark.parametrize(("completion", "reference", "match", "form"), ADVERSARIAL)
def test_adversarial_completions(completion: str, reference: str, match: int, form: int) -> None:
    rs = build_rewards([{"reward": "answer_match"}, {"reward": "format"}])
    scores = rs.score(["p"], [completion], [reference])
    assert answer_matches(completion, reference) is bool(match)
    assert float(scores.per_reward["answer_match"][0]) == match
    assert float(scores.per_reward["format"][0]) == form


def test_adversarial_table_is_large() -> None:
    assert len(ADVERSARIAL) >= 30


@pytest.mark.parametrize("reference", ["", "   ", None])
def test_answer_match_refuses_a_missing_reference(reference: str | None) -> None:
    rs = build_rewards([{"reward": "answer_match"}])
    with pytest.raises(RewardError, match=r"answer_match needs a reference answer.*'7\+5='"):
        rs.score(["1+1=", "7+5="], ["2", ""], ["2", reference])  # type: ignore[list-item]


def test_answer_match_options() -> None:
    assert not answer_matches("42.0", "42", numeric=False)
    assert answer_matches(" 42 ", "42", numeric=False)
    assert not answer_matches("paris", "Paris", case_sensitive=True)
    assert answer_matches("<r>x</r><a>7</a>", "7", tag="a", think_tag="r")


def test_builtin_rewards_score_real_completions() -> None:
    rs = build_rewards(
        [
            RewardTermConfig(reward={"type": "answer_match"}),
            RewardTermConfig(reward={"type": "format"}, weight=0.5),
            RewardTermConfig(
                reward={"type": "length_penalty", "target": 20, "scale": 0.1}, weight=2.0
            ),
        ]
    )
    scores = rs.score(PROMPTS, COMPLETIONS, REFS)
    assert scores.total.dtype == torch.float32 and scores.total.shape == (4,)
    torch.testing.assert_close(  # "the answer is -8" is no answer: the whole text is read
        scores.per_reward["answer_match"], torch.tensor([1.0, 0.0, 0.0, 1.0])
    )
    torch.testing.assert_close(scores.per_reward["format"], torch.tensor([1.0, 0.0, 1.0, 0.0]))
    lengths = torch.tensor([float(len(c)) for c in COMPLETIONS])
    length = -0.1 * (lengths - 20).clamp(min=0)
    torch.testing.assert_close(scores.per_reward["length_penalty"], length)
    expected = scores.per_reward["answer_match"] + 0.5 * scores.per_reward["format"] + 2.0 * length
    torch.testing.assert_close(scores.total, expected)
    m = scores.metrics()
    assert m["reward/answer_match"] == pytest.approx(0.5)
    assert m["reward/format"] == pytest.approx(0.5)
    assert m["reward/total"] == pytest.approx(float(expected.mean()))
    assert rs.metrics() == m


def test_length_penalty_in_words() -> None:
    rs = build_rewards(
        [{"reward": {"type": "length_penalty", "target": 2, "scale": 1.0, "unit": "words"}}]
    )
    out = rs.score(["p"] * 3, ["a b", "a b c d", ""], ["r"] * 3)
    torch.testing.assert_close(out.total, torch.tensor([0.0, -2.0, 0.0]))


def test_format_allows_whitespace_and_multiline_but_nothing_else() -> None:
    rs = build_rewards([RewardTermConfig(reward="format")])
    good = "\n<think>line one\nline two</think>\n<answer>5</answer>\n"
    out = rs.score(
        ["p"] * 4, [good, "<answer>5</answer>", "x" + good, good + "<answer>6"], ["5"] * 4
    )
    torch.testing.assert_close(out.total, torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_callable_reward_with_kwargs_and_names(reward_module: str) -> None:
    rs = build_rewards(
        [
            RewardTermConfig(
                reward={
                    "type": "callable",
                    "path": f"{reward_module}:digits",
                    "kwargs": {"per": 0.5},
                },
                name="digits",
            ),
            RewardTermConfig(
                reward={"type": "callable", "path": f"{reward_module}:digits"},
                name="digits_full",
                weight=0.0,
            ),
        ]
    )
    out = rs.score(["a", "b"], ["12 and 345", "none"], ["", ""])
    torch.testing.assert_close(out.per_reward["digits"], torch.tensor([2.5, 0.0]))
    torch.testing.assert_close(out.total, torch.tensor([2.5, 0.0]))  # weight 0: logged only
    assert set(out.metrics()) == {"reward/digits", "reward/digits_full", "reward/total"}


def test_config_round_trips_through_json(reward_module: str) -> None:
    term = RewardTermConfig(
        reward={"type": "callable", "path": f"{reward_module}:digits"}, weight=0.3
    )
    again = RewardTermConfig.model_validate_json(term.model_dump_json())
    assert isinstance(again.reward, CallableRewardConfig)
    assert again == term


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (
            "boom",
            r"reward 'boom' raised KeyError.*no such thing.*batch of 4 \(first prompt '37\+5='\)",
        ),
        ("short", r"reward 'short' returned shape \(3,\) for 4 completions.*first prompt '37\+5='"),
        ("nan_at_2", r"reward 'nan_at_2' returned nan at index 2 \(prompt '6\*7='"),
    ],
)
def test_bad_reward_stops_with_its_name_and_batch(reward_module: str, fn: str, match: str) -> None:
    rs = build_rewards(
        [
            RewardTermConfig(reward="answer_match"),
            RewardTermConfig(reward={"type": "callable", "path": f"{reward_module}:{fn}"}, name=fn),
        ]
    )
    with pytest.raises(RewardError, match=match):
        rs.score(PROMPTS, COMPLETIONS, REFS)


def test_callable_path_errors(reward_module: str) -> None:
    with pytest.raises(ValidationError, match=r"package\.module:function"):
        CallableRewardConfig(path="no_colon")
    with pytest.raises(ValueError, match="cannot import 'splice_no_such_module'"):
        build_rewards([{"reward": {"type": "callable", "path": "splice_no_such_module:f"}}])
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        build_rewards([{"reward": {"type": "callable", "path": f"{reward_module}:missing"}}])
    with pytest.raises(ValueError, match="not a callable"):
        build_rewards([{"reward": {"type": "callable", "path": f"{reward_module}:not_callable"}}])


def test_duplicate_names_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match=r"\['answer_match'\] appear more than once"):
        build_rewards([{"reward": "answer_match"}, {"reward": "answer_match", "weight": 2}])
    rs = build_rewards([{"reward": "answer_match"}])
    with pytest.raises(ValueError, match="2 prompts, 3 completions, 3 references"):
        rs.score(["a", "b"], ["1", "2", "3"], ["1", "2", "3"])
    with pytest.raises(ValueError, match="at least one"):
        RewardSet([])


def test_unknown_reward_type_fails_at_validation() -> None:
    with pytest.raises(ValidationError, match="unknown reward type 'nope'"):
        RewardTermConfig(reward={"type": "nope"})


def test_reward_set_is_a_reward() -> None:
    rs = build_rewards([{"reward": "answer_match", "weight": 3.0}])
    torch.testing.assert_close(rs(["p"], ["7"], ["7"]), torch.tensor([3.0]))
