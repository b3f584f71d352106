"""The last block run at the read-out token only (``splice_vision.rows``): the same values
and gradients as the whole block, for the ViT's class token and the text tower's end-of-text
token (bidirectional, causal, causal + padding), and a whole-block fallback."""

from __future__ import annotations

import copy

import pytest
import torch
from splice.interfaces import AttentionInputs, BuildContext
from splice_vision._build import build
from splice_vision.configs import TextEncoderConfig, ViTConfig
from splice_vision.rows import block_rows
from splice_vision.text import TextEncoder
from splice_vision.vit import ViT


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(a: torch.nn.Module, b: torch.nn.Module) -> None:
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys() and len(ga) == len(list(a.parameters()))
    for name in ga:
        torch.testing.assert_close(
            ga[name], gb[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("n_layers", [1, 3])
def test_vit_encode_equals_pooled_features_with_gradients(n_layers: int) -> None:
    torch.manual_seed(0)
    vit = ViT(ViTConfig(patch_size=8, d_model=32, n_heads=4, n_layers=n_layers, pre_norm=True))
    ref = copy.deepcopy(vit)
    img = torch.randn(3, 3, 32, 32)
    got = vit.encode(img)
    want = ref.pooled(ref(img))
    assert got.shape == (3, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    w = torch.randn(3, 32)
    (got * w).sum().backward()
    (want * w).sum().backward()
    _assert_same_grads(vit, ref)  # every parameter, the last block's too


def test_vit_encode_with_mean_pooling_runs_every_position() -> None:
    torch.manual_seed(0)
    vit = ViT(ViTConfig(d_model=32, n_heads=4, pool="mean", class_token=False)).eval()
    img = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(vit.encode(img), vit(img).mean(dim=1), rtol=0, atol=0)


def _full_text(enc: TextEncoder, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The text tower as a whole decoder: every position through every block, then pick."""
    b, t = ids.shape
    hidden = enc.lm(
        ids, attention_mask=mask, positions=torch.arange(t).expand(b, t), return_logits=False
    ).hidden  # (B, T, D)
    return hidden[torch.arange(b), enc.eot_positions(ids)]


@pytest.mark.parametrize("case", ["eot_last", "argmax_mid", "eos_and_padding", "short_texts"])
def test_text_tower_equals_the_whole_decoder_with_gradients(case: str) -> None:
    torch.manual_seed(0)
    eos = 2 if case in ("eos_and_padding", "short_texts") else None
    enc = TextEncoder(
        TextEncoderConfig(vocab_size=40, d_model=32, n_heads=4, n_layers=2, eos_token_id=eos)
    )
    ref = copy.deepcopy(enc)
    ids = torch.randint(3, 30, (3, 7))
    mask = None
    if case == "eot_last":  # every row's end-of-text is the last token: no key mask needed
        ids[:, -1] = 39
    elif case == "argmax_mid":  # end-of-text at different positions: causal row masks
        ids[0, 2], ids[1, 6], ids[2, 4] = 39, 39, 39
    elif case == "eos_and_padding":  # the first eos, then padding after it
        ids[0, 3], ids[1, 6], ids[2, 1] = 2, 2, 2
        mask = (torch.arange(7) <= (ids == 2).int().argmax(1, keepdim=True)).long()
    else:  # every text ends by position 3: the tower runs on 4 of the 7 positions
        ids[0, 3], ids[1, 1], ids[2, 2] = 2, 2, 2
        ids[:, 4:] = 0
        mask = (torch.arange(7) <= (ids == 2).int().argmax(1, keepdim=True)).long()
    lengths: list[int] = []
    enc.lm.blocks[0].register_forward_pre_hook(lambda m, a: lengths.append(a[0].shape[1]))
    got, want = enc(ids, mask), _full_text(ref, ids, mask)
    assert lengths == [4 if case == "short_texts" else 7]  # padding after the last eot skipped
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    w = torch.randn_like(got)
    (got * w).sum().backward()
    (want * w).sum().backward()
    _assert_same_grads(enc.lm.blocks, ref.lm.blocks)


def test_other_blocks_run_whole_and_the_rows_are_picked() -> None:
    torch.manual_seed(0)
    config = ViTConfig(d_model=16, n_heads=2).block_config() | {"type": "post_norm"}
    block = build("block", config, BuildContext(d_model=16, max_seq_len=8, causal=False))
    x = torch.randn(2, 5, 16)
    inputs = AttentionInputs(positions=torch.arange(5).expand(2, 5), is_causal=False)
    index = torch.tensor([4, 1])
    want = block(x, inputs)[torch.arange(2), index]
    torch.testing.assert_close(block_rows(block, x, inputs, index), want, rtol=0, atol=0)
