"""Connector VLMs (LLaVA projectors, Q-Former) and the native model: placeholder splicing,
masks, positions, loss masking, freezing policies, generation, bad input."""

from __future__ import annotations

import pytest
import torch
from _vision_models import IMG, D, V, lm, vit
from splice.generation.sampling import SamplingConfig, generate
from splice.objectives.sft import SFTObjective
from splice.registry import get_registry
from splice_vision.configs import LlavaConfig, NativeVLMConfig
from splice_vision.placeholders import (
    IGNORE_INDEX,
    expand_image_tokens,
    mask_image_labels,
    splice_image_tokens,
)
from splice_vision.vlm import LlavaVLM, NativeVLM

CONNECTORS = [
    "linear_projector",
    "mlp_projector",
    {"type": "qformer", "n_queries": 4, "d_model": 16},
]


def llava(connector: object = "mlp_projector", **kw: object) -> LlavaVLM:
    torch.manual_seed(0)
    cfg = LlavaConfig.model_validate(
        {"encoder": vit(), "connector": connector, "lm": lm(), "image_token_id": IMG, **kw}
    )
    return get_registry().build("model", cfg).eval()  # type: ignore[no-any-return]


def prompt(model, text: list[int]) -> list[int]:
    return expand_image_tokens([1, IMG, *text], IMG, model.tokens_per_image)


def test_expand_and_splice_placeholders() -> None:
    assert expand_image_tokens([1, IMG, 5, IMG], IMG, 3) == [1, IMG, IMG, IMG, 5, IMG, IMG, IMG]
    embeds = torch.zeros(2, 5, 4)
    ids = torch.tensor([[1, IMG, IMG, 5, 6], [IMG, IMG, 7, 8, 9]])
    img = torch.arange(16.0).reshape(2, 2, 4)
    out = splice_image_tokens(embeds, ids, img, IMG)
    torch.testing.assert_close(out[0, 1:3], img[0])  # first image -> first row's slots
    torch.testing.assert_close(out[1, 0:2], img[1])
    assert out[0, 0].abs().sum() == 0 and out[1, 2:].abs().sum() == 0


@pytest.mark.parametrize("connector", CONNECTORS, ids=["linear", "mlp", "qformer"])
def test_forward_equals_lm_over_spliced_embeddings(connector: object) -> None:
    """The VLM is the LM run on text embeddings with the connector's tokens at the slots."""
    model = llava(connector)
    n = model.tokens_per_image
    assert n == (4 if isinstance(connector, dict) else 16)  # Q-Former: fixed query count
    ids = torch.tensor([prompt(model, [5, 6, 7])] * 2)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(ids, images=images).logits
        tokens = model.connector(model.encoder(images)[:, 1:])  # patch tokens only
        assert tokens.shape == (2, n, D)
        embeds = model.lm.embed(ids.clamp(max=V - 2))
        embeds[:, 1 : 1 + n] = tokens  # after bos
        ref = model.lm(inputs_embeds=embeds).logits
    torch.testing.assert_close(out, ref)
    # the text after the image depends on the image
    with torch.no_grad():
        other = model(ids, images=images.flip(0)).logits
    assert not torch.allclose(other[0, -1], out[0, -1])


def test_qformer_gives_the_same_token_count_for_any_image_size() -> None:
    model = llava(CONNECTORS[2])
    feats_small = model.encoder(torch.randn(1, 3, 32, 32))
    feats_big = model.encoder(torch.randn(1, 3, 48, 48))
    assert model.connector(feats_small).shape == model.connector(feats_big).shape == (1, 4, D)


def test_left_padding_masks_and_positions() -> None:
    """A left-padded row gives the same logits as the prompt alone (mask + positions)."""
    model = llava()
    p = prompt(model, [5, 6, 7])
    images = torch.randn(1, 3, 32, 32)
    padded = torch.tensor([[0, 0, *p]])
    mask = torch.tensor([[0, 0] + [1] * len(p)])
    with torch.no_grad():
        alone = model(torch.tensor([p]), images=images).logits
        out = model(padded, images=images, attention_mask=mask).logits
    torch.testing.assert_close(out[:, 2:], alone, rtol=1e-5, atol=1e-5)


def test_no_loss_on_image_tokens() -> None:
    """SFT on a VLM batch: the loss is the mean CE over text targets only."""
    model = llava()
    ids = torch.tensor([prompt(model, [5, 6, 7, 8])])
    labels = mask_image_labels(ids.clone(), ids, IMG)
    labels[:, 0] = IGNORE_INDEX  # bos: prompt
    assert (labels == IGNORE_INDEX).sum() == 1 + model.tokens_per_image
    images = torch.randn(1, 3, 32, 32)
    loss = SFTObjective().loss(model, {"input_ids": ids, "labels": labels, "images": images})
    logits = model(ids, images=images).logits[0, :-1]
    targets = labels[0, 1:]
    keep = targets != IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss.loss, ref, rtol=1e-5, atol=1e-5)
    assert loss.n_tokens == 4


@pytest.mark.parametrize(
    ("policy", "trained"),
    [
        ("connector", {"connector"}),
        ("connector+lm", {"connector", "lm"}),
        ("all", {"connector", "lm", "encoder"}),
    ],
)
def test_freezing_policies(policy: str, trained: set[str]) -> None:
    model = llava(trainable=policy).train()
    ids = torch.tensor([prompt(model, [5, 6])])
    model(ids, images=torch.randn(1, 3, 32, 32)).logits.sum().backward()
    got = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert got == trained
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"connector", "lm", "encoder"} - trained


def test_generation_reads_the_image_once_and_matches_full_forward() -> None:
    model = llava()
    images = torch.randn(2, 3, 32, 32)
    prompts = [prompt(model, [5, 6]), prompt(model, [7])]
    out = generate(model, prompts, SamplingConfig(max_new_tokens=5), pad_id=0, context=images)
    for row in range(2):
        seq = list(prompts[row])
        with torch.no_grad():
            for _ in range(5):
                logits = model(torch.tensor([seq]), images=images[row : row + 1]).logits
                seq.append(int(logits[0, -1].argmax()))
        assert out.tokens[row].tolist() == seq[len(prompts[row]) :]


def test_generation_takes_images_as_prefill_model_inputs() -> None:
    """``model_inputs={"images": ...}`` gives the tokens ``context=images`` gives (n > 1:
    each prompt's samples read its own image), and other images give other tokens."""
    model = llava()
    images = torch.randn(2, 3, 32, 32)
    prompts = [prompt(model, [5, 6]), prompt(model, [7])]
    sampling = SamplingConfig(max_new_tokens=5, n=3, temperature=1.0, seed=3)
    by_inputs = generate(model, prompts, sampling, pad_id=0, model_inputs={"images": images})
    by_context = generate(model, prompts, sampling, pad_id=0, context=images)
    assert torch.equal(by_inputs.tokens, by_context.tokens)
    assert torch.equal(by_inputs.logprobs, by_context.logprobs)
    other = generate(model, prompts, sampling, pad_id=0, model_inputs={"images": images.flip(0)})
    assert not torch.equal(by_inputs.logprobs, other.logprobs)
    with pytest.raises(ValueError, match=r"model_inputs\['images'\] has 1 rows.*\(2\)"):
        generate(model, prompts, sampling, pad_id=0, model_inputs={"images": images[:1]})


def test_bad_input_names_both_counts() -> None:
    model = llava()
    ids = torch.tensor([prompt(model, [5])])
    with pytest.raises(
        ValueError,
        match=r"hold 16 image placeholder tokens \(1 images of 16 tokens\) but 2 images were given \(32 tokens\)",
    ):
        model(ids, images=torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="hold 16 image placeholder tokens but no images"):
        model(ids)
    with pytest.raises(ValueError, match=r"images have 1 channels, the encoder expects 3"):
        model(ids, images=torch.randn(1, 1, 32, 32))
    from splice_vision.connectors import MLPProjector

    with pytest.raises(
        ValueError, match=r"connector output width 20 does not match the language model's width 32"
    ):
        LlavaVLM(model.config, connector=MLPProjector(24, 20))
    with pytest.raises(
        ValueError, match=r"connector output width 20 does not match the language model's width 32"
    ):
        splice_image_tokens(
            torch.zeros(1, 3, 32), torch.tensor([[IMG, 1, 2]]), torch.zeros(1, 1, 20), IMG
        )
    with pytest.raises(ValueError, match="outside the LM's vocabulary"):
        LlavaConfig.model_validate(
            {"encoder": vit(), "connector": "linear_projector", "lm": lm(), "image_token_id": V}
        )


def native() -> NativeVLM:
    torch.manual_seed(0)
    cfg = NativeVLMConfig.model_validate({"lm": lm(), "image_token_id": IMG, "patch_size": 8})
    return get_registry().build("model", cfg)  # type: ignore[no-any-return]


def test_native_model_embeds_patches_into_the_one_sequence() -> None:
    model = native()
    assert model.tokens_per_image == 16
    ids = torch.tensor([expand_image_tokens([1, IMG, 5, 6], IMG, 16)])
    images = torch.randn(1, 3, 32, 32)
    out = model(ids, images=images).logits
    assert out.shape == (1, 19, V)
    out[0, -1].sum().backward()
    # one decoder and a patch embedding: gradients reach both, there is no other encoder
    assert model.patch.proj.weight.grad is not None and model.lm.embed.weight.grad is not None
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"lm", "patch", "patch_pos"}
    with pytest.raises(
        ValueError, match=r"image size 48x48 does not match the model's image_size 32x32"
    ):
        model(ids, images=torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="images have 4 channels, the encoder expects 3"):
        model(ids, images=torch.randn(1, 4, 32, 32))
