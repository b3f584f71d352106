"""LoRA inside ``splice run`` configs: the trainable report, adapter-only checkpoints, exact
resume, reloading a run for evaluation, and LoRA+ learning rates through the Trainer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from splice.checkpoint import load_model_weights
from splice.training.configs import ExperimentConfig, OptimizerConfig, TrainConfig
from splice.training.experiment import build_experiment_model, run_experiment
from splice.training.trainer import Trainer, build_optimizer, seed_everything
from splice_lora import LoRAConfig, apply_lora, lora_layers

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)


def experiment(out: Path, **adapter) -> ExperimentConfig:
    return ExperimentConfig(
        name="lora-test",
        seed=2,
        model={"type": "decoder", "vocab_size": 52, "d_model": 32, "n_layers": 2,
               "max_seq_len": 16,
               "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}}},
        data={"task": {"type": "arithmetic", "op": "+", "max_digits": 2}, "max_len": 16},
        adapter={"type": "lora", "r": 4, "targets": "all-linear", "dropout": 0.1, **adapter},
        train={"steps": 6, "batch_size": 8, "log_every": 2, "checkpoint_every": 3,
               "keep_last": None, "progress": False, "num_threads": 1,
               "optimizer": {"lr": 3e-3, "weight_decay": 0.1},
               "schedule": {"kind": "cosine", "warmup_steps": 2}},
        eval={"loss_batches": 1, "exact_match_examples": 2},
        output_dir=str(out),
    )  # fmt: skip


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "a"
    return out, run_experiment(experiment(out))


def test_run_reports_trainable_params_and_checkpoints_only_the_adapter(straight_run, capsys):
    out, report = straight_run
    assert report["trainable_params"] < report["total_params"]
    assert report["trainable_percent"] == pytest.approx(
        100 * report["trainable_params"] / report["total_params"], abs=1e-3
    )
    # 2 layers x 6 linears (GELU MLP, hidden 4 x 32), r=4: A (4, in) + B (out, 4) each.
    dims = {"q_proj": (32, 32), "k_proj": (32, 32), "v_proj": (32, 32), "o_proj": (32, 32),
            "up": (32, 128), "down": (128, 32)}  # fmt: skip
    assert report["trainable_params"] == 2 * sum(4 * (i + o) for i, o in dims.values())
    ckpt = out / "checkpoints" / "step-000006"
    assert not (ckpt / "model.safetensors").exists()
    saved = load_file(ckpt / "trainable.safetensors")
    assert saved and all(".lora_A.default." in k or ".lora_B.default." in k for k in saved)
    assert sum(t.numel() for t in saved.values()) == report["trainable_params"]
    opt = load_file(ckpt / "optimizer.safetensors")
    assert (
        sum(t.numel() for k, t in opt.items() if k.endswith(".exp_avg"))
        == report["trainable_params"]
    )


def test_trainable_report_is_printed_at_the_start(tmp_path, capsys):
    cfg = experiment(tmp_path / "p")
    cfg.train.steps = 1
    cfg.train.checkpoint_every = None
    report = run_experiment(cfg)
    out = capsys.readouterr().out
    pct = f"{report['trainable_percent']:.2f}%"
    assert (
        f"trainable params {report['trainable_params']:,} of {report['total_params']:,} ({pct})"
        in out
    )


def test_resume_from_an_adapter_checkpoint_is_exact(straight_run, tmp_path):
    out_a, _ = straight_run
    out_b = tmp_path / "b"
    (out_b / "checkpoints").mkdir(parents=True)
    shutil.copytree(out_a / "checkpoints" / "step-000003", out_b / "checkpoints" / "step-000003")
    report = run_experiment(experiment(out_b), resume=True)
    assert report["resumed"]
    for name in ("trainable.safetensors", "optimizer.safetensors"):
        a = load_file(out_a / "checkpoints" / "step-000006" / name)
        b = load_file(out_b / "checkpoints" / "step-000006" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    start = load_file(out_a / "checkpoints" / "step-000003" / "trainable.safetensors")
    end = load_file(out_a / "checkpoints" / "step-000006" / "trainable.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)  # it did train


def test_a_run_folder_reloads_into_the_rebuilt_model(straight_run):
    out, _ = straight_run
    cfg = experiment(out)
    seed_everything(cfg.seed)
    model = build_experiment_model(cfg)
    load_model_weights(model, out)  # the run folder -> latest checkpoint's trainable params
    saved = load_file(out / "checkpoints" / "step-000006" / "trainable.safetensors")
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in saved.items())
    bare = build_experiment_model(cfg.model_copy(update={"adapter": None}))
    with pytest.raises(FileNotFoundError, match="holds only the trainable"):
        load_model_weights(bare, out)


def test_lora_plus_gives_b_ratio_times_the_learning_rate(make_model, randomize):
    from splice.objectives.sft import SFTObjective

    model = apply_lora(make_model(), LoRAConfig(r=2, lora_plus_ratio=16.0))
    randomize(model)
    opt = build_optimizer(model, OptimizerConfig(lr=1e-2))
    scaled = [g for g in opt.param_groups if g.get("lr_scale")]
    assert len(scaled) == 1 and scaled[0]["lr_scale"] == 16.0
    assert {id(p) for p in scaled[0]["params"]} == {
        id(layer.lora_B["default"].weight) for _, layer in lora_layers(model)
    }
    ids = torch.randint(3, 32, (4, 10), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    SFTObjective().loss(model, batch).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    cfg = TrainConfig(steps=1, max_grad_norm=None, progress=False, log_every=1,
                      precision="float32",  # the update is checked against float32 grads
                      optimizer=OptimizerConfig(name="sgd", lr=1e-2))  # fmt: skip
    Trainer(model, SFTObjective(), [batch], cfg).fit()
    for n, p in model.named_parameters():
        if n in grads:
            lr = 1e-2 * (16.0 if ".lora_B." in n else 1.0)
            torch.testing.assert_close(p.detach(), before[n] - lr * grads[n], atol=1e-6, rtol=1e-5)
