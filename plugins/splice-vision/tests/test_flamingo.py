"""Flamingo: gated cross-attention leaves a frozen LM unchanged at init (bit for bit),
opens with training, and caches the image's K/V once per prompt in generation."""

from __future__ import annotations

import torch
from _vision_models import lm, vit
from splice.generation.kv_cache import KVCache
from splice.generation.sampling import SamplingConfig, generate
from splice.models.build import build_model
from splice_vision.configs import FlamingoConfig
from splice_vision.flamingo import FlamingoLayer, FlamingoVLM
from torch.utils.flop_counter import FlopCounterMode


def flamingo(every: int = 1, **kw: object) -> tuple[FlamingoVLM, torch.nn.Module]:
    torch.manual_seed(0)
    base = build_model(lm(n_layers=4)).eval()
    reference = build_model(lm(n_layers=4)).eval()
    reference.load_state_dict(base.state_dict())
    cfg = FlamingoConfig.model_validate(
        {"encoder": vit(), "lm": lm(n_layers=4), "cross_every": every, **kw}
    )
    return FlamingoVLM(cfg, lm=base).eval(), reference


def test_gated_blocks_every_n_layers_and_only_they_train() -> None:
    model, _ = flamingo(every=2)
    wrapped = [i for i, b in enumerate(model.lm.blocks) if isinstance(b, FlamingoLayer)]
    assert wrapped == [0, 2]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".xattn." in n for n in trainable)


def test_closed_gates_leave_the_frozen_lm_unchanged_bit_for_bit() -> None:
    model, reference = flamingo()
    ids = torch.randint(1, 38, (2, 9))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model(ids, images=images).logits
        theirs = reference(ids).logits
    assert torch.equal(ours, theirs)
    # one training step opens the gates; then the image changes the output
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model(ids, images=images).logits.logsumexp(-1).mean()
    loss.backward()
    assert all(float(b.xattn.attn_gate.grad.abs()) > 0 for b in model.lm.blocks)
    opt.step()
    model.eval()
    with torch.no_grad():
        a = model(ids, images=images).logits
        b = model(ids, images=images.flip(0)).logits
    assert not torch.equal(a, theirs) and not torch.allclose(a, b)
    # the LM's own weights did not move
    base = {k: v for k, v in model.lm.state_dict().items() if ".xattn." not in k}
    ref = reference.state_dict()
    assert all(torch.equal(v, ref[k.replace(".block.", ".")]) for k, v in base.items())


def _opened() -> FlamingoVLM:
    model, _ = flamingo()
    with torch.no_grad():
        for b in model.lm.blocks:
            b.xattn.attn_gate.fill_(1.0)
            b.xattn.ffn_gate.fill_(1.0)
    return model


def test_generation_caches_image_kv_same_tokens_fewer_flops() -> None:
    model = _opened()
    images = torch.randn(2, 3, 32, 32)
    prompts = [[1, 5, 6], [1, 7]]

    def run(cache_cross: bool):
        model.new_cache = lambda max_len=None: KVCache(4, max_len or 64, cache_cross=cache_cross)  # type: ignore[method-assign]
        counter = FlopCounterMode(display=False)
        with counter:
            out = generate(
                model, prompts, SamplingConfig(max_new_tokens=6), pad_id=0, context=images
            )
        return out.tokens, counter.get_total_flops()

    cached, f_cached = run(True)
    recomputed, f_recomputed = run(False)
    assert cached.tolist() == recomputed.tolist()
    assert f_cached < f_recomputed
    # and cached decoding equals full forwards over the growing sequence
    for row in range(2):
        seq = list(prompts[row])
        with torch.no_grad():
            for _ in range(6):
                logits = model(torch.tensor([seq]), images=images[row : row + 1]).logits
                seq.append(int(logits[0, -1].argmax()))
        assert cached[row].tolist() == seq[len(prompts[row]) :]


def test_missing_images_is_a_clear_error() -> None:
    model, _ = flamingo()
    import pytest

    with pytest.raises(ValueError, match="needs images"):
        model(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="2 images for 1 prompts"):
        model(torch.tensor([[1, 2]]), images=torch.randn(2, 3, 32, 32))
