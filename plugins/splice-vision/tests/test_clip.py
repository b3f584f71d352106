"""CLIP: losses against their formulas, the clamped temperature, zero-shot, recall@k,
training, and parity with transformers' CLIPModel and open_clip."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from splice.registry import get_registry
from splice_vision.clip import CLIP, recall_at_k, zero_shot_classify
from splice_vision.configs import CLIPConfig, TextEncoderConfig, ViTConfig
from splice_vision.losses import infonce_loss, siglip_loss


def tiny(**kw: object) -> CLIP:
    torch.manual_seed(0)
    cfg = CLIPConfig(
        vision=ViTConfig(patch_size=8, d_model=32, n_heads=4, pre_norm=True, conv_bias=False),
        text=TextEncoderConfig(vocab_size=40, d_model=32, n_heads=4, max_len=12),
        embed_dim=16,
        **kw,  # type: ignore[arg-type]
    )
    return CLIP(cfg)


def test_infonce_is_the_mean_of_both_directions() -> None:
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    loss, logits = infonce_loss(img, txt, scale)
    sim = 10.0 * img @ txt.t()
    i2t = -torch.stack([sim[i].log_softmax(0)[i] for i in range(5)]).mean()
    t2i = -torch.stack([sim[:, i].log_softmax(0)[i] for i in range(5)]).mean()
    torch.testing.assert_close(loss, (i2t + t2i) / 2)
    torch.testing.assert_close(logits, sim)


def test_siglip_loss_is_a_sum_of_pairwise_sigmoid_losses() -> None:
    g = torch.Generator().manual_seed(1)
    img = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    t, b = torch.tensor(7.0), torch.tensor(-3.0)
    loss, _ = siglip_loss(img, txt, t, b)
    total = 0.0
    for i in range(4):
        for j in range(4):
            z = 1.0 if i == j else -1.0
            total += -math.log(1 / (1 + math.exp(-z * (7.0 * float(img[i] @ txt[j]) - 3.0))))
    assert abs(float(loss) - total / 4) < 1e-4


def test_temperature_is_learned_and_clamped() -> None:
    model = tiny()
    assert abs(float(model.scale().detach()) - 1 / 0.07) < 1e-3
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert abs(float(model.scale().detach()) - 100.0) < 1e-3
    img, ids = torch.randn(3, 3, 32, 32), torch.randint(3, 40, (3, 8))
    model(img, ids).loss.backward()
    assert float(model.logit_scale.grad) == 0.0  # beyond the clamp: no push further
    model.zero_grad()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
    model(img, ids).loss.backward()
    assert float(model.logit_scale.grad) != 0.0


def test_siglip_option_has_a_learned_bias() -> None:
    model = tiny(loss="siglip")
    assert model.logit_bias is not None and float(model.logit_bias) == -10.0
    out = model(torch.randn(3, 3, 32, 32), torch.randint(3, 40, (3, 8)))
    out.loss.backward()
    assert model.logit_bias.grad is not None


def test_registry_builds_clip_and_embeddings_are_normalised() -> None:
    model = get_registry().build("model", CLIPConfig())
    assert isinstance(model, CLIP)
    emb = model.encode_image(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


def test_text_pooling_at_eos_and_padding_after_it_is_ignored() -> None:
    torch.manual_seed(0)
    cfg = TextEncoderConfig(vocab_size=40, d_model=32, n_heads=4, max_len=12, eos_token_id=2)
    from splice_vision.text import TextEncoder

    enc = TextEncoder(cfg).eval()
    ids = torch.tensor([[5, 6, 2, 0, 0], [7, 8, 9, 10, 2]])
    mask = (torch.arange(5) <= (ids == 2).int().argmax(1, keepdim=True)).long()
    out = enc(ids, mask)
    alone = enc(ids[:1, :3])
    torch.testing.assert_close(out[:1], alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no end-of-text token"):
        enc(torch.tensor([[5, 6, 7]]))


def test_recall_at_k_and_zero_shot() -> None:
    e = torch.eye(6)
    text = e[[0, 1, 2, 3, 5, 4]]  # images 4 and 5 retrieve each other's text
    r = recall_at_k(e, text, ks=(1, 2))
    assert r["i2t_r1"] == pytest.approx(4 / 6) and r["t2i_r1"] == pytest.approx(4 / 6)
    assert r["i2t_r2"] == pytest.approx(4 / 6)  # other sims are all 0: top-2 ties by index
    match = torch.eye(6, dtype=torch.bool)
    match[4, 5] = match[5, 4] = True  # same caption: both count
    assert recall_at_k(e, text, ks=(1,), match=match)["i2t_r1"] == 1.0
    model = tiny().eval()
    imgs = torch.randn(4, 3, 32, 32)
    classes = torch.randint(3, 40, (3, 6))
    pred = zero_shot_classify(model, imgs, classes)
    sims = model.encode_image(imgs) @ model.encode_text(classes).t()
    assert pred.tolist() == sims.argmax(1).tolist()


def test_training_aligns_matching_pairs() -> None:
    """A few steps on 4 fixed pairs: the diagonal becomes the argmax both ways."""
    model = tiny()
    torch.manual_seed(1)
    imgs = torch.randn(4, 3, 32, 32)
    ids = torch.randint(3, 40, (4, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        out = model(imgs, ids)
        first = first if first is not None else float(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert float(out.loss) < first / 5
    with torch.no_grad():
        final = model(imgs, ids).logits_per_image
    assert final.argmax(1).tolist() == [0, 1, 2, 3] == final.argmax(0).tolist()


def _randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name != "logit_scale":
                p.normal_(0, 0.1)


@pytest.mark.parametrize("eos_token_id", [2, 39])
def test_hf_clip_parity(tmp_path, eos_token_id: int) -> None:
    transformers = pytest.importorskip("transformers")
    from splice_vision.interop import load_hf_clip

    cfg = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=12, eos_token_id=eos_token_id,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, hidden_size=24, intermediate_size=40,
            num_hidden_layers=2, num_attention_heads=4,
        ),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.CLIPModel(cfg).eval()
    _randomise(hf)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_clip(tmp_path).eval()
    assert ours.config.vision.activation == "quick_gelu"  # transformers' CLIP default
    img = torch.randn(3, 3, 32, 32)
    ids = torch.randint(3, 39, (3, 9))
    ids[:, 5] = 39  # end-of-text: the largest id (legacy rule) and the configured eos id
    mask = (torch.arange(9) <= 5).long().expand(3, 9)
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=img, attention_mask=mask)
        got_img = ours.encode_image(img, normalize=False)
        got_txt = ours.encode_text(ids, mask, normalize=False)
        torch.testing.assert_close(
            F.normalize(got_img, dim=-1), ref.image_embeds, rtol=0, atol=1e-4
        )
        torch.testing.assert_close(F.normalize(got_txt, dim=-1), ref.text_embeds, rtol=0, atol=1e-4)
        torch.testing.assert_close(
            ours(img, ids, mask).logits_per_image, ref.logits_per_image, rtol=0, atol=1e-4
        )


def test_open_clip_parity() -> None:
    open_clip = pytest.importorskip("open_clip")
    from splice_vision.interop import from_open_clip

    torch.manual_seed(0)
    oc = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=32, head_width=8, patch_size=8, image_size=32, mlp_ratio=2.0),
        text_cfg=open_clip.CLIPTextCfg(context_length=12, vocab_size=40, width=24, heads=4, layers=2, mlp_ratio=2.0),
    ).eval()  # fmt: skip
    _randomise(oc)
    ours = from_open_clip(oc).eval()
    img = torch.randn(3, 3, 32, 32)
    ids = torch.randint(1, 30, (3, 12))
    ids[:, 7] = 39  # end of text: the largest id (open_clip pools at argmax)
    ids[:, 8:] = 0
    with torch.no_grad():
        torch.testing.assert_close(
            ours.encode_image(img, normalize=False), oc.encode_image(img), rtol=0, atol=1e-4
        )
        torch.testing.assert_close(
            ours.encode_text(ids, normalize=False), oc.encode_text(ids), rtol=0, atol=1e-4
        )
