"""Exact resume of a GRPO run: killed with SIGKILL mid-training and resumed, it ends bitwise
equal to an uninterrupted run -- policy weights, optimizer state, the reference copy
(objective.safetensors), and every logged step (so the sampler RNG and prompt position were
restored too: a different rollout would change the losses and rewards)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# A recipe file: a slowed-down reward (so the kill lands mid-run), registered through the
# plugin registry, and a GRPO run with beta > 0 (a frozen reference copy), mu = 2 inner
# iterations over 2 minibatches (stored old log-probs), sampling at temperature 1.
RECIPE = textwrap.dedent(
    '''
    """GRPO resume test run."""
    import time
    from typing import Any, Literal

    from splice.config import ComponentConfig
    from splice.hookspecs import hookimpl
    from splice.registry import get_registry
    from splice.training.configs import ExperimentConfig


    class SlowLengthConfig(ComponentConfig):
        type: Literal["grpo_resume_slow_length"] = "grpo_resume_slow_length"


    def slow_length(prompts, completions, references):
        time.sleep(0.15)
        return [-abs(len(c) - 4) for c in completions]


    class Plugin:
        @hookimpl
        def register_rewards(register: Any) -> None:
            register(SlowLengthConfig, lambda cfg, ctx: slow_length)


    if "grpo_resume_slow_length" not in get_registry().tags("reward"):
        get_registry().register_plugin(Plugin, name="grpo-resume-test")


    def config():
        return ExperimentConfig(
            name="grpo-resume",
            seed=5,
            model={"type": "decoder", "vocab_size": 52, "d_model": 32, "n_layers": 2,
                   "max_seq_len": 24,
                   "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}}},
            data={"task": {"type": "arithmetic", "op": "+", "max_digits": 2}, "max_len": 16},
            objective={"type": "grpo", "group_size": 4, "beta": 0.1, "inner_iterations": 2,
                       "minibatches": 2,
                       "rewards": [{"reward": {"type": "grpo_resume_slow_length"}}]},
            rollout={"prompts_per_step": 4, "max_new_tokens": 8, "temperature": 1.0},
            train={"steps": 12, "log_every": 2, "checkpoint_every": 4, "keep_last": 2,
                   "progress": False, "num_threads": 1,
                   "optimizer": {"lr": 3e-3, "weight_decay": 0.1},
                   "schedule": {"kind": "cosine", "warmup_steps": 2}},
            eval={"loss_batches": 0, "exact_match_examples": 4, "max_new_tokens": 4},
        )
    '''
)


def splice_cmd(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from splice.cli import main; sys.exit(main())",
        *args,
    ]


def final(run: Path) -> dict[str, dict]:
    ckpt = run / "checkpoints" / "step-000012"
    return {
        f: load_file(ckpt / f)
        for f in ("model.safetensors", "optimizer.safetensors", "objective.safetensors")
    }


def train_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    keep = ("step", "loss", "reward", "kl", "ratio_mean", "completion_length")
    return [{k: r.get(k) for k in keep} for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    recipe = tmp_path / "grpo_resume_recipe.py"
    recipe.write_text(RECIPE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = subprocess.Popen(
        splice_cmd("run", str(recipe), "--output-dir", str(tmp_path / "a")),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    killed = subprocess.Popen(
        splice_cmd("run", str(recipe), "--output-dir", str(tmp_path / "b")),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "b" / "checkpoints" / "step-000004"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # into step 5 or 6: a half-done step must be redone, not skipped
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "b" / "checkpoints" / "step-000012").exists()

    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out.decode()
    resumed = subprocess.run(
        splice_cmd("run", str(recipe), "--output-dir", str(tmp_path / "b"), "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr

    a, b = final(tmp_path / "a"), final(tmp_path / "b")
    for f in a:
        assert a[f].keys() == b[f].keys(), f
        for name in a[f]:
            assert torch.equal(a[f][name], b[f][name]), (f, name)
    assert any(k.startswith("state.reference.") for k in a["objective.safetensors"])
    # the policy moved away from the reference: the reference really is the starting copy
    ref = a["objective.safetensors"]["state.reference.embed.weight"]
    assert not torch.equal(ref, a["model.safetensors"]["embed.weight"])

    rec_a, rec_b = train_records(tmp_path / "a"), train_records(tmp_path / "b")
    assert rec_a == rec_b
    assert [r["step"] for r in rec_a] == list(range(1, 13))
    state = json.loads((tmp_path / "b/checkpoints/step-000012/trainer_state.json").read_text())
    assert state["micro_batches"] == 12 and state["examples"] == 48
