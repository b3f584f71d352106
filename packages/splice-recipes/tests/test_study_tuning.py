"""Dev-split tuning: candidates scored by the mean of a metric over the tuning seeds, the
choice by the stated rule, checked against hand-computed choices; the record round-trips."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
from splice_recipes.study import Tuning, tune, tune_in_workers
from splice_recipes.study.tuning import choose, tuning_table

# dev accuracy per (candidate, seed), as a recipe's dev runs would return them
DEV = {
    (0.1, 7): 0.60, (0.1, 8): 0.70,  # mean 0.65
    (0.3, 7): 0.72, (0.3, 8): 0.66,  # mean 0.69  <- best
    (1.0, 7): 0.80, (1.0, 8): 0.50,  # mean 0.65: the best single seed, not the best mean
}  # fmt: skip


def _dev(candidate: float, seed: int) -> dict[str, float]:
    return {"acc": DEV[(candidate, seed)], "loss": 1.0 - DEV[(candidate, seed)]}


def test_choice_is_the_best_mean_over_the_tuning_seeds() -> None:
    calls: list[tuple[float, int]] = []

    def dev(c: float, s: int) -> dict[str, float]:
        calls.append((c, s))
        return _dev(c, s)

    t = tune("lr", [0.1, 0.3, 1.0], dev, metric="acc", seeds=[7, 8])
    assert calls == [(0.1, 7), (0.1, 8), (0.3, 7), (0.3, 8), (1.0, 7), (1.0, 8)]
    assert t.scores == pytest.approx([0.65, 0.69, 0.65])
    assert t.chosen == 1 and t.value == 0.3
    assert t.figures[2] == [_dev(1.0, 7), _dev(1.0, 8)]
    # with seed 7 alone, 1.0 wins (0.80): one seed's luck is what averaging protects against
    assert tune("lr", [0.1, 0.3, 1.0], _dev, metric="acc", seeds=[7]).value == 1.0
    # "lower" reads the same figures the other way round
    low = tune("lr", [0.1, 0.3, 1.0], _dev, metric="loss", seeds=[7, 8], direction="lower")
    assert low.value == 0.3 and low.scores == pytest.approx([0.35, 0.31, 0.35])


def test_ties_go_to_the_first_listed_and_nan_never_wins() -> None:
    assert choose([0.65, 0.65, 0.60], "higher") == 0
    assert choose([0.65, 0.69, 0.69], "higher") == 1
    assert choose([0.3, 0.2, 0.2], "lower") == 1
    assert choose([math.nan, 0.1, 0.2], "higher") == 2
    assert choose([math.nan, 0.1, 0.2], "lower") == 1
    with pytest.raises(ValueError, match="no candidate has a score"):
        choose([math.nan], "higher")
    with pytest.raises(ValueError, match="direction must be"):
        choose([1.0], "up")  # type: ignore[arg-type]


def test_bad_tuning_is_refused_naming_the_problem() -> None:
    with pytest.raises(ValueError, match="'lr': no candidates"):
        tune("lr", [], _dev, metric="acc", seeds=[7])
    with pytest.raises(ValueError, match="no tuning seeds"):
        tune("lr", [0.1], _dev, metric="acc", seeds=[])
    with pytest.raises(ValueError, match=r"candidate 0\.3 seed 7 returned no 'f1'"):
        tune("lr", [0.3], _dev, metric="f1", seeds=[7])


def test_record_round_trips_and_states_rule_candidates_scores_choice() -> None:
    t = tune("replay", [0.05, 0.25], lambda c, s: {"acc": c}, metric="acc", seeds=[100])
    d = json.loads(json.dumps(t.to_json()))
    assert d["rule"] == "highest dev acc (mean over seed 100); ties: the first listed"
    assert d["candidates"] == [0.05, 0.25] and d["chosen"] == 1 and d["value"] == 0.25
    assert Tuning.from_json(d) == t
    table = tuning_table([t], scale=100, unit="%")
    assert "| replay | 0.05 | 5% |  |" in table and "| replay | 0.25 | 25% | **yes** |" in table
    assert table.endswith("Rule: " + t.rule)


def _dev_run(arm: str, candidate: float, seed: int) -> dict[str, float]:
    """Module-level (it reaches the worker processes): arm "b" swaps 0.3's and 1.0's dev
    figures, so the two arms choose differently."""
    return _dev(candidate if arm == "a" else {0.3: 1.0, 1.0: 0.3}[candidate], seed)


@pytest.mark.parametrize("workers", [1, 2])
def test_tune_in_workers_is_tune_per_arm_whatever_the_workers(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker processes import dev_run by its module's name, which pytest's importlib mode
    # does not make importable: import this file again from its folder (spawned workers get
    # this sys.path), as a recipe's module is.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    dev_run = importlib.import_module(Path(__file__).stem)._dev_run
    cands = {"a": [0.1, 0.3, 1.0], "b": [0.3, 1.0]}
    got = tune_in_workers(
        dev_run, cands, metric="acc", seeds=[7, 8], workers=workers, names={"b": "b lr"}
    )
    want = [
        tune(name, cands[arm], lambda c, s, arm=arm: _dev_run(arm, c, s), metric="acc",
             seeds=[7, 8])
        for arm, name in (("a", "a"), ("b", "b lr"))
    ]  # fmt: skip
    assert got == want
    assert [(t.name, t.value) for t in got] == [("a", 0.3), ("b lr", 1.0)]
    assert got[1].figures == [[_dev(1.0, 7), _dev(1.0, 8)], [_dev(0.3, 7), _dev(0.3, 8)]]


def test_tuned_study_refuses_a_tuning_seed_that_is_reported() -> None:
    import pydantic
    from splice_recipes.study import TunedStudyConfig

    assert TunedStudyConfig(name="s", seeds=3).tuning_seeds == [100]
    with pytest.raises(pydantic.ValidationError, match=r"tuning_seeds \[2\] are also reported"):
        TunedStudyConfig(name="s", seeds=3, tuning_seeds=[100, 2])
    with pytest.raises(pydantic.ValidationError, match="tuning_seeds"):
        TunedStudyConfig(name="s", tuning_seeds=[])


def test_tuning_extras_hold_the_records_and_the_table_or_nothing() -> None:
    from splice_recipes.study.tuning import tuning_extras

    t = tune("lr", [0.1, 0.3, 1.0], _dev, metric="acc", seeds=[7, 8])
    got = tuning_extras([t], scale=100, unit="%")
    assert got == {"tuning": [t.to_json()], "dev_choice": tuning_table([t], scale=100, unit="%")}
    assert "| lr | 0.3 | 69% | **yes** |" in got["dev_choice"]
    assert tuning_extras([]) == {}


def test_with_chosen_sets_each_choice_and_keeps_the_pinned_values() -> None:
    from splice_recipes.study import TunedStudyConfig
    from splice_recipes.study.tuning import with_chosen

    class Lrs(TunedStudyConfig):
        arm_lrs: dict[str, float]

    cfg = Lrs(name="s", arm_lrs={"pinned": 0.5, "b": 9.0})
    t = tune("b", [0.1, 0.3, 1.0], _dev, metric="acc", seeds=[7, 8])
    got = with_chosen(cfg, "arm_lrs", [t])
    assert got.arm_lrs == {"pinned": 0.5, "b": 0.3} and cfg.arm_lrs["b"] == 9.0
