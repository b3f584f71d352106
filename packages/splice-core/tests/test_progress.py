"""The progress bar's fields and the eval lines a run prints."""

from __future__ import annotations

from splice.training.progress import eval_lines, progress_fields


def test_online_runs_show_reward_kl_and_length_not_the_surrogate_loss() -> None:
    records = [
        {"loss": 0.0, "reward": 0.5, "kl": 0.01, "completion_length": 20.0},
        {"loss": 0.0, "reward": 0.7, "kl": 0.03, "completion_length": 24.0},
    ]
    fields = progress_fields(records, 123.4)
    assert fields == {"reward": "0.6", "kl": "0.02", "len": "22", "tok_s": "123"}


def test_beta_zero_runs_have_no_kl_field_and_supervised_runs_show_the_loss() -> None:
    fields = progress_fields([{"loss": 0.0, "reward": 1.0, "completion_length": 5.0}], 1.0)
    assert list(fields) == ["reward", "len", "tok_s"]
    assert progress_fields([{"loss": 2.0}, {"loss": 1.0}], 10.0) == {
        "loss": "1.5000",
        "tok_s": "10",
    }


def test_eval_lines_give_each_skill_its_own_line() -> None:
    result = {
        "exact_match": 0.5,
        "reward/accuracy": 0.625,
        "add/exact_match": 0.75,
        "add/reward/accuracy": 0.8,
        "sub/exact_match": 0.25,
        "predictions": ["not", "a", "float"],
    }
    assert eval_lines(400, result) == [
        "step 400 [held-out]: exact_match=0.5, reward/accuracy=0.625",
        "step 400 [add]: exact_match=0.75, reward/accuracy=0.8",
        "step 400 [sub]: exact_match=0.25",
    ]
