"""The ``markov_text`` task: its rule table, disjoint splits, distinct evaluation draws, and
the chain's own loss against an independent count."""

from __future__ import annotations

import math

import pydantic
import pytest
from splice.data.examples import Example
from splice.training.configs import DataConfig
from splice.training.experiment import build_task
from splice_recipes.markov_text import MarkovTextTask, MarkovTextTaskConfig, check_split


def small(**kw: object) -> MarkovTextTask:
    return MarkovTextTask(MarkovTextTaskConfig(alphabet="abcdef", successors=2, length=8, **kw))


def test_registered_and_built_from_a_data_config() -> None:
    task = build_task(DataConfig(task={"type": "markov_text", "order": 1}).task)
    assert isinstance(task, MarkovTextTask) and len(task.rules) == 36


def test_every_step_follows_the_rule_table() -> None:
    task = small()
    assert len(task.rules) == 36  # 6 characters, order 2
    for nxt, cum in task.rules.values():
        assert len(set(nxt)) == 2 and cum[-1] == pytest.approx(1.0) and cum[0] < cum[1]
    for ex in task.sample("train", 50, seed=1):
        text = ex.prompt + ex.completion
        assert len(ex.prompt) == 2 and len(text) == 8
        assert all(text[i] in task.rules[text[i - 2 : i]][0] for i in range(2, 8))


def test_language_seed_picks_the_chain_and_sample_seed_the_sequences() -> None:
    assert small().rules == small().rules
    assert small().rules != small(language_seed=1).rules
    task = small()
    assert task.sample("train", 5, seed=3) == task.sample("train", 5, seed=3)
    assert task.sample("train", 5, seed=3) != task.sample("train", 5, seed=4)


def test_splits_are_disjoint_and_evaluation_draws_distinct() -> None:
    task = MarkovTextTask(MarkovTextTaskConfig(alphabet="abcdefgh", successors=2, length=10))
    drawn = {s: task.sample(s, 300, seed=0) for s in ("train", "dev", "held_out")}
    texts = {s: {ex.prompt + ex.completion for ex in exs} for s, exs in drawn.items()}
    assert len(texts["dev"]) == 300 and len(texts["held_out"]) == 300  # no repeats
    assert not texts["train"] & texts["held_out"]
    assert not texts["train"] & texts["dev"] and not texts["dev"] & texts["held_out"]
    for s, exs in drawn.items():
        check_split(task, exs, s)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="belong to another split"):
        check_split(task, drawn["train"][:5], "held_out")


def test_optimal_loss_is_the_mean_negative_log_probability_per_target_token() -> None:
    task = small()
    nxt, cum = task.rules["ab"]
    p0 = cum[0]
    ex = Example(prompt="ab", completion=nxt[0])
    # one scored character (prob p0) and the certain end of sequence
    assert task.optimal_loss([ex]) == pytest.approx(-math.log(p0) / 2)
    bad = next(c for c in "abcdef" if c not in nxt)
    with pytest.raises(ValueError, match="never followed"):
        task.log_prob(Example(prompt="ab", completion=bad))


def test_optimal_loss_matches_the_chains_expected_entropy() -> None:
    """On many sequences drawn from the chain, its own loss approaches the expected entropy
    of the steps, computed independently by carrying the distribution over contexts
    forward from the uniform start."""
    task = small()

    def probs(ctx: str) -> dict[str, float]:
        nxt, cum = task.rules[ctx]
        return {c: b - a for c, a, b in zip(nxt, [0.0, *cum], cum, strict=False)}

    contexts = {ctx: 1 / len(task.rules) for ctx in task.rules}
    nats = 0.0
    for _ in range(6):  # the 6 scored characters of a length-8 sequence
        step: dict[str, float] = {}
        for ctx, w in contexts.items():
            for c, p in probs(ctx).items():
                nats -= w * p * math.log(p)
                step[ctx[1] + c] = step.get(ctx[1] + c, 0.0) + w * p
        contexts = step
    expected = nats / 7  # per target token: 6 characters and the certain end of sequence
    got = task.optimal_loss(task.sample("train", 4000, seed=0))
    assert got == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"alphabet": "aab"}, "repeats"),
        ({"alphabet": "ab", "successors": 3}, "exceeds the alphabet"),
        ({"length": 2}, "must exceed order"),
        ({"order": 4}, "contexts exceeds"),
        ({"held_out_fraction": 0.5, "dev_fraction": 0.5}, "nothing to train on"),
    ],
)
def test_bad_configs_name_the_problem(fields: dict[str, object], match: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=match):
        MarkovTextTaskConfig(**fields)  # type: ignore[arg-type]


def test_an_evaluation_draw_larger_than_its_split_gives_each_sequence_once() -> None:
    task = MarkovTextTask(MarkovTextTaskConfig(alphabet="abc", successors=1, length=4))
    held = task.sample("held_out", 50, seed=0)  # 9 prompts, one sequence each: ~1 held out
    texts = [ex.prompt + ex.completion for ex in held]
    assert 0 < len(texts) < 9 and len(set(texts)) == len(texts)
    check_split(task, held, "held_out")


def test_dev_fraction_sets_the_dev_split() -> None:
    narrow, wide = small(dev_fraction=0.05), small(dev_fraction=0.4)
    for task in (narrow, wide):
        check_split(task, task.sample("dev", 20, seed=0), "dev")
    assert narrow.sample("dev", 20, seed=0) != wide.sample("dev", 20, seed=0)
    # a sequence the narrow dev split trains on is dev in the wide one
    moved = [ex for ex in narrow.sample("train", 200, seed=0) if wide.split_of(ex) == "dev"]
    assert moved


def test_no_dev_split_when_its_fraction_is_zero() -> None:
    with pytest.raises(ValueError, match="no dev split"):
        small(dev_fraction=0.0).sample("dev", 1)
