"""``ExperimentConfig.quantizer``: quantize after the weights load, train, checkpoint, resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from splice.training.configs import ExperimentConfig
from splice.training.experiment import run_experiment
from splice_qlora.configs import NF4Config

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


def _config(tmp_path, steps: int) -> ExperimentConfig:
    return ExperimentConfig(
        name="nf4",
        model={
            "type": "decoder",
            "vocab_size": 52,
            "d_model": 64,
            "n_layers": 1,
            "max_seq_len": 16,
            "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
        },
        data={"task": {"type": "arithmetic", "op": "+", "max_digits": 2}, "max_len": 16},
        quantizer={"type": "nf4", "targets": ["q_proj", "v_proj", "up"]},
        train={
            "steps": steps,
            "batch_size": 8,
            "log_every": 1,
            "checkpoint_every": 2,
            "progress": False,
            "num_threads": 1,
        },
        eval={"loss_batches": 1, "exact_match_examples": 0},
        output_dir=str(tmp_path / "run"),
    )


def test_config_round_trips_the_quantizer(tmp_path):
    config = _config(tmp_path, 2)
    assert isinstance(config.quantizer, NF4Config)
    again = ExperimentConfig.model_validate(json.loads(config.model_dump_json()))
    assert again.quantizer == config.quantizer


def test_run_trains_with_quantized_layers_and_resumes(tmp_path, capsys):
    report = run_experiment(_config(tmp_path, 2))
    assert "quantized 3 linear layers" in capsys.readouterr().err
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002" / "model.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        packed = f.get_tensor("blocks.0.mixer.q_proj.weight")
        keys = set(f.keys())
    assert packed.dtype == torch.uint8
    assert "blocks.0.mixer.q_proj.weight.quant_state.bitsandbytes__nf4" in keys
    assert (
        "blocks.0.mixer.k_proj.weight" in keys and "blocks.0.mixer.k_proj.weight.absmax" not in keys
    )
    assert torch.isfinite(torch.tensor(report["final_train_loss"]))
    # Resume: the model is rebuilt and quantized again, then the checkpoint (with its quant
    # state) is loaded into it.
    resumed = run_experiment(_config(tmp_path, 4), resume=True)
    assert resumed["steps"] == 4


def test_qlora_adapter_with_8bit_adamw_trains_checkpoints_and_resumes(tmp_path, capsys):
    def config(steps: int) -> ExperimentConfig:
        c = _config(tmp_path, steps).model_dump()
        c.update(quantizer=None, adapter={"type": "qlora", "r": 4, "targets": "q,v"})
        c["train"]["optimizer"] = {"name": "adamw_8bit", "lr": 1e-2}
        return ExperimentConfig.model_validate(c)

    report = run_experiment(config(2))
    assert "quantized 6 linear layers" in capsys.readouterr().err
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    with safe_open(str(ckpt / "trainable.safetensors"), "pt") as f:
        keys = set(f.keys())
    # A frozen base: the checkpoint holds the adapter (and the optimizer state) only.
    assert keys and all("lora_" in k for k in keys)
    with safe_open(str(ckpt / "optimizer.safetensors"), "pt") as f:
        # bitsandbytes' state names (its 8-bit kernels start at 4096 elements per tensor, so
        # these tiny LoRA matrices keep 32-bit moments; test_optimizers checks the 8-bit case).
        assert any(k.endswith("__bnb_optimizer_quant_state__/state1") for k in f.keys())  # noqa: SIM118
    resumed = run_experiment(config(4), resume=True)
    assert resumed["steps"] == 4 and report["steps"] == 2
