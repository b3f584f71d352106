"""The core online-training loop (``OnlineObjective`` + ``Trainer``): a toy REINFORCE objective
learns to emit one token; resuming from a checkpoint is bitwise equal; the objective's own
module and state are optimised and checkpointed; prompt batches and rollouts are pure
functions of (seed, step)."""

from __future__ import annotations

import copy
import json
import shutil
from typing import Any

import pytest
import torch
from splice.data.arithmetic import ArithmeticTask
from splice.data.tokenizer import CharTokenizer
from splice.generation.sampling import SamplingConfig
from splice.interfaces import LossOutput, OnlineObjective
from splice.models.configs import DecoderConfig
from splice.objectives.logprobs import token_logprobs
from splice.rl.rollout import PromptBatches, Rollouts, pack_rollout
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.trainer import Trainer
from torch import nn

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.bf16_pass]

TOK = CharTokenizer()
TARGET = "7"


class ToyReinforce:
    """Reward = share of completion characters equal to ``TARGET``; REINFORCE with a mean
    baseline, two updates per rollout, a trainable scalar module and a counter as state."""

    def __init__(self) -> None:
        self.bias = nn.Linear(1, 1)
        self.collected = 0
        self.setup_calls = 0

    def setup(self, model: nn.Module, data: Any = None) -> None:
        self.setup_calls += 1

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"bias": self.bias}

    def state_dict(self) -> dict[str, Any]:
        return {"collected": self.collected, "scale": torch.tensor([float(self.collected)])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.collected = int(state["collected"])
        assert float(state["scale"][0]) == self.collected

    def collect(self, model, prompts, generate):
        self.collected += 1
        out = generate(model, prompts["prompt_ids"], n=2)
        texts = generate.texts(out)
        reward = torch.tensor([t.count(TARGET) / max(len(t), 1) for t in texts])
        batch = pack_rollout(prompts["prompt_ids"], out, generate.pad_id)
        return {
            **batch,
            "advantages": reward - reward.mean(),
            "metrics": {"reward": float(reward.mean())},
        }

    def minibatches(self, experience):
        yield experience
        yield experience

    def loss(self, model, batch):
        lp = token_logprobs(model, batch["input_ids"], batch["completion_mask"])
        pg = -(batch["advantages"] * lp.sum()).mean()
        value = self.bias(torch.ones(1, 1)).squeeze()
        loss = pg + (value - 0.5) ** 2
        return LossOutput(
            loss=loss, metrics={"value": float(value.detach())}, n_tokens=int(lp.count().sum())
        )


def tiny_model() -> nn.Module:
    from splice.models.build import build_model

    torch.manual_seed(0)
    return build_model(
        DecoderConfig.model_validate(
            {
                "type": "decoder",
                "vocab_size": TOK.vocab_size,
                "d_model": 32,
                "n_layers": 1,
                "max_seq_len": 24,
                "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 2}},
            }
        )
    )


def trainer(run_dir, steps=6, objective=None, **train):
    task = ArithmeticTask("+", max_digits=2)
    cfg = TrainConfig(
        steps=steps,
        log_every=1,
        checkpoint_every=3,
        keep_last=None,
        progress=False,
        optimizer=OptimizerConfig(lr=3e-3),
        **train,
    )
    prompts = PromptBatches(task, TOK, prompts_per_step=4, seed=1, max_prompt_len=16)
    rollouts = Rollouts(SamplingConfig(max_new_tokens=8, temperature=1.0), TOK, seed=2)
    return Trainer(
        tiny_model(),
        objective or ToyReinforce(),
        prompts,
        cfg,
        run_dir=run_dir,
        rollouts=rollouts,
    )


def test_toy_objective_is_an_online_objective():
    assert isinstance(ToyReinforce(), OnlineObjective)


@pytest.mark.mha
def test_online_loop_logs_rollout_and_update_metrics_and_trains_the_extra_module(tmp_path):
    tr = trainer(tmp_path)
    before = tr.objective.bias.weight.detach().clone()
    tr.fit()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 7))
    for r in train:
        assert r["updates"] == 2.0 and 0.0 <= r["reward"] <= 1.0
        assert r["rollout_s"] > 0 and r["update_s"] > 0 and "value" in r and r["tokens"] > 0
    assert tr.objective.setup_calls == 1 and tr.objective.collected == 6
    assert not torch.equal(before, tr.objective.bias.weight)  # in the optimizer
    # 2 updates per step: AdamW's step count of every parameter is 12.
    assert all(float(s["step"]) == 12 for s in tr.optimizer.state.values())
    ckpt = tmp_path / "checkpoints" / "step-000006"
    assert (ckpt / "objective.safetensors").is_file()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["objective"] == {"collected": 6} and state["micro_batches"] == 6


class RecordsAutocast(ToyReinforce):
    """Records whether each rollout ran under bf16 autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.autocast: list[bool] = []

    def collect(self, model, prompts, generate):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return super().collect(model, prompts, generate)


@pytest.mark.mha
@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_rollouts_run_under_the_runs_precision(tmp_path, precision):
    """In a bf16 run the rollout (sampling, stored log-probs) sees the policy the loss sees."""
    objective = RecordsAutocast()
    trainer(tmp_path, steps=1, objective=objective, precision=precision).fit()
    assert objective.autocast == [precision == "bf16"]


@pytest.mark.mha
def test_resume_from_a_checkpoint_is_bitwise_equal(tmp_path):
    straight = trainer(tmp_path / "a")
    straight.fit()
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(
        tmp_path / "a" / "checkpoints" / "step-000003", tmp_path / "b/checkpoints/step-000003"
    )
    resumed = trainer(tmp_path / "b")
    torch.manual_seed(123)  # the RNG state must come from the checkpoint, not from here
    resumed.fit(resume=True)
    assert resumed.objective.collected == 6  # 3 restored + 3 new
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    assert torch.equal(straight.objective.bias.weight, resumed.objective.bias.weight)
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k]), (i, k)


@pytest.mark.mha
def test_reinforce_raises_the_reward(tmp_path):
    trainer(tmp_path, steps=40).fit()
    rewards = [
        r["reward"]
        for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "train"
    ]
    assert sum(rewards[-8:]) / 8 > sum(rewards[:8]) / 8 + 0.1, rewards


def test_prompt_batches_are_a_function_of_the_position():
    task = ArithmeticTask("+", max_digits=2)
    src = PromptBatches(task, TOK, prompts_per_step=3, seed=5)
    it = src.batches(0)
    first = [next(it) for _ in range(3)]
    again = next(src.batches(2))
    assert again["prompts"] == first[2]["prompts"] and first[0]["prompts"] != first[1]["prompts"]
    assert first[0]["prompt_ids"][0] == TOK.encode(first[0]["prompts"][0], bos=True)
    assert first[0]["references"] == [str(eval(p[:-1])) for p in first[0]["prompts"]]
    assert first[0]["index"].tolist() == [0, 1, 2]


def test_a_prompt_longer_than_the_context_is_an_error_naming_it():
    task = ArithmeticTask("+", min_digits=2, max_digits=2)
    src = PromptBatches(task, TOK, prompts_per_step=2, seed=0, max_prompt_len=4)
    with pytest.raises(ValueError, match=r"prompt '\d+\+\d+=' is 7 tokens.*at most 4"):
        src.batch(0)


@pytest.mark.mha
def test_chunked_generation_matches_per_chunk_calls():
    """Chunk c of the global batch has its own seed: a process holding prompts 2-3 samples
    what one process holding 0-3 samples for them."""
    model = tiny_model()
    rollouts = Rollouts(SamplingConfig(max_new_tokens=6, temperature=1.0), TOK, seed=9, chunk=2)
    prompts = [TOK.encode(p, bos=True) for p in ("1+2=", "33+4=", "5+61=", "7+8=")]
    whole = rollouts.generator(0)(model, prompts, n=3)
    second = rollouts.generator(0, first_index=2)(model, prompts[2:], n=3)
    width = second.tokens.shape[1]
    assert torch.equal(whole.tokens[6:, :width], second.tokens)
    assert whole.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_pack_rollout_right_pads_prompt_plus_completion():
    from splice.generation.sampling import GenerationOutput

    out = GenerationOutput(
        tokens=torch.tensor([[5, 2, 0], [6, 7, 8]]),
        logprobs=torch.zeros(2, 3),
        mask=torch.tensor([[True, True, False], [True, True, True]]),
        prompt_index=torch.tensor([0, 1]),
    )
    packed = pack_rollout([[1, 10, 11], [1, 12]], out, pad_id=0)
    assert packed["input_ids"].tolist() == [[1, 10, 11, 5, 2], [1, 12, 6, 7, 8]]
    assert packed["completion_mask"].tolist() == [
        [False, False, False, True, True],
        [False, False, True, True, True],
    ]
    assert packed["lengths"].tolist() == [2, 3]


@pytest.mark.mha
def test_grad_accum_is_refused_for_online_objectives():
    with pytest.raises(ValueError, match="grad_accum=2"):
        trainer(None, grad_accum=2)


@pytest.mark.mha
def test_online_steps_keep_each_param_groups_lr_scale(tmp_path):
    # PPO's value_lr_scale and LoRA+ give param groups an lr_scale; the online loop once set
    # every group to the plain scheduled rate, silently dropping them.
    objective = ToyReinforce()
    objective.bias.param_lr_scale = {"weight": 10.0, "bias": 10.0}
    tr = trainer(tmp_path, steps=2, objective=objective)
    tr.fit()
    head = {id(p) for p in objective.bias.parameters()}
    lrs = {any(id(p) in head for p in g["params"]): g["lr"] for g in tr.optimizer.param_groups}
    assert lrs[False] > 0 and lrs[True] == pytest.approx(10.0 * lrs[False])


class TiedCritic(ToyReinforce):
    """A trainable module with tied weights (a policy copy: embedding = vocabulary head) and
    a frozen reference copy of it in ``state_dict``: shared storage in both places."""

    def __init__(self) -> None:
        super().__init__()
        self.critic = tiny_model()
        self.reference = copy.deepcopy(self.critic).requires_grad_(False)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"critic": self.critic}

    def state_dict(self) -> dict[str, Any]:
        return {"step": 3, **{f"reference.{k}": v for k, v in self.reference.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded_step = state["step"]
        prefix = "reference."
        self.reference.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )


@pytest.mark.mha
def test_objective_state_with_tied_weights_saves_and_loads_back(tmp_path):
    from safetensors.torch import load_file
    from splice.checkpoint import CheckpointManager
    from splice.training.online import load_objective_state, objective_state

    saved = TiedCritic()
    assert saved.critic.lm_head.weight is saved.critic.embed.weight
    with torch.no_grad():
        saved.critic.embed.weight.add_(1.0)
        saved.reference.embed.weight.mul_(-2.0)
    tensors, meta = objective_state(saved)
    ckpt = CheckpointManager(tmp_path).save(
        1, model=nn.Linear(1, 1), optimizer=None, state={}, extra_tensors=tensors
    )
    fresh = TiedCritic()
    load_objective_state(fresh, load_file(str(ckpt / "objective.safetensors")), meta)
    assert fresh.loaded_step == 3
    for a, b in ((saved.critic, fresh.critic), (saved.reference, fresh.reference)):
        assert b.lm_head.weight is b.embed.weight  # still one tensor after loading
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name


class OverflowingHead(ToyReinforce):
    """Its trainable module's weight becomes inf after the last update of step 3."""

    def minibatches(self, experience):
        yield from super().minibatches(experience)
        if self.collected == 3:  # resumed after the step's last optimizer step
            with torch.no_grad():
                self.bias.weight.fill_(float("inf"))


@pytest.mark.mha
def test_non_finite_objective_module_weights_are_never_checkpointed(tmp_path):
    from splice.training.nan_guard import NonFiniteLossError

    tr = trainer(tmp_path, steps=6, objective=OverflowingHead())
    with pytest.raises(
        NonFiniteLossError, match=r"weights \(bias\.weight\) after the update at step 3"
    ):
        tr.fit()
    assert not (tmp_path / "checkpoints" / "step-000003").exists()
