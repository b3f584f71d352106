"""Exact resume of a GRPO run: killed with SIGKILL mid-training and resumed, it ends bitwise
equal to an uninterrupted run -- policy weights, optimizer state, the reference copy
(objective.safetensors), and every logged step (so the sampler RNG and prompt position were
restored too: a different rollout would change the losses and rewards)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from splice.testing.resume import (
    assert_same_checkpoint,
    kill_and_resume,
    train_records,
    trainer_state,
)

pytestmark = pytest.mark.bf16_pass  # also run with bf16 forced (nox -s tests_bf16)

# A recipe file: a slowed-down reward (so the kill lands mid-run), registered through the
# plugin registry, and a GRPO run with beta > 0 (a frozen reference copy), mu = 2 inner
# iterations over 2 minibatches (stored old log-probs), sampling at temperature 1.
RECIPE = textwrap.dedent(
    '''
    """GRPO resume test run."""
    from splice.testing.resume import register_slow_length_reward
    from splice.training.configs import ExperimentConfig

    register_slow_length_reward()


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
                       "rewards": [{"reward": {"type": "testing_slow_length"}}]},
            rollout={"prompts_per_step": 4, "max_new_tokens": 8, "temperature": 1.0},
            train={"steps": 12, "log_every": 2, "checkpoint_every": 4, "keep_last": 2,
                   "progress": False, "num_threads": 1,
                   "optimizer": {"lr": 3e-3, "weight_decay": 0.1},
                   "schedule": {"kind": "cosine", "warmup_steps": 2}},
            eval={"loss_batches": 0, "exact_match_examples": 4, "max_new_tokens": 4},
        )
    '''
)


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    recipe = tmp_path / "grpo_resume_recipe.py"
    recipe.write_text(RECIPE)
    # Killed half a second after its step-4 checkpoint: in step 5 or 6, which is redone.
    runs = kill_and_resume(recipe, tmp_path, kill_after=4, wait_s=0.5)
    assert runs.final_step == 12

    a = assert_same_checkpoint(runs.straight, runs.resumed)
    assert any(k.startswith("state.reference.") for k in a["objective.safetensors"])
    # the policy moved away from the reference: the reference really is the starting copy
    ref = a["objective.safetensors"]["state.reference.embed.weight"]
    assert not torch.equal(ref, a["model.safetensors"]["embed.weight"])

    records = train_records(runs.straight)
    assert records == train_records(runs.resumed)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert {"loss", "reward", "kl", "ratio_mean", "completion_length"} <= records[0].keys()
    state = trainer_state(runs.resumed)
    assert state["micro_batches"] == 12 and state["examples"] == 48
