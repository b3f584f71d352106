"""Exact resume of a PPO run (the same test as splice-grpo's): killed with SIGKILL mid-training
and resumed, it ends bitwise equal to an uninterrupted run -- policy weights, optimizer state
(the value head's included), the value head (objective.safetensors), the adaptive KL
coefficient, and every logged step (so the sampler RNG and prompt position were restored too:
a different rollout would change the losses and rewards)."""

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
# plugin registry, and a PPO run with a value head, an adaptive KL coefficient (a frozen
# reference copy; beta changes every step), 2 epochs over 2 minibatches, temperature 1.
RECIPE = textwrap.dedent(
    '''
    """PPO resume test run."""
    import time
    from typing import Any, Literal

    from splice.config import ComponentConfig
    from splice.hookspecs import hookimpl
    from splice.registry import get_registry
    from splice.training.configs import ExperimentConfig


    class SlowLengthConfig(ComponentConfig):
        type: Literal["ppo_resume_slow_length"] = "ppo_resume_slow_length"


    def slow_length(prompts, completions, references):
        time.sleep(0.15)
        return [-abs(len(c) - 4) for c in completions]


    class Plugin:
        @hookimpl
        def register_rewards(register: Any) -> None:
            register(SlowLengthConfig, lambda cfg, ctx: slow_length)


    if "ppo_resume_slow_length" not in get_registry().tags("reward"):
        get_registry().register_plugin(Plugin, name="ppo-resume-test")


    def config():
        return ExperimentConfig(
            name="ppo-resume",
            seed=5,
            model={"type": "decoder", "vocab_size": 52, "d_model": 32, "n_layers": 2,
                   "max_seq_len": 24,
                   "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}}},
            data={"task": {"type": "arithmetic", "op": "+", "max_digits": 2}, "max_len": 16},
            objective={"type": "ppo", "samples_per_prompt": 2, "kl_coef": 0.1,
                       "kl_target": 0.5, "kl_horizon": 20, "epochs": 2, "minibatch_size": 4,
                       "value_lr_scale": 5.0,
                       "rewards": [{"reward": {"type": "ppo_resume_slow_length"}}]},
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
    keep = ("step", "loss", "reward", "kl", "kl_coef", "value_loss", "completion_length")
    return [{k: r.get(k) for k in keep} for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    recipe = tmp_path / "ppo_resume_recipe.py"
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
    head = a["objective.safetensors"]["module.value_head.proj.weight"]
    assert head.abs().sum() > 0  # the zero-initialised value head was trained and saved
    state_a = json.loads((tmp_path / "a/checkpoints/step-000012/trainer_state.json").read_text())
    state_b = json.loads((tmp_path / "b/checkpoints/step-000012/trainer_state.json").read_text())
    assert state_a["objective"] == state_b["objective"]
    assert state_a["objective"]["kl_coef"] != 0.1 and state_a["objective"]["rollouts"] == 12

    rec_a, rec_b = train_records(tmp_path / "a"), train_records(tmp_path / "b")
    assert rec_a == rec_b
    assert [r["step"] for r in rec_a] == list(range(1, 13))
    state = json.loads((tmp_path / "b/checkpoints/step-000012/trainer_state.json").read_text())
    assert state["micro_batches"] == 12 and state["examples"] == 48
