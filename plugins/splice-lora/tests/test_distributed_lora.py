"""LoRA under torchrun DDP (2 CPU processes, gloo) trains like one process.

The same ``splice run`` recipe (LoRA on every linear of a tiny decoder) runs in this process
and under ``torchrun --nproc_per_node=2 ... --set train.distributed=ddp``; both write
adapter-only checkpoints, which must agree within float32 rounding (ranks sum gradients in
another order): 1e-5 on the adapter, 1e-6 on the optimizer state, as tests/test_distributed.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)

RECIPE = textwrap.dedent(
    '''
    """LoRA DDP test run."""
    from splice.training.configs import ExperimentConfig


    def config():
        return ExperimentConfig(
            name="lora-ddp",
            seed=1,
            model={"type": "decoder", "vocab_size": 52, "d_model": 32, "n_layers": 2,
                   "max_seq_len": 16,
                   "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}}},
            data={"task": {"type": "arithmetic", "op": "+", "max_digits": 2}, "max_len": 16},
            adapter={"type": "lora", "r": 4, "targets": "all-linear", "lora_plus_ratio": 4.0},
            train={"steps": 4, "batch_size": 8, "grad_accum": 2, "log_every": 2, "precision": "float32",
                   "checkpoint_every": 4, "keep_last": None, "progress": False,
                   "num_threads": 1, "optimizer": {"lr": 1e-2}},
            eval={"loss_batches": 1, "exact_match_examples": 2},
        )
    '''
)
DRIVER = "import sys; from splice.cli import main; sys.exit(main(sys.argv[1:]))"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_lora_ddp_matches_one_process(tmp_path):
    from splice.cli import main

    recipe = tmp_path / "lora_ddp.py"
    recipe.write_text(RECIPE)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    threads = torch.get_num_threads()
    try:
        assert main(["run", str(recipe), "--output-dir", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_port()}", str(driver), "run", str(recipe), "--output-dir",
           str(tmp_path / "ddp"), "--set", "train.distributed=ddp"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "trainable params" in proc.stdout
    ckpt = "checkpoints/step-000004"
    for name, tol in (("trainable.safetensors", 1e-5), ("optimizer.safetensors", 1e-6)):
        a = load_file(tmp_path / "single" / ckpt / name)
        b = load_file(tmp_path / "ddp" / ckpt / name)
        assert a.keys() == b.keys()
        assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= tol, name
    assert not (tmp_path / "ddp" / ckpt / "model.safetensors").exists()
    trained = load_file(tmp_path / "ddp" / ckpt / "trainable.safetensors")
    assert all(v.abs().max() > 1e-4 for k, v in trained.items() if ".lora_B." in k)  # B left 0
