"""Exact resume of RL on a LoRA policy: a GRPO or PPO run whose policy is a frozen base with
LoRA adapters (GRPO also on a QLoRA policy: an NF4-quantized base), killed with SIGKILL mid-training and resumed, ends bitwise equal to an
uninterrupted run.

The reference is the base itself (the policy with its adapters off), so nothing but the
trainable state is checkpointed: ``trainable.safetensors`` (the adapter, no
``model.safetensors``), the optimizer state, and for PPO the value head
(``objective.safetensors``). The resumed process rebuilds the base from the seed, loads the
adapter, the optimizer, the RNG states, the prompt position and the objective's state; the
logged rewards, KL and losses of every step must match too (a different rollout would
change them).
"""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("splice_lora", reason="needs splice-lora (the LoRA adapters)")
pytest.importorskip("splice_grpo", reason="needs splice-grpo")
pytest.importorskip("splice_ppo", reason="needs splice-ppo")

from splice.testing.resume import (
    assert_same_checkpoint,
    kill_and_resume,
    train_records,
    trainer_state,
)

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)

# A slowed-down reward (so the kill lands mid-run), registered through the plugin registry;
# LoRA (with dropout: the RNG state matters) on every linear layer of a tiny decoder.
RECIPE = textwrap.dedent(
    '''
    """RL-on-LoRA resume test run."""
    from splice.testing.resume import register_slow_length_reward
    from splice.training.configs import ExperimentConfig

    register_slow_length_reward()

    REWARDS = [{"reward": {"type": "testing_slow_length"}}]
    OBJECTIVES = {
        # beta > 0: a reference, which on a LoRA policy is the base (adapters off)
        "grpo": {"type": "grpo", "group_size": 4, "beta": 0.1, "inner_iterations": 2,
                 "minibatches": 2, "rewards": REWARDS},
        # a value head on the LoRA policy's trunk, an adaptive KL coefficient
        "ppo": {"type": "ppo", "samples_per_prompt": 2, "kl_coef": 0.1, "kl_target": 0.5,
                "kl_horizon": 20, "epochs": 2, "minibatch_size": 4, "value_lr_scale": 5.0,
                "rewards": REWARDS},
    }
    ADAPTERS = {
        "lora": {"type": "lora", "r": 4, "alpha": 8.0, "dropout": 0.1,
                 "targets": "all-linear"},
        # the base quantized to NF4 (rebuilt, and re-quantized, from the seed on resume)
        "qlora": {"type": "qlora", "r": 4, "alpha": 8.0, "dropout": 0.1,
                  "targets": "all-linear",
                  "quantization": {"type": "nf4", "compute_dtype": "float32"}},
    }


    def config():
        return ExperimentConfig(
            name="lora-rl-resume",
            seed=7,
            model={"type": "decoder", "vocab_size": 52, "d_model": 32, "n_layers": 2,
                   "max_seq_len": 24,
                   "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}}},
            adapter=ADAPTERS["ADAPTER"],
            data={"task": {"type": "arithmetic", "op": "+", "max_digits": 2}, "max_len": 16},
            objective=OBJECTIVES["OBJECTIVE"],
            rollout={"prompts_per_step": 4, "max_new_tokens": 8, "temperature": 1.0},
            train={"steps": 12, "log_every": 2, "checkpoint_every": 4, "keep_last": 2,
                   "progress": False, "num_threads": 1,
                   "optimizer": {"lr": 1e-2, "weight_decay": 0.1},
                   "schedule": {"kind": "cosine", "warmup_steps": 2}},
            eval={"loss_batches": 0, "exact_match_examples": 4, "max_new_tokens": 4},
        )
    '''
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("objective", "adapter"), [("grpo", "lora"), ("ppo", "lora"), ("grpo", "qlora")]
)
def test_lora_policy_sigkill_then_resume_is_bitwise_identical(tmp_path, objective, adapter):
    if adapter == "qlora":
        pytest.importorskip("splice_qlora", reason="needs splice-qlora")
    recipe = tmp_path / f"{adapter}_{objective}_resume_recipe.py"
    recipe.write_text(RECIPE.replace("OBJECTIVE", objective).replace("ADAPTER", adapter))
    # Killed half a second after its step-4 checkpoint: in step 5 or 6, which is redone.
    runs = kill_and_resume(recipe, tmp_path, kill_after=4, wait_s=0.5)
    assert runs.final_step == 12

    a = assert_same_checkpoint(runs.straight, runs.resumed)
    # Only the trainable state is saved: the adapter, never the frozen base or a reference.
    assert "model.safetensors" not in a
    adapter = a["trainable.safetensors"]
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert any(k.endswith("q_proj.lora_B.default.weight") for k in adapter)
    # B starts at zero: the adapter trained (and so the policy left its reference, the base).
    assert all(adapter[k].abs().sum() > 0 for k in adapter if ".lora_B." in k)
    if objective == "grpo":
        assert "objective.safetensors" not in a  # the base with adapters off: no copy
    else:
        extra = a["objective.safetensors"]
        assert sorted(extra) == ["module.value_head.proj.bias", "module.value_head.proj.weight"]
        assert extra["module.value_head.proj.weight"].abs().sum() > 0  # starts at zero
        assert trainer_state(runs.straight)["objective"]["kl_coef"] != 0.1  # adapted, restored

    records = train_records(runs.straight)
    assert records == train_records(runs.resumed)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(r["kl"] != 0 for r in records[1:])  # the reference (the base) is not the policy
    state = trainer_state(runs.resumed)
    assert state["weights"] == "trainable" and state["micro_batches"] == 12
