"""Distributed equivalence: 2 CPU processes under torchrun (gloo) train like 1 process.

One single-process run (in this process) is the reference. Two ``torchrun
--nproc_per_node=2`` launches (DDP, FSDP2) each run, through ``splice run``, the same recipe
from scratch and once more resumed from the reference's step-3 checkpoint; then this process
resumes each distributed run's step-3 checkpoint. Every final ``model.safetensors`` /
``optimizer.safetensors`` must match the reference's.

Tolerance: max |diff| <= 1e-5 on weights, 1e-6 on optimizer state (float32). The ranks sum
their gradients in a different order than one process does, so results agree to rounding,
not bitwise (measured: a few 1e-6 on weights after 6 AdamW steps at lr 1e-3).
Averaging the ranks' token means instead of weighting by tokens moves the weights by ~1e-2
(measured at lr 3e-3), so the tolerance does catch a wrong global mean.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)

WEIGHT_TOL, OPTIMIZER_TOL = 1e-5, 1e-6
STEPS, RESUME_AT = 6, 3

RECIPE = textwrap.dedent(
    '''
    """Distributed test run: tiny decoder, SFT on 2-digit addition, 2 micro-batches per step."""
    from splice.training.configs import ExperimentConfig


    def config():
        return ExperimentConfig(
            name="dist",
            seed=1,
            model={"type": "decoder", "vocab_size": 52, "d_model": 32, "n_layers": 2,
                   "max_seq_len": 16,
                   "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}}},
            data={"task": {"type": "arithmetic", "op": "+", "max_digits": 2}, "max_len": 16},
            train={"steps": 6, "batch_size": 8, "grad_accum": 2, "log_every": 2, "precision": "float32",
                   "checkpoint_every": 3, "keep_last": None, "progress": False,
                   "num_threads": 1, "optimizer": {"lr": 1e-3, "weight_decay": 0.1},
                   "schedule": {"kind": "cosine", "warmup_steps": 2}},
            eval={"every": 3, "loss_batches": 1, "exact_match_examples": 4},
        )
    '''
)

# Run under torchrun: each argv list in sys.argv[1] (JSON) is one `splice run`, in order,
# in the same process group.
DRIVER = textwrap.dedent(
    """
    import json, sys
    from splice.cli import main

    for argv in json.loads(sys.argv[1]):
        code = main(argv)
        if code:
            sys.exit(code)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def final(run: Path, step: int = STEPS) -> tuple[dict, dict]:
    ckpt = run / "checkpoints" / f"step-{step:06d}"
    return load_file(ckpt / "model.safetensors"), load_file(ckpt / "optimizer.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), f"different tensors: {sorted(a.keys() ^ b.keys())}"
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def seed_resume_dir(src: Path, dst: Path) -> Path:
    """A fresh run folder holding only ``src``'s step-3 checkpoint, for ``--resume``."""
    (dst / "checkpoints").mkdir(parents=True)
    name = f"step-{RESUME_AT:06d}"
    shutil.copytree(src / "checkpoints" / name, dst / "checkpoints" / name)
    return dst


def splice_run(recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(recipe), "--output-dir", str(out), *extra]


# The launches take ~1-2 min on a busy 2-core machine (three interpreters per torchrun).
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from splice.cli import main

    root = tmp_path_factory.mktemp("dist")
    recipe = root / "dist_recipe.py"
    recipe.write_text(RECIPE)
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    threads = torch.get_num_threads()
    try:
        assert main(splice_run(recipe, root / "single")) == 0
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    procs = {}
    for strategy in ("ddp", "fsdp2"):
        jobs = [
            splice_run(recipe, root / strategy, "--set", f"train.distributed={strategy}"),
            splice_run(
                recipe,
                seed_resume_dir(root / "single", root / f"single_to_{strategy}"),
                "--set",
                f"train.distributed={strategy}",
                "--resume",
            ),
        ]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", str(driver), json.dumps(jobs)]  # fmt: skip
        procs[strategy] = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    for strategy, proc in procs.items():
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, f"{strategy} under torchrun failed:\n{out[-6000:]}"
    try:
        for strategy in ("ddp", "fsdp2"):
            resumed = seed_resume_dir(root / strategy, root / f"{strategy}_to_single")
            assert main(splice_run(recipe, resumed, "--resume")) == 0
    finally:
        torch.set_num_threads(threads)
    return {p.name: p for p in root.iterdir() if p.is_dir()}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_match_one_with_the_same_global_batch(runs, strategy):
    (model_1, opt_1), (model_2, opt_2) = final(runs["single"]), final(runs[strategy])
    assert max_diff(model_1, model_2) <= WEIGHT_TOL
    assert max_diff(opt_1, opt_2) <= OPTIMIZER_TOL
    # The run really trained (so agreeing is not agreeing on the starting weights).
    start = load_file(runs["single"] / "checkpoints" / "step-000003" / "model.safetensors")
    assert max_diff(model_1, start) > 100 * WEIGHT_TOL


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_distributed_checkpoint_resumes_in_one_process(runs, strategy):
    (model_1, opt_1), (model_r, opt_r) = final(runs["single"]), final(runs[f"{strategy}_to_single"])
    assert max_diff(model_1, model_r) <= WEIGHT_TOL
    assert max_diff(opt_1, opt_r) <= OPTIMIZER_TOL


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_single_process_checkpoint_resumes_under_torchrun(runs, strategy):
    (model_1, opt_1), (model_r, opt_r) = final(runs["single"]), final(runs[f"single_to_{strategy}"])
    assert max_diff(model_1, model_r) <= WEIGHT_TOL
    assert max_diff(opt_1, opt_r) <= OPTIMIZER_TOL
    state = json.loads((runs[f"single_to_{strategy}"] / "checkpoints" / "step-000006" /
                        "trainer_state.json").read_text())  # fmt: skip
    assert state["micro_batches"] == STEPS * 2  # global micro-batches, as one process counts


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_rank_zero_logs_the_global_loss_and_tokens(runs, strategy):
    def train_records(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["kind"] == "train"]

    single, multi = train_records(runs["single"]), train_records(runs[strategy])
    assert [r["step"] for r in multi] == list(range(1, STEPS + 1))  # one writer, no duplicates
    for a, b in zip(single, multi):
        assert b["tokens"] == a["tokens"]  # both ranks' tokens, not rank 0's half
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    evals = [json.loads(x) for x in (runs[strategy] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r["kind"] == "eval"] == [3, 6]
    assert (runs[strategy] / "report.md").is_file()


# ---------------------------------------------------------------- in-process parts


def test_each_rank_takes_its_contiguous_slice_of_the_global_batch():
    from splice.training.distributed import shard_batch

    batch = {"input_ids": torch.arange(24).view(8, 3), "labels": torch.ones(8, 3), "n": 7}
    parts = [shard_batch(batch, r, 4) for r in range(4)]
    assert torch.equal(torch.cat([p["input_ids"] for p in parts]), batch["input_ids"])
    assert parts[1]["input_ids"].tolist() == [[6, 7, 8], [9, 10, 11]]
    assert parts[3]["n"] == 7  # non-tensor values are shared
    with pytest.raises(
        ValueError, match=r"global batch of 8 rows .* divisible by the number of processes \(3\)"
    ):
        shard_batch(batch, 0, 3)


def test_distributed_without_torchrun_says_how_to_launch(monkeypatch):
    import torch.distributed as dist
    from splice.training.distributed import init_distributed

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
        init_distributed()


def test_optimizer_state_maps_between_names_and_indices_with_tied_weights():
    from splice.models.build import build_model
    from splice.training.configs import OptimizerConfig
    from splice.training.distributed import fqn_to_index, index_to_fqn
    from splice.training.trainer import build_optimizer

    cfg = {"type": "decoder", "vocab_size": 20, "d_model": 16, "n_layers": 1, "max_seq_len": 8,
           "tie_embeddings": True,
           "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}}}  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.lm_head.weight is model.embed.weight
    opt = build_optimizer(model, OptimizerConfig(lr=1e-2))
    model(torch.randint(0, 20, (2, 8))).logits.square().mean().backward()
    opt.step()
    by_name = index_to_fqn(opt, model)
    assert "embed.weight" in by_name["state"] and "lm_head.weight" not in by_name["state"]
    fresh = build_optimizer(model, OptimizerConfig(lr=1e-2))
    fresh.load_state_dict(fqn_to_index(by_name, model, fresh))
    for (i, a), (j, b) in zip(
        opt.state_dict()["state"].items(), fresh.state_dict()["state"].items()
    ):
        assert i == j and all(torch.equal(a[k], b[k]) for k in a)
    assert fresh.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
