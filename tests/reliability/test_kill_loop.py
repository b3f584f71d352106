"""Kill the training process at random points, resume each time: the run ends bitwise equal
to an uninterrupted one. While it runs, a second run into its folder is refused."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import textwrap
import time

import torch
from safetensors.torch import load_file
from splice.cli import main

# A recipe file as a user would write one: a slowed-down SFT objective (registered through
# the plugin registry) so kills land mid-run, dropout so the RNG state must be restored, a
# checkpoint every 2 steps with keep_last=1 so kills also land in writes and pruning.
RECIPE = textwrap.dedent(
    '''
    """Kill-loop run."""
    import time
    from typing import Any, Literal

    from splice.config import ComponentConfig
    from splice.hookspecs import hookimpl
    from splice.registry import get_registry
    from splice.training.configs import ExperimentConfig


    class SlowSFTConfig(ComponentConfig):
        type: Literal["kill_loop_slow_sft"] = "kill_loop_slow_sft"


    class SlowSFT:
        def __init__(self):
            from splice.objectives.sft import SFTObjective

            self.inner = SFTObjective()

        def loss(self, model, batch):
            time.sleep(0.02)
            return self.inner.loss(model, batch)


    class Plugin:
        @hookimpl
        def register_objectives(register: Any) -> None:
            register(SlowSFTConfig, lambda cfg, ctx: SlowSFT())


    if "kill_loop_slow_sft" not in get_registry().tags("objective"):
        get_registry().register_plugin(Plugin, name="kill-loop-test")


    def config():
        return ExperimentConfig(
            name="kill-loop",
            seed=5,
            model={"type": "decoder", "vocab_size": 52, "d_model": 16, "n_layers": 1,
                   "max_seq_len": 12, "embedding_dropout": 0.1,
                   "block": {"type": "pre_norm", "dropout": 0.1,
                             "token_mixer": {"type": "mha", "n_heads": 2}}},
            data={"task": {"type": "arithmetic", "max_digits": 1}, "max_len": 12},
            objective={"type": "kill_loop_slow_sft"},
            train={"steps": 30, "batch_size": 4, "log_every": 1, "checkpoint_every": 2,
                   "keep_last": 1, "progress": False, "num_threads": 1,
                   "optimizer": {"lr": 3e-3, "weight_decay": 0.1},
                   "schedule": {"kind": "cosine", "warmup_steps": 4}},
            eval={"every": 10, "loss_batches": 1, "exact_match_examples": 2,
                  "max_new_tokens": 3},
        )
    '''
)
KILLS = 2  # kept small: each kill costs an interpreter start


def logged_steps(run):
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line torn by the kill
            continue
        if rec.get("kind") == "train":
            steps.append(rec["step"])
    return steps


def holder(run):
    lock = run / "splice.lock"
    return lock.read_text().strip() if lock.is_file() else ""


def wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_random_kills_then_resume_end_bitwise_equal(tmp_path, splice_process):
    recipe = tmp_path / "kill_recipe.py"
    recipe.write_text(RECIPE)
    straight_dir, run = tmp_path / "straight", tmp_path / "run"
    rng = random.Random(20261130)
    # Kill once the log reaches these steps (spaced, so a resumed run's stale log lines,
    # which it truncates on resume, never trigger the next kill early).
    targets = [rng.randint(2, 11), rng.randint(15, 27)]
    killed_at = []
    for i, target in enumerate(targets):
        proc = splice_process("run", str(recipe), "--output-dir", str(run), "--resume", "auto",
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        assert wait_for(lambda p=proc: holder(run) == str(p.pid), proc)  # it claimed the folder
        if i == 0:  # a second run into the same folder is refused, naming the live one
            proc.send_signal(signal.SIGSTOP)  # hold the first run still while the rival tries
            rival = splice_process("run", str(recipe), "--output-dir", str(run), "--resume",
                                   "auto", stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            _, err = rival.communicate(timeout=120)
            proc.send_signal(signal.SIGCONT)
            assert rival.returncode == 1, err
            assert f"is in use by another run (PID {proc.pid})" in err
        wait_for(lambda t=target: max(logged_steps(run), default=0) >= t, proc)
        time.sleep(rng.uniform(0.0, 0.03))  # anywhere in the step: forward, write, prune
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        assert code == -signal.SIGKILL, f"the run ended ({code}) before kill {i + 1}"
        killed_at.append(max(logged_steps(run), default=0))
    assert len(killed_at) == KILLS and max(killed_at) < 30

    final = splice_process("run", str(recipe), "--output-dir", str(run), "--resume", "auto",
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    # The uninterrupted run, in this process (one interpreter start less).
    assert main(["run", str(recipe), "--output-dir", str(straight_dir)]) == 0

    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(straight_dir / "checkpoints" / "step-000030" / name)
        b = load_file(run / "checkpoints" / "step-000030" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert logged_steps(run) == list(range(1, 31))  # every step logged exactly once

    def losses(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines) if r["kind"] == "train"]

    assert losses(run) == losses(straight_dir)
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []
