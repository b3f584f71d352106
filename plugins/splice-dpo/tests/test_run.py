"""DPO through ``run_experiment`` (what ``splice run`` does): preference JSONL task, the task's
collator, precomputed reference log-probs saved beside the run and reused on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import splice_dpo.precompute as pre
from safetensors.torch import load_file
from splice.training.experiment import run_experiment
from splice_dpo.data import write_preference_jsonl

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


def _config(tmp_path: Path, train: Path, *, steps: int, **objective: Any) -> dict[str, Any]:
    return {
        "name": "dpo-run",
        "seed": 0,
        "model": {
            "type": "decoder",
            "vocab_size": 52,
            "d_model": 32,
            "n_layers": 1,
            "max_seq_len": 32,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        },
        "data": {
            "task": {"type": "preference_jsonl", "train": str(train), "held_out_fraction": 0.25},
            "max_len": 32,
        },
        "objective": {"type": "dpo", **objective},
        "train": {
            "steps": steps,
            "batch_size": 4,
            "log_every": 1,
            "checkpoint_every": 2,
            "progress": False,
            "num_threads": 1,
            "precision": "float32",  # a resumed run must match the uninterrupted one exactly
            "optimizer": {"lr": 3e-3},
        },
        "eval": {"loss_batches": 1, "exact_match_examples": 4, "batch_size": 4},
        "output_dir": str(tmp_path / "run"),
    }


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_dpo_run_with_precomputed_reference_and_resume(
    tmp_path: Path, make_pairs, monkeypatch
) -> None:
    train = tmp_path / "pairs.jsonl"
    write_preference_jsonl(train, make_pairs(24))
    calls: list[int] = []
    real = pre.precompute_reference_logps

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(pre, "precompute_reference_logps", counting)
    cfg = _config(
        tmp_path, train, steps=4, precompute_reference=True, loss={"type": "sigmoid", "beta": 0.5}
    )
    report = run_experiment(cfg)
    run = Path(report["run_dir"])
    saved = load_file(str(run / pre.FILENAME))
    assert sorted(calls) == sorted([saved["train"].shape[0], saved["held_out"].shape[0]])
    assert saved["train"].shape[0] + saved["held_out"].shape[0] == 24
    assert saved["train"].shape[1] == 2 and (saved["train"] < 0).all()
    rows = [r for r in _metrics(run) if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margin",
        "rewards/accuracy",
        "logps/chosen",
        "logps/rejected",
    ):
        assert key in rows[0]
    assert rows[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-5)  # step 1: policy == reference
    assert "eval_loss" in report["eval"] and "exact_match" in report["eval"]

    # Resume to 6 steps: the saved values are reused, not recomputed.
    calls.clear()
    cfg["train"]["steps"] = 6
    report = run_experiment(cfg, resume=True)
    assert calls == [] and report["resumed"] and report["steps"] == 6

    # Other data: the fingerprint differs, so the values are recomputed.
    write_preference_jsonl(train, make_pairs(24, seed=1))
    run_experiment({**cfg, "output_dir": str(run)}, resume=True)
    assert calls


def test_reference_free_and_live_reference_runs(tmp_path: Path, make_pairs) -> None:
    train = tmp_path / "pairs.jsonl"
    write_preference_jsonl(train, make_pairs(16))
    for loss in ("simpo", "ipo"):
        cfg = _config(tmp_path, train, steps=3, loss={"type": loss})
        cfg["output_dir"] = str(tmp_path / loss)
        report = run_experiment(cfg)
        assert report["steps"] == 3
        assert not (Path(report["run_dir"]) / pre.FILENAME).exists()
