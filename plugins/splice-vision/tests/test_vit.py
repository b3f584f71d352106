"""ViT: patch embedding, class token, positions (learned / 2-D sincos), interpolation,
bad input, and parity with transformers' ViTModel loaded from a checkpoint."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from splice.registry import get_registry
from splice_vision.configs import ViTConfig
from splice_vision.vit import ViT, interpolate_grid, sincos_2d


def small(**kw: object) -> ViT:
    torch.manual_seed(0)
    return ViT(ViTConfig(d_model=32, n_heads=4, n_layers=2, **kw)).eval()  # type: ignore[arg-type]


def test_shapes_and_registry_build() -> None:
    vit = get_registry().build("encoder", ViTConfig(d_model=32, n_heads=4))
    assert isinstance(vit, ViT)
    out = vit(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1 + 64, 32)
    assert vit.pooled(out).shape == (2, 32)
    # blocks are the core's pre-norm block with splice-mha attention
    assert type(vit.blocks[0]).__name__ == "PreNormBlock"
    assert type(vit.blocks[0].mixer).__name__ == "MultiHeadAttention"


def test_patch_embedding_is_a_strided_conv() -> None:
    vit = small(patch_size=8)
    img = torch.randn(1, 3, 32, 32)
    patches = vit.patch(img)  # (1, 16, 32)
    # patch (row 1, col 2) equals the conv kernel applied to that 8x8 window
    window = img[0, :, 8:16, 16:24]
    expect = (vit.patch.proj.weight * window).sum(dim=(1, 2, 3)) + vit.patch.proj.bias
    torch.testing.assert_close(patches[0, 1 * 4 + 2], expect, rtol=1e-5, atol=1e-5)


def test_attention_is_bidirectional() -> None:
    vit = small(patch_size=8)
    img = torch.randn(1, 3, 32, 32)
    out = vit(img)
    img2 = img.clone()
    img2[..., 24:, 24:] += 1.0  # changes only the last patch
    out2 = vit(img2)
    assert not torch.allclose(out[0, 0], out2[0, 0])  # the class token (first) sees the last patch


def test_sincos_positions_are_fixed_and_distinct() -> None:
    pos = sincos_2d(4, 4, 32)
    assert pos.shape == (16, 32)
    assert torch.cdist(pos, pos).add(torch.eye(16)).min() > 0.1  # all cells distinct
    vit = small(positions="sincos")
    assert vit.pos is None and not any("pos" in n for n, _ in vit.named_parameters())
    torch.testing.assert_close(vit.positions((8, 8), torch.device("cpu"))[1:], sincos_2d(8, 8, 32))
    assert vit(torch.randn(1, 3, 48, 48)).shape == (1, 1 + 144, 32)


def test_learned_positions_interpolate_to_another_size() -> None:
    vit = small(patch_size=8)  # 4x4 grid
    pos = vit.positions((6, 6), torch.device("cpu"))
    assert pos.shape == (1 + 36, 32)
    torch.testing.assert_close(pos[0], vit.pos[0])  # class token position kept
    same = interpolate_grid(vit.pos[1:], (4, 4), (4, 4))
    assert same is vit.pos[1:] or torch.equal(same, vit.pos[1:])
    # a constant grid stays constant under bicubic resizing
    const = torch.ones(16, 5)
    torch.testing.assert_close(interpolate_grid(const, (4, 4), (7, 7)), torch.ones(49, 5))
    assert vit(torch.randn(1, 3, 48, 48)).shape == (1, 37, 32)


def test_bad_input_names_both_sizes() -> None:
    vit = small(patch_size=8)
    with pytest.raises(ValueError, match=r"image size 30x32 is not divisible by the patch size 8"):
        vit(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"images have 1 channels, the encoder expects 3"):
        vit(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValidationError, match=r"image_size=30 is not divisible by patch_size=4"):
        ViTConfig(image_size=30, patch_size=4)


def test_gradients_reach_every_parameter() -> None:
    vit = small(patch_size=8)
    vit.train()
    vit.pooled(vit(torch.randn(2, 3, 32, 32))).sum().backward()
    assert all(p.grad is not None for p in vit.parameters())


def _hf_vit(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    hf = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # random, non-trivial values everywhere (HF inits some to 0/1)
        for p in hf.parameters():
            p.normal_(0, 0.1)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    return hf


def test_hf_vit_parity(tmp_path) -> None:
    from splice_vision.interop import load_hf_vit

    hf = _hf_vit(tmp_path)
    ours = load_hf_vit(tmp_path).eval()
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=img).last_hidden_state
        got = ours(img)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
        # position interpolation to 48x48 matches transformers' interpolate_pos_encoding
        big = torch.randn(1, 3, 48, 48)
        ref_big = hf(pixel_values=big, interpolate_pos_encoding=True).last_hidden_state
        torch.testing.assert_close(ours(big), ref_big, rtol=0, atol=1e-4)
