"""Exact-resume testing: kill a ``splice run`` with SIGKILL mid-training, resume it, and check
that it ends bit for bit where an uninterrupted run of the same recipe ends.

The recipe is a file ``splice run`` accepts (a Python recipe with ``config()``, or a JSON/YAML
config), with ``train.checkpoint_every`` set so a checkpoint is written before the kill, and
slow enough (e.g. a reward or objective that sleeps a little) that the kill lands mid-run.
A plugin author tests their own objective's resume with it::

    from splice.testing.resume import assert_same_checkpoint, kill_and_resume, train_records

    def test_my_objective_resumes_exactly(tmp_path):
        recipe = tmp_path / "recipe.py"
        recipe.write_text(RECIPE)  # 12 steps, checkpoint_every=4
        runs = kill_and_resume(recipe, tmp_path, kill_after=4, wait_s=0.5)
        tensors = assert_same_checkpoint(runs.straight, runs.resumed)
        assert train_records(runs.straight) == train_records(runs.resumed)

An RL recipe gets its slowness from ``register_slow_length_reward()`` (call it at the top of
the recipe file; use the reward as ``{"type": "testing_slow_length"}``).

``assert_same_checkpoint`` compares every tensor file of the final checkpoints (weights or
adapter, optimizer state, RNG states, the objective's own tensors) and ``trainer_state.json``
(data position, optimizer groups, Python/NumPy RNG, the objective's JSON state), so anything
a resume forgets to restore shows up as the first tensor or key that differs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

#: ``trainer_state.json`` keys that differ between two runs by design: wall time, and the
#: run id each fresh run draws (a resumed run keeps its own).
VOLATILE_STATE = ("train_time_s", "run_id")


@dataclass(frozen=True)
class ResumeRuns:
    """The run folders of one ``kill_and_resume``.

    Attributes:
        straight: the uninterrupted run.
        resumed: the run that was killed and then resumed to the end.
        killed_after: the step of the newest checkpoint the killed run had left.
        final_step: the step of the straight run's final checkpoint.
    """

    straight: Path
    resumed: Path
    killed_after: int
    final_step: int


def slow_length_reward(config: Any) -> Any:
    """The reward function of ``SlowLengthRewardConfig``: ``-|len(completion) - target_len|``,
    after sleeping ``delay_s`` (so a kill lands mid-run)."""

    def reward(prompts: Sequence[str], completions: Sequence[str], references: Any) -> list[float]:
        time.sleep(config.delay_s)
        return [-float(abs(len(c) - config.target_len)) for c in completions]

    return reward


def register_slow_length_reward() -> None:
    """Register the ``testing_slow_length`` reward with the plugin registry (idempotent)."""
    from splice.hookspecs import hookimpl
    from splice.registry import get_registry
    from splice.testing.configs import SlowLengthRewardConfig

    if "testing_slow_length" in get_registry().tags("reward"):
        return

    class SlowRewardPlugin:
        @hookimpl
        def register_rewards(register: Any) -> None:
            register(SlowLengthRewardConfig, lambda cfg, ctx: slow_length_reward(cfg))

    get_registry().register_plugin(SlowRewardPlugin, name="splice-testing-slow-reward")


def splice_command(*args: str) -> list[str]:
    """The command line of ``splice ARGS`` in this interpreter (no console script needed)."""
    code = "import sys; from splice.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, *args]


def checkpoint_steps(run: Path) -> list[int]:
    """The steps of the complete checkpoints in run folder ``run``, ascending."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    names = (p.name for p in root.iterdir())
    return sorted(int(n[5:]) for n in names if n.startswith("step-") and n[5:].isdigit())


def kill_and_resume(
    recipe: str | Path,
    workdir: str | Path,
    *,
    kill_after: int,
    wait_s: float = 0.0,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
) -> ResumeRuns:
    """Run ``recipe`` twice side by side; kill the second with SIGKILL and resume it.

    The uninterrupted run goes to ``workdir/straight``, the killed one to
    ``workdir/resumed``. The second is killed ``wait_s`` seconds after its checkpoint of step
    ``kill_after`` appears (a positive ``wait_s`` lands the kill inside a later step, which
    must then be redone, not skipped), then ``splice run --resume`` finishes it.

    Args:
        recipe: the recipe file.
        workdir: the folder that receives both run folders.
        kill_after: a step the recipe checkpoints (a multiple of ``checkpoint_every``),
            before its last one.
        wait_s: seconds between that checkpoint appearing and the kill.
        args: extra ``splice run`` arguments (e.g. ``["--set", "train.steps=8"]``).
        env: the processes' environment (default: this one's with ``OMP_NUM_THREADS=1``).
        timeout_s: the most any one process may take.

    Raises:
        AssertionError: a run failed (with its output), the killed run finished or failed
            before it could be killed, or the kill came after the final checkpoint.
    """
    recipe, workdir = Path(recipe), Path(workdir)
    straight_dir, resumed_dir = workdir / "straight", workdir / "resumed"
    env = dict(env) if env is not None else {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(out: Path, *more: str) -> list[str]:
        return splice_command("run", str(recipe), "--output-dir", str(out), *args, *more)

    workdir.mkdir(parents=True, exist_ok=True)
    killed_log = workdir / "killed.log"
    straight = subprocess.Popen(
        command(straight_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        with killed_log.open("wb") as log:
            killed = subprocess.Popen(
                command(resumed_dir), env=env, stdout=log, stderr=subprocess.STDOUT
            )
            ckpt = resumed_dir / "checkpoints" / f"step-{kill_after:06d}"
            deadline = time.monotonic() + timeout_s
            while not ckpt.exists() and killed.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if ckpt.exists() and wait_s > 0:
                time.sleep(wait_s)
            killed.send_signal(signal.SIGKILL)
            code = killed.wait()
        output = killed_log.read_text(errors="replace")[-4000:]
        assert code == -signal.SIGKILL, (
            f"the run to kill ended by itself (exit {code}) before it could be killed:\n{output}"
        )
        assert ckpt.exists(), f"killed before its step-{kill_after} checkpoint:\n{output}"
        out, _ = straight.communicate(timeout=timeout_s)
    finally:
        if straight.poll() is None:
            straight.kill()
            straight.wait()
    assert straight.returncode == 0, out.decode(errors="replace")[-6000:]
    killed_after = checkpoint_steps(resumed_dir)[-1]
    final_step = checkpoint_steps(straight_dir)[-1]
    assert killed_after < final_step, (
        f"the kill came after the final checkpoint (step {final_step}): nothing to resume"
    )
    resumed = subprocess.run(
        command(resumed_dir, "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-6000:]
    return ResumeRuns(straight_dir, resumed_dir, killed_after, final_step)


def checkpoint_tensors(run: str | Path, step: int | None = None) -> dict[str, dict[str, Any]]:
    """``{file name: {tensor name: tensor}}`` of every ``*.safetensors`` file in checkpoint
    ``step`` of run folder ``run`` (default: its newest)."""
    folder = _checkpoint(Path(run), step)
    return {p.name: load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))}


def trainer_state(run: str | Path, step: int | None = None) -> dict[str, Any]:
    """``trainer_state.json`` of checkpoint ``step`` of ``run`` (default: its newest)."""
    state: dict[str, Any] = json.loads(
        (_checkpoint(Path(run), step) / "trainer_state.json").read_text()
    )
    return state


def assert_same_checkpoint(
    a: str | Path,
    b: str | Path,
    step: int | None = None,
    *,
    ignore_state: Iterable[str] = VOLATILE_STATE,
) -> dict[str, dict[str, Any]]:
    """Assert checkpoint ``step`` (default: the newest) of runs ``a`` and ``b`` is the same,
    bit for bit: the same tensor files, names, dtypes and values, and the same
    ``trainer_state.json`` apart from ``ignore_state`` keys. Returns ``a``'s tensors
    (``checkpoint_tensors``) for further checks.

    Raises:
        AssertionError: naming the first file and tensor (or state key) that differs.
    """
    a, b = Path(a), Path(b)
    if step is None:
        step = checkpoint_steps(a)[-1]
    ta, tb = checkpoint_tensors(a, step), checkpoint_tensors(b, step)
    assert ta.keys() == tb.keys(), f"step {step}: tensor files {sorted(ta)} vs {sorted(tb)}"
    for file, tensors in ta.items():
        other = tb[file]
        assert tensors.keys() == other.keys(), (
            f"{file}: different tensors {sorted(tensors.keys() ^ other.keys())[:8]}"
        )
        for name, x in tensors.items():
            y = other[name]
            assert x.dtype == y.dtype and x.shape == y.shape, (
                f"{file}: {name} is {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}"
            )
            if not torch.equal(x, y):
                diff = (x.double() - y.double()).abs().max() if x.is_floating_point() else "-"
                raise AssertionError(f"{file}: {name} differs (max |diff| {diff})")
    skip = set(ignore_state)
    sa, sb = trainer_state(a, step), trainer_state(b, step)
    keys = (sa.keys() | sb.keys()) - skip
    differ = sorted(k for k in keys if sa.get(k) != sb.get(k))
    assert not differ, f"trainer_state.json differs in {differ}: " + "; ".join(
        f"{k}: {sa.get(k)!r} vs {sb.get(k)!r}" for k in differ[:3]
    )
    return ta


def train_records(run: str | Path, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The ``train`` records of ``run``'s ``metrics.jsonl``: with ``keys``, only those; else
    every key but the timings (names ending in ``_s``: seconds differ between runs)."""
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r.get("kind") == "train"]
    if keys is not None:
        wanted = list(keys)
        return [{k: r.get(k) for k in wanted} for r in records]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]


def _checkpoint(run: Path, step: int | None) -> Path:
    steps = checkpoint_steps(run)
    if not steps:
        raise FileNotFoundError(f"{run}: no checkpoints/step-* folder")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"{run}: no checkpoint of step {step} (there are {steps})")
    return run / "checkpoints" / f"step-{(steps[-1] if step is None else step):06d}"


__all__ = [
    "VOLATILE_STATE",
    "ResumeRuns",
    "assert_same_checkpoint",
    "checkpoint_steps",
    "checkpoint_tensors",
    "kill_and_resume",
    "register_slow_length_reward",
    "slow_length_reward",
    "splice_command",
    "train_records",
    "trainer_state",
]
