"""The modules the Trainer's loop delegates to, each on its own: when it evaluates
(``EvalSchedule``), what it logs (``RunLog``), the thread count it pins (``torch_threads``)."""

from __future__ import annotations

import json

import pytest
import torch
from splice.training.eval_schedule import EvalSchedule, evaluation_mode
from splice.training.run_log import RunLog
from splice.training.threads import torch_threads
from torch import nn


def test_eval_schedule_is_due_every_n_steps_and_only_at_the_end_without_n():
    assert [s for s in range(1, 10) if EvalSchedule(None, 3).due(s)] == [3, 6, 9]
    assert not any(EvalSchedule(None, every).due(4) for every in (None, 0))


def test_an_evaluation_runs_without_grad_in_eval_mode_and_restores_the_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    seen = []

    def evaluator(m):
        seen.append((m.training, torch.is_grad_enabled()))
        return {"score": 1.5}

    evals = EvalSchedule(evaluator, 2)
    assert evals.run(model, step=4) == {"kind": "eval", "step": 4, "score": 1.5}
    assert seen == [(False, False)] and model.training
    assert evals.final(4) == evals.history[-1] and evals.final(5) is None
    assert EvalSchedule(None, 2).run(model, step=4) is None

    def broken(m):
        raise RuntimeError("evaluator failed")

    with pytest.raises(RuntimeError, match="evaluator failed"):
        EvalSchedule(broken, 1).run(model, step=1)
    assert model.training  # restored even when the evaluator raises
    with evaluation_mode(model):
        assert not model.training and not torch.is_grad_enabled()


def test_a_finished_run_takes_back_only_an_eval_logged_at_its_last_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"kind": "train", "step": 8}, {"kind": "eval", "step": 8, "acc": 0.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    evals = EvalSchedule(None, None)
    evals.take_back_logged(path, 9)  # logged at 8, the run ended at 9: evaluate again
    assert evals.final(9) is None and evals.history == []
    evals.take_back_logged(path, 8)
    assert evals.final(8) == lines[1]


def test_run_log_writes_on_the_main_process_only_and_a_fresh_run_starts_a_new_file(tmp_path):
    RunLog(tmp_path / "other", is_main=False, title="t").train([{"kind": "train", "step": 1}])
    assert not (tmp_path / "other" / "metrics.jsonl").exists()
    log = RunLog(tmp_path, is_main=True, title="t")
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 7}\n')
    with log.open(steps=3, step=0, fresh=True, show=False):
        log.train([{"kind": "train", "step": 1, "loss": 2.0, "tokens": 4}], tokens_per_s=10.0)
        log.eval({"kind": "eval", "step": 1, "acc": 1.0})
    assert log.progress is None
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 1]
    log.truncate_after(0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_torch_threads_pins_the_count_inside_and_restores_it_after_an_error():
    before = torch.get_num_threads()
    pinned = 2 if before == 1 else 1  # differs from the count before, whatever it is
    with pytest.raises(ValueError), torch_threads(pinned):
        assert torch.get_num_threads() == pinned
        raise ValueError
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
