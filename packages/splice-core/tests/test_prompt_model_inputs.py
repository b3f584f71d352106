"""Per-prompt model inputs (a VLM's images) in an online run's prompt batches: ``PromptBatches``
stacks each example's ``model_inputs`` into ``(P, ...)`` rows in prompt order, a prompt's own
ids can come from ``encode``, bad inputs are errors naming them, and the ``Trainer``'s online
step hands the images to ``collect`` and, through the experience, to the loss, the same
images again after a resume."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch
from splice.data.examples import Example
from splice.data.tokenizer import CharTokenizer
from splice.generation.sampling import SamplingConfig
from splice.interfaces import LossOutput
from splice.rl.rollout import PromptBatches, Rollouts, stack_model_inputs
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.trainer import Trainer
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")

TOK = CharTokenizer()
IMAGE = (3, 4, 4)


def image_of(seed: int, i: int) -> torch.Tensor:
    return torch.rand(IMAGE, generator=torch.Generator().manual_seed((seed + i) % 2**62))


class PictureQuestions:
    """Example ``i`` of a draw asks ``"q<i>?"`` about its own seeded image."""

    def sample(self, split: str, n: int, *, seed: int = 0) -> list[Example]:
        return [
            Example(f"q{i}?", "1", "1", model_inputs={"images": image_of(seed, i)})
            for i in range(n)
        ]


def test_prompt_batches_stack_each_examples_images_in_prompt_order() -> None:
    src = PromptBatches(PictureQuestions(), TOK, prompts_per_step=3, seed=4)
    batch = src.batch(2)
    examples = PictureQuestions().sample("train", 3, seed=_seed_of(src, 2))
    assert batch["images"].shape == (3, *IMAGE)
    for i, e in enumerate(examples):
        assert torch.equal(batch["images"][i], e.model_inputs["images"])
    assert torch.equal(next(src.batches(2))["images"], batch["images"])  # a function of k
    assert not torch.equal(src.batch(3)["images"], batch["images"])
    assert batch["prompt_ids"][0] == TOK.encode("q0?", bos=True)
    # examples without model inputs give the plain text batch
    assert "images" not in stack_model_inputs([Example("a", "b")])
    assert Example("a", "b", model_inputs={"images": torch.zeros(1)}) == Example("a", "b")


def test_encode_gives_a_prompt_its_own_ids() -> None:
    src = PromptBatches(
        PictureQuestions(), TOK, prompts_per_step=2, seed=0, encode=lambda e: [1, 99, 99, 7]
    )
    assert src.batch(0)["prompt_ids"] == [[1, 99, 99, 7]] * 2


def test_bad_model_inputs_are_errors_naming_them() -> None:
    img = {"images": torch.zeros(IMAGE)}
    with pytest.raises(ValueError, match="prompt 'b' has no model input 'images'"):
        stack_model_inputs([Example("a", "x", model_inputs=img), Example("b", "x")])
    with pytest.raises(ValueError, match="'pixels' is not a per-prompt model input"):
        stack_model_inputs([Example("a", "x", model_inputs={"pixels": torch.zeros(2)})])
    with pytest.raises(ValueError, match=r"'images' has different shapes.*\(1,\), \(2,\)"):
        stack_model_inputs(
            [
                Example("a", "x", model_inputs={"images": torch.zeros(1)}),
                Example("b", "x", model_inputs={"images": torch.zeros(2)}),
            ]
        )


def _seed_of(src: PromptBatches, k: int) -> int:
    from splice.training.stream import derive_seed

    return derive_seed(src.seed, "prompts", k)


class RecordsImages:
    """An online objective whose experience is the prompts' images and whose loss reads
    them through the model (a linear map of each image): what reaches ``collect`` and the
    loss is recorded per step."""

    def __init__(self) -> None:
        self.collected: list[torch.Tensor] = []
        self.trained: list[torch.Tensor] = []

    def collect(self, model: nn.Module, prompts: Any, generate: Any) -> dict[str, Any]:
        self.collected.append(prompts["images"].clone())
        return {
            "images": prompts["images"],
            "metrics": {"brightness": float(prompts["images"].mean())},
        }

    def loss(self, model: nn.Module, batch: Any) -> LossOutput:
        self.trained.append(batch["images"].clone())
        out = model(batch["images"].flatten(1))  # (P, 1)
        return LossOutput(loss=(out - 1.0).pow(2).mean(), metrics={}, n_tokens=out.shape[0])


def fit(run_dir, steps: int = 4, resume: bool = False) -> tuple[Trainer, RecordsImages]:
    torch.manual_seed(0)
    objective = RecordsImages()
    trainer = Trainer(
        nn.Linear(3 * 4 * 4, 1),
        objective,
        PromptBatches(PictureQuestions(), TOK, prompts_per_step=3, seed=7),
        TrainConfig(
            steps=steps,
            log_every=1,
            checkpoint_every=2,
            keep_last=None,
            progress=False,
            precision="float32",
            optimizer=OptimizerConfig(lr=1e-2),
        ),
        run_dir=run_dir,
        rollouts=Rollouts(SamplingConfig(max_new_tokens=1), TOK, seed=1, prompts_per_step=3),
    )
    trainer.fit(resume=resume)
    return trainer, objective


def test_the_online_step_carries_the_images_to_collect_and_the_loss_across_a_resume(
    tmp_path,
) -> None:
    straight, seen = fit(tmp_path / "a")
    src = PromptBatches(PictureQuestions(), TOK, prompts_per_step=3, seed=7)
    assert len(seen.collected) == 4
    for k, images in enumerate(seen.collected):
        assert torch.equal(images, src.batch(k)["images"])
        assert torch.equal(seen.trained[k], images)
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a/checkpoints/step-000002", tmp_path / "b/checkpoints/step-000002")
    resumed, again = fit(tmp_path / "b", resume=True)
    assert len(again.collected) == 2  # steps 3 and 4 only, with their own images
    for images, expected in zip(again.collected, seen.collected[2:]):
        assert torch.equal(images, expected)
    assert torch.equal(resumed.model.weight, straight.model.weight)
