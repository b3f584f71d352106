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


def test_extract_answer_takes_the_last_tag() -> None:
    assert extract_answer("<answer>1</answer> wait <answer> 2 </answer>") == "2"
    assert extract_answer("  no tags 7 ") == "no tags 7"


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        ("42", "42", True),
        ("<answer>42</answer>", "42", True),
        ("so it is 42.", "42", True),  # final number
        ("42.0", "42", True),  # numeric equality
        ("24", "42", False),
        ("4", "42", False),
        ("<answer>41</answer> 42", "42", False),  # the tag wins over trailing text
        ("8-", "8-", True),  # reversed-digit answers of the arithmetic task compare as text
        ("", "42", False),
        ("cat", "cat", True),
        ("the word is cat", "cat", True),  # final token
    ],
)
def test_answer_matches(completion: str, reference: str, expected: bool) -> None:
    assert answer_matches(completion, reference) is expected


def test_answer_match_numeric_off_compares_text() -> None:
    assert not answer_matches("42.0", "42", numeric=False)


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
    torch.testing.assert_close(
        scores.per_reward["answer_match"], torch.tensor([1.0, 1.0, 0.0, 1.0])
    )
    torch.testing.assert_close(scores.per_reward["format"], torch.tensor([1.0, 0.0, 1.0, 0.0]))
    lengths = torch.tensor([float(len(c)) for c in COMPLETIONS])
    length = -0.1 * (lengths - 20).clamp(min=0)
    torch.testing.assert_close(scores.per_reward["length_penalty"], length)
    expected = scores.per_reward["answer_match"] + 0.5 * scores.per_reward["format"] + 2.0 * length
    torch.testing.assert_close(scores.total, expected)
    m = scores.metrics()
    assert m["reward/answer_match"] == pytest.approx(0.75)
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
