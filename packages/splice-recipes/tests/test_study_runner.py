"""A tiny study end to end: arm x seed runs with real training, the files it writes, and
``study.json`` read back; and the README table generated from it."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from splice_recipes.study import (
    Claim,
    StudyConfig,
    StudyResult,
    mean_of_last_evals,
    run_study,
    summary,
)
from splice_recipes.study.readme import BEGIN, END, main, splice_table, table


class TinyStudy(StudyConfig):
    name: str = "tiny"
    steps: int = 6


def _train(arm: str, seed: int, folder: Path, config: TinyStudy) -> dict[str, float]:
    """Addition on a 1-layer d=16 decoder: ``lr0`` barely moves (lr 1e-9), ``adam`` learns."""
    from splice.training.experiment import run_experiment
    from splice_recipes.common import addition_task, short_run

    rep = run_experiment(
        {
            "name": f"tiny-{arm}",
            "seed": seed,
            "output_dir": str(folder),
            "model": {
                "type": "decoder",
                "vocab_size": 52,
                "d_model": 16,
                "n_layers": 1,
                "max_seq_len": 16,
                "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
            },
            "data": {"task": addition_task(), "max_len": 16},
            "train": short_run(
                steps=config.steps,
                batch_size=16,
                log_every=2,
                progress=False,
                lr=1e-9 if arm == "lr0" else 1e-2,
                precision=config.precision,
            ),
            "eval": {"every": 2, "loss_batches": 1, "exact_match_examples": 4, "max_new_tokens": 3},
        }
    )
    return {
        "eval_loss": mean_of_last_evals(folder / "metrics.jsonl", "eval_loss", config.last_evals),
        "final_train_loss": float(rep["final_train_loss"]),
    }


def test_tiny_study_end_to_end(tmp_path):
    cfg = TinyStudy(seeds=2, last_evals=2, progress=False, output_dir=str(tmp_path / "s"))
    claims = [
        Claim(
            "adam-lowers-loss",
            "adam",
            "lr0",
            "eval_loss",
            "lower",
            text="training lowers held-out loss",
        ),
        Claim("adam-raises-loss", "adam", "lr0", "eval_loss", "higher"),
    ]
    result = run_study(
        cfg,
        arms=["lr0", "adam"],
        run_one=lambda arm, seed, folder: _train(arm, seed, folder, cfg),
        claims=claims,
        extras=lambda r: {"note": f"{len(r.seeds)} seeds"},
    )
    out = tmp_path / "s"
    for arm in ("lr0", "adam"):
        for seed in (0, 1):
            run = out / arm / f"seed-{seed}"
            assert (run / "metrics.jsonl").is_file()
            saved = json.loads((run / "result.json").read_text())
            assert saved == result.figures[arm][seed]
            evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            losses = [r["eval_loss"] for r in evals if r["kind"] == "eval"]
            assert saved["eval_loss"] == pytest.approx(sum(losses[-2:]) / 2)
    # lr 1e-9 leaves the model at its (seeded) start: the loss does not move between evals
    lr0 = [json.loads(x) for x in (out / "lr0/seed-0/metrics.jsonl").read_text().splitlines()]
    first, *rest = [r["eval_loss"] for r in lr0 if r["kind"] == "eval"]
    assert rest == pytest.approx([first] * len(rest), rel=1e-4)
    assert {p.name for p in out.iterdir()} >= {
        "study.json",
        "report.md",
        "config.json",
        "adam-lowers-loss.png",
        "adam-raises-loss.png",
    }
    lowers, raises = result.claims
    assert lowers.differences == pytest.approx(
        [
            result.figures["adam"][s]["eval_loss"] - result.figures["lr0"][s]["eval_loss"]
            for s in (0, 1)
        ]
    )
    assert all(d < 0 for d in lowers.differences)
    assert raises.verdict == "not shown"  # the data refute it: printed as such
    back = StudyResult.load(out)
    assert back.to_json() == json.loads((out / "study.json").read_text())
    assert back.figures == result.figures and back.extras == {"note": "2 seeds"}
    assert back.claims[0].interval == pytest.approx(lowers.interval) or back.claims[0] == lowers
    env = back.environment
    assert env["precision"] == "float32" and env["machine_class"] and env["torch"]
    assert back.config["seeds"] == 2 and back.wall_time_s > 0
    # CPU seconds of the study's process next to its wall time, load at both ends
    assert back.cpu_time_s > 0 and back.cpu_time_s == result.cpu_time_s
    assert isinstance(env["load_average_1min_end"], float)
    report = (out / "report.md").read_text()
    assert "Student t" in report and "**not shown**" in report and "CPU " in report
    assert "training lowers held-out loss" in report
    s = summary(result, out)
    assert s["claim adam-raises-loss"].startswith("not shown")

    # the README table from published results
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\nafter\n")
    results = tmp_path / "results"
    assert main([str(results), str(readme), "--publish", str(out)]) == 0
    assert StudyResult.load(results / "tiny").config["output_dir"] is None
    assert (results / "tiny" / "adam-lowers-loss.png").is_file()
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("after\n")
    row = next(line for line in text.splitlines() if "training lowers held-out loss" in line)
    assert "`tiny`" in row and "| 2 |" in row and "float32" in row and env["machine_class"] in row
    assert f"CPU {back.cpu_time_s:.0f} s |" in row and " -> " in row
    assert main([str(results), str(readme), "--check"]) == 0
    readme.write_text(text.replace("float32", "bf16"))
    assert main([str(results), str(readme), "--check"]) == 1


def test_seeds_override_and_bad_claims(tmp_path):
    from splice.overrides import apply_overrides

    cfg = apply_overrides(TinyStudy(), ["seeds=5", "first_seed=10"])
    assert cfg.seed_list() == [10, 11, 12, 13, 14]
    with pytest.raises(ValueError, match="names arm 'nope'"):
        run_study(cfg, arms=["a"], run_one=lambda *a: {}, claims=[Claim("c", "nope", "a", "m")])
    with pytest.raises(ValueError, match="markers"):
        splice_table("no markers here", table([]))


def test_run_and_report_prints_tables_notes_then_claims(tmp_path, capsys):
    from splice_recipes.study import run_and_report

    cfg = TinyStudy(seeds=3, progress=False, output_dir=str(tmp_path / "r"))
    gain = {0: 0.10, 1: 0.12, 2: 0.08}  # hand-made figures: b beats a by 8-12 points

    def run_one(arm: str, seed: int, folder: Path) -> dict[str, float]:
        return {"acc": 0.5 + (gain[seed] if arm == "b" else 0.0)}

    out = run_and_report(
        cfg,
        arms=["a", "b"],
        run_one=run_one,
        claims=[Claim("b-wins", "b", "a", "acc", text="b beats a", scale=100, unit=" pt")],
        extras=lambda r: {"side_table": "| side |", "other": "| not shown |"},
        notes=lambda r: [f"note: {len(r.seeds)} seeds"],
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "| side |",
        "note: 3 seeds",
        "b beats a: +10 pt [+5.03, +15] over 3 seeds -> SHOWN",
    ]
    assert out["claim b-wins"] == "shown (+10 pt [+5.03, +15])"
    assert out["run_dir"] == str(tmp_path / "r") and out["cpu_time_s"] >= 0
    assert StudyResult.load(tmp_path / "r").extras["other"] == "| not shown |"


def test_seeds_in_workers_with_one_worker_is_the_plain_run_one(tmp_path):
    """``workers=1``: no process is started and every call reaches ``run_one`` itself."""
    from types import SimpleNamespace

    from splice_recipes.study import seeds_in_workers

    calls = []

    def run_one(arm, seed, folder):
        calls.append((arm, seed))
        return {"score": float(seed)}

    def never(config, seed):  # pragma: no cover - must not be called with one worker
        raise AssertionError("run_seed called with workers=1")

    config = SimpleNamespace(workers=1, seed_list=lambda: [0, 1])
    one = seeds_in_workers(never, config, run_one)
    assert [one(a, s, tmp_path) for a in ("x", "y") for s in (0, 1)] == [
        {"score": 0.0}, {"score": 1.0}, {"score": 0.0}, {"score": 1.0}
    ]  # fmt: skip
    assert calls == [("x", 0), ("x", 1), ("y", 0), ("y", 1)]


def test_map_in_workers_keeps_the_order_of_the_jobs_in_or_out_of_processes():
    """Two spawned workers give what one process gives, in the jobs' order."""
    import operator

    from splice_recipes.study import map_in_workers

    jobs = [(1, 2), (10, 20), (100, 200)]
    assert map_in_workers(operator.add, jobs, 1) == [3, 30, 300]
    assert map_in_workers(operator.add, jobs, 2) == [3, 30, 300]
    assert map_in_workers(operator.sub, [(5, 7)], 2) == [-2]  # one job: no process started


def test_a_job_a_worker_cannot_get_is_refused_by_name_before_any_process_starts() -> None:
    from splice_recipes.study import check_sendable, map_in_workers

    def nested(x: int) -> int:
        return x

    check_sendable(functools.partial(map_in_workers, abs))  # module-level: fine
    with pytest.raises(ValueError, match="nested cannot be sent to a worker"):
        check_sendable(functools.partial(nested, 1))
    with pytest.raises(ValueError, match="cannot be sent to a worker"):
        map_in_workers(lambda x: x, [(1,), (2,)], workers=2)


def test_arms_after_start_runs_each_arm_after_its_seeds_start_in_two_workers(tmp_path):
    """One job per arm in spawned workers gives the sequential figures, every arm reading
    its own seed's start; with one worker every job runs in this process."""
    from splice_recipes.study import arms_after_start
    from splice_recipes.study.testing import staged_arm

    def without_pid(out):
        return {s: {a: f["value"] for a, f in arms.items()} for s, arms in out.items()}

    arms, seeds = ["start", "a", "bb"], [0, 1, 2]
    one = arms_after_start(
        staged_arm, StudyConfig(name="t", output_dir=str(tmp_path / "1")), arms, seeds, 1
    )
    two = arms_after_start(
        staged_arm, StudyConfig(name="t", output_dir=str(tmp_path / "2")), arms, seeds, 2
    )
    assert (
        without_pid(two)
        == without_pid(one)
        == {
            0: {"start": 0.0, "a": 1.0, "bb": 2.0},
            1: {"start": 10.0, "a": 11.0, "bb": 12.0},
            2: {"start": 20.0, "a": 21.0, "bb": 22.0},
        }
    )
    assert [list(two[s]) for s in seeds] == [arms] * 3  # the arms' order, whatever finished first
    import os

    assert {f["pid"] for arms_ in one.values() for f in arms_.values()} == {float(os.getpid())}
    assert float(os.getpid()) not in {f["pid"] for arms_ in two.values() for f in arms_.values()}


def test_an_error_with_two_arguments_reaches_the_parent_from_a_worker() -> None:
    """A worker's ``CorruptCheckpointError`` arrives as itself, naming the folder (it used
    to break the pool: "a process ... was terminated abruptly")."""
    from splice.checkpoint.integrity import CorruptCheckpointError
    from splice_recipes.study import map_in_workers
    from splice_recipes.study.testing import damaged_checkpoint

    with pytest.raises(CorruptCheckpointError, match="corrupt checkpoint /x/y: manifest") as err:
        map_in_workers(damaged_checkpoint, [("/x/y",), ("/x/z",)], 2)
    assert str(err.value.path) in ("/x/y", "/x/z") and "damaged" in err.value.problem
