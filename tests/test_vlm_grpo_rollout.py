"""GRPO (splice-grpo) on a LLaVA-style VLM (splice-vision) with LoRA on its LM (splice-lora):
the images travel with the rollout.

A prompt batch carries ``images (P, C, H, W)``; generation conditions on them, the packed
rollout repeats each prompt's image for its completions, and the policy's, the rollout
policy's and the reference's log-probs are all computed with those images. The core
``Trainer`` runs it end to end from a task whose examples carry their images
(``PromptBatches``), and resumes it exactly from a checkpoint.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytest.importorskip("splice_lora", reason="splice-lora is not installed")
pytest.importorskip("splice_vision", reason="splice-vision is not installed")
pytest.importorskip("splice_grpo", reason="splice-grpo is not installed")

from splice.data.examples import Example
from splice.generation.sampling import SamplingConfig
from splice.objectives.logprobs import token_logprobs
from splice.registry import get_registry
from splice.rl.rollout import PromptBatches, Rollouts, pack_rollout
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.trainer import Trainer
from splice_grpo.configs import GRPOConfig
from splice_grpo.objective import build_grpo
from splice_vision.configs import LlavaConfig
from splice_vision.placeholders import expand_image_tokens

V, IMG, EOS = 40, 39, 2
P, G = 3, 4


class Tokenizer:
    """Ids as text: what the rollout generator needs (pad/eos ids, decode)."""

    pad_id, eos_id = 0, EOS

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


def build_vlm():
    torch.manual_seed(0)
    cfg = LlavaConfig.model_validate(
        {
            "encoder": {"type": "vit", "patch_size": 8, "d_model": 24, "n_heads": 4, "n_layers": 1},
            "connector": "mlp_projector",
            "lm": {
                "type": "decoder",
                "vocab_size": V,
                "d_model": 32,
                "n_layers": 2,
                "max_seq_len": 64,
                "block": {"type": "pre_norm", "token_mixer": {"type": "mha", "n_heads": 4}},
                "init_std": 0.2,
            },
            "image_token_id": IMG,
            "trainable": "lm",
            "lm_adapter": {"type": "lora", "r": 4, "targets": "all-linear"},
        }
    )
    model = get_registry().build("model", cfg)
    # Move the adapters off zero, so the policy differs from its reference (adapters off).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    return model


def prompt_batch(model, images: torch.Tensor) -> dict:
    ids = [
        expand_image_tokens([1, IMG, *text], IMG, model.tokens_per_image)
        for text in ([5, 6], [7], [8, 9, 10])
    ]
    return {
        "prompts": ["a", "b", "c"],
        "references": ["3 4", "5", "6"],
        "prompt_ids": ids,
        "index": torch.arange(P),
        "images": images,
    }


def grpo(**kw):
    cfg = {
        "group_size": G,
        "rewards": [{"reward": {"type": "answer_match"}}],
        "beta": 0.1,
        "reference": "adapters_off",
        **kw,
    }
    return build_grpo(GRPOConfig.model_validate(cfg))


def rollouts() -> Rollouts:
    # the image placeholder is never a completion token
    sampling = SamplingConfig(max_new_tokens=5, temperature=1.0, suppress_token_ids=[IMG])
    return Rollouts(sampling, Tokenizer(), seed=11)


def test_generation_and_training_forward_read_the_same_images() -> None:
    """The log-probs generation sampled with equal a training forward over the packed rows
    with the packed images (and not with the images of other prompts)."""
    model = build_vlm()
    images = torch.rand(P, 3, 32, 32)
    batch = prompt_batch(model, images)
    gen = rollouts().generator(0)
    out = gen(model, batch["prompt_ids"], n=G, model_inputs={"images": images})
    packed = pack_rollout(batch["prompt_ids"], out, 0, {"images": images})
    assert packed["images"].shape == (P * G, 3, 32, 32)
    assert torch.equal(packed["images"], images.repeat_interleave(G, 0))
    ids, mask = packed["input_ids"], packed["completion_mask"]
    with torch.no_grad():
        same = token_logprobs(model.eval(), ids, mask, images=packed["images"])
        other = token_logprobs(model, ids, mask, images=packed["images"].roll(G, 0))
    torch.testing.assert_close(same.logprobs[same.mask], out.logprobs[out.mask], atol=1e-5, rtol=0)
    assert (other.logprobs[other.mask] - out.logprobs[out.mask]).abs().max() > 1e-2
    # and the samples themselves depend on the image
    other_out = gen(model, batch["prompt_ids"], n=G, model_inputs={"images": images.flip(0)})
    assert not torch.equal(other_out.logprobs, out.logprobs)


def test_collect_stores_images_and_reference_logprobs_computed_with_them() -> None:
    model = build_vlm()
    images = torch.rand(P, 3, 32, 32)
    objective = grpo()
    objective.setup(model)
    experience = objective.collect(model, prompt_batch(model, images), rollouts().generator(0))
    n = P * G
    assert experience["images"].shape == (n, 3, 32, 32)
    assert torch.equal(experience["images"], images.repeat_interleave(G, 0))
    ids, mask, ref = (
        experience["input_ids"],
        experience["completion_mask"],
        experience["ref_logprobs"],
    )
    assert ref.shape == (n, ids.shape[1] - 1)
    # the reference is the policy with its adapters off, reading the same images
    expected = objective.reference.token_logprobs(ids, mask, images=experience["images"])
    torch.testing.assert_close(ref, expected, atol=0, rtol=0)
    blank = objective.reference.token_logprobs(
        ids, mask, images=torch.zeros_like(experience["images"])
    )
    swapped = objective.reference.token_logprobs(ids, mask, images=experience["images"].roll(G, 0))
    scored = mask[:, 1:]
    assert (ref - blank)[scored].abs().max() > 1e-2
    assert (ref - swapped)[scored].abs().max() > 1e-2
    # and it is not the policy: the adapters were moved off zero
    with torch.no_grad():
        policy = token_logprobs(model, ids, mask, images=experience["images"]).logprobs
    assert (policy - ref)[scored].abs().max() > 1e-3


def test_grpo_loss_trains_the_lora_weights_of_the_language_model_only() -> None:
    model = build_vlm()
    objective = grpo()
    objective.setup(model)
    experience = objective.collect(
        model, prompt_batch(model, torch.rand(P, 3, 32, 32)), rollouts().generator(0)
    )
    # answer_match against references no sample hits would give zero advantages everywhere
    experience["advantages"] = torch.linspace(-1.0, 1.0, P * G)
    (minibatch,) = list(objective.minibatches(experience))
    assert torch.equal(minibatch["images"], experience["images"])
    out = objective.loss(model, minibatch)
    assert torch.isfinite(out.loss) and out.metrics["kl"] > 0
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("lm.") and "lora_" in n for n in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    for name, p in model.named_parameters():
        if name.startswith(("encoder.", "connector.")) or "lora_" not in name:
            assert not p.requires_grad, name


def test_minibatches_keep_each_completion_with_its_image() -> None:
    """With two minibatches the rollout policy's log-probs are stored, computed with the
    images of the same rows: the first update's ratio is exactly 1."""
    model = build_vlm()
    objective = grpo(minibatches=P, beta=0.0)
    objective.setup(model)
    experience = objective.collect(
        model, prompt_batch(model, torch.rand(P, 3, 32, 32)), rollouts().generator(0)
    )
    minibatches = list(objective.minibatches(experience))
    assert len(minibatches) == P
    for k, mb in enumerate(minibatches):
        assert torch.equal(mb["images"], experience["images"][k * G : (k + 1) * G])
        with torch.enable_grad():
            now = token_logprobs(model, mb["input_ids"], mb["completion_mask"], images=mb["images"])
        torch.testing.assert_close(now.logprobs.detach(), mb["old_logprobs"], atol=0, rtol=0)


class Pictures:
    """A task whose example ``i`` of a draw asks about its own seeded random image."""

    def sample(self, split: str, n: int, *, seed: int = 0) -> list[Example]:
        g = torch.Generator().manual_seed(seed % 2**62)
        return [
            Example(
                f"q{i}",
                str(3 + i),
                str(3 + i),
                model_inputs={"images": torch.rand(3, 32, 32, generator=g)},
            )
            for i in range(n)
        ]


def fit_grpo(run_dir, *, resume: bool = False) -> Trainer:
    model = build_vlm()
    n_img = model.tokens_per_image
    prompts = PromptBatches(
        Pictures(),
        Tokenizer(),
        prompts_per_step=P,
        seed=3,
        encode=lambda e: expand_image_tokens([1, IMG, 5 + int(e.prompt[1:])], IMG, n_img),
    )
    trainer = Trainer(
        model,
        grpo(),
        prompts,
        TrainConfig(
            steps=2,
            log_every=1,
            checkpoint_every=1,
            keep_last=None,
            progress=False,
            precision="float32",
            optimizer=OptimizerConfig(lr=1e-2),
        ),
        run_dir=run_dir,
        rollouts=Rollouts(
            SamplingConfig(max_new_tokens=5, temperature=1.0, suppress_token_ids=[IMG]),
            Tokenizer(),
            seed=11,
            prompts_per_step=P,
        ),
    )
    trainer.fit(resume=resume)
    return trainer


def test_the_trainer_runs_grpo_on_the_vlm_with_images_and_resumes_exactly(tmp_path) -> None:
    start = {n: p.detach().clone() for n, p in build_vlm().named_parameters()}
    straight = fit_grpo(tmp_path / "a")
    log = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(r["kl"] >= 0 for r in train)
    trained = dict(straight.model.named_parameters())
    moved = [n for n, p in trained.items() if not torch.equal(p, start[n])]
    assert moved and all(n.startswith("lm.") and "lora_" in n for n in moved)
    # resumed after step 1: step 2's rollout sees the same images and samples the same
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a/checkpoints/step-000001", tmp_path / "b/checkpoints/step-000001")
    resumed = fit_grpo(tmp_path / "b", resume=True)
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, trained[name]), name
    again = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["reward"]) for r in again if r["kind"] == "train"] == [
        (2, train[1]["reward"])
    ]
