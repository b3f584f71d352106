"""The NaN guard under torchrun: 2 CPU processes (gloo) check their weights before every
checkpoint, and all ranks agree to stop when any one of them finds a non-finite value.

Two runs in one ``torchrun --nproc_per_node=2`` launch, each with a checkpoint every step:

- DDP, an update that overflows (a finite loss of ~1e38 at SGD lr 100): every rank holds
  the same inf weights after step 3; the run stops there naming them, the step-3
  checkpoint is never written, the step-2 one is named as the last good one.
- FSDP2, an inf written into rank 1's shard only, after step 3's update: rank 0's own part is
  finite, yet it must not gather and save; every rank stops, naming rank 1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Run under torchrun: each case trains a DistributedTrainer and records what it raised.
DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch import nn

    from splice.interfaces import LossOutput
    from splice.training.configs import OptimizerConfig, TrainConfig
    from splice.training.distributed import DistributedTrainer, init_distributed
    from splice.training.nan_guard import NonFiniteLossError

    info = init_distributed()
    out = Path(sys.argv[1])


    class Overflow:
        # Zero loss for 2 steps, then a finite loss ~1e38 whose SGD update overflows (every
        # parameter's gradient is 1e38 / |total|: finite, but lr 100 times it is not).
        calls = 0

        def loss(self, model, batch):
            self.calls += 1
            total = model(torch.ones(1, 4)).sum()  # through DDP's forward: it syncs grads
            if self.calls < 3:
                return LossOutput(loss=total * 0.0)
            return LossOutput(loss=total * (1e38 / total.detach().abs().clamp(min=1.0)))


    class Regression:
        def loss(self, model, batch):
            return LossOutput(loss=((model(batch["x"]) - batch["y"]) ** 2).mean())


    class PoisonRank1(nn.Linear):
        # After step 3's update, rank 1 writes inf into its own shard of the weight.
        steps = 0

        def after_optimizer_step(self):
            self.steps += 1
            if self.steps == 3 and dist.get_rank() == 1:
                with torch.no_grad():
                    self.weight.to_local().fill_(float("inf"))


    torch.manual_seed(0)
    batches = [{"x": torch.randn(8, 4), "y": torch.randn(8, 1)} for _ in range(10)]
    cases = {
        "ddp": (nn.Linear(4, 1), Overflow(), OptimizerConfig(name="sgd", lr=100.0)),
        "fsdp2": (
            nn.Sequential(PoisonRank1(4, 8), nn.Linear(8, 1)),
            Regression(),
            OptimizerConfig(name="sgd", lr=0.01),
        ),
    }
    result = {}
    for strategy, (model, objective, opt) in cases.items():
        cfg = TrainConfig(steps=6, log_every=1, checkpoint_every=1, max_grad_norm=None,
                          progress=False, optimizer=opt, distributed=strategy)
        trainer = DistributedTrainer(model, objective, batches, cfg, run_dir=out / strategy)
        try:
            trainer.fit()
            result[strategy] = "finished"
        except NonFiniteLossError as err:
            result[strategy] = str(err)
        dist.barrier()
    (out / f"rank{info.rank}.json").write_text(json.dumps(result))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    root = tmp_path_factory.mktemp("dist_nan")
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", str(driver), str(root)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"torchrun failed:\n{(proc.stdout + proc.stderr)[-6000:]}"
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    return root, ranks


def steps_saved(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


@pytest.mark.slow
def test_ddp_overflowing_update_stops_every_rank_before_the_save(outcome):
    root, ranks = outcome
    good = root / "ddp" / "checkpoints" / "step-000002"
    for msg in (r["ddp"] for r in ranks):
        assert "non-finite weights (weight, bias) on ranks 0, 1 after the update at step 3" in msg
        assert f"the last good checkpoint is {good}" in msg
    assert steps_saved(root / "ddp") == ["step-000001", "step-000002"]


@pytest.mark.slow
def test_fsdp2_one_ranks_bad_shard_stops_every_rank(outcome):
    root, ranks = outcome
    rank0, rank1 = ranks[0]["fsdp2"], ranks[1]["fsdp2"]
    # Rank 0's own shard is finite: it stops because rank 1 found one.
    assert "non-finite weights (not in this rank's part) on rank 1 after the update at step 3" in (
        rank0
    )
    assert "non-finite weights (0.weight) on rank 1 after the update at step 3" in rank1
    assert steps_saved(root / "fsdp2") == ["step-000001", "step-000002"]
