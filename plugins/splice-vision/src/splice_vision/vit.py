"""The Vision Transformer: conv patch embedding, class token, positions, core blocks.

``image (B, C, H, W) -> patches (B, N, D) -> [cls] + patches (B, 1 + N, D) + positions
-> [ln_pre] -> n_layers x pre-norm block (bidirectional) -> final norm``.
The blocks are the core's ``pre_norm`` block with splice-mha's attention, built through
the registry, so anything registered there (another token mixer, an adapter) applies.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from splice.interfaces import AttentionInputs, BuildContext
from torch import Tensor, nn

from splice_vision._build import build, layer_norm
from splice_vision.configs import ViTConfig
from splice_vision.rows import block_rows


class PatchEmbedding(nn.Module):
    """``(B, C, H, W) -> (B, N, D)``: a conv whose kernel and stride are the patch size."""

    def __init__(self, patch_size: int, in_channels: int, d_model: int, *, bias: bool) -> None:
        super().__init__()
        self.patch_size, self.in_channels = patch_size, in_channels
        self.proj = nn.Conv2d(in_channels, d_model, patch_size, stride=patch_size, bias=bias)

    def check(self, images: Tensor) -> None:
        """Raise ValueError naming both sizes for a wrong rank, channel count or image size."""
        if images.dim() != 4:
            raise ValueError(
                f"images must be (B, C, H, W), got {images.dim()} dims {tuple(images.shape)}"
            )
        c, h, w = images.shape[1:]
        if c != self.in_channels:
            raise ValueError(f"images have {c} channels, the encoder expects {self.in_channels}")
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {self.patch_size}"
            )

    def forward(self, images: Tensor) -> Tensor:
        self.check(images)
        return self.proj(images).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D)


def sincos_2d(grid_h: int, grid_w: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine positions ``(grid_h * grid_w, dim)`` (MAE, row-major patches).

    A quarter of the channels each: ``sin``/``cos`` of the column, ``sin``/``cos`` of the row,
    at frequencies ``1 / 10000^(i / (dim/4))``.
    """
    if dim % 4:
        raise ValueError(f"2-D sincos positions need d_model divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    x = xs.reshape(-1, 1) * omega  # (N, dim/4)
    y = ys.reshape(-1, 1) * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


def interpolate_grid(pos: Tensor, old: tuple[int, int], new: tuple[int, int]) -> Tensor:
    """Resize learned grid positions ``(h*w, D)`` to ``(h'*w', D)``, bicubic (as HF and timm)."""
    if old == new:
        return pos
    d = pos.shape[-1]
    grid = pos.reshape(1, old[0], old[1], d).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], d)


class ViT(nn.Module):
    """``images (B, C, H, W) -> features (B, [1 +] N, D)`` (see ``ViTConfig``).

    Any image size divisible by the patch size is accepted: learned positions are
    interpolated to the new grid, sincos positions recomputed for it.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.grid = (config.image_size // config.patch_size,) * 2
        self.patch = PatchEmbedding(config.patch_size, config.in_channels, d, bias=config.conv_bias)
        self.cls = nn.Parameter(torch.randn(d) * 0.02) if config.class_token else None
        n_tokens = config.n_patches + int(config.class_token)
        self.pos = (
            nn.Parameter(torch.randn(n_tokens, d) * 0.02) if config.positions == "learned" else None
        )
        self.norm_pre = layer_norm(d, config.norm_eps) if config.pre_norm else None
        ctx = BuildContext(d_model=d, max_seq_len=n_tokens, n_layers=config.n_layers, causal=False)
        self.blocks = nn.ModuleList(
            build("block", config.block_config(), replace(ctx, layer_idx=i))
            for i in range(config.n_layers)
        )
        self.norm = layer_norm(d, config.norm_eps)
        for m in self.blocks.modules():  # ViT init: truncated normal 0.02, zero biases
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def n_prefix(self) -> int:
        """Tokens before the patches (the class token)."""
        return int(self.cls is not None)

    def positions(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        """``([1 +] N, D)`` position vectors for a ``grid`` of patches."""
        d = self.config.d_model
        if self.pos is None:
            pos = sincos_2d(*grid, d).to(device)
            if self.cls is not None:  # the class token gets the zero vector
                pos = torch.cat([pos.new_zeros(1, d), pos])
            return pos
        if grid == self.grid:  # the trained size: the parameter itself (no copy)
            return self.pos
        prefix, patches = self.pos[: self.n_prefix], self.pos[self.n_prefix :]
        return torch.cat([prefix, interpolate_grid(patches, self.grid, grid)])

    def embed(self, images: Tensor) -> Tensor:
        """Patch embeddings with the class token and positions: ``(B, [1 +] N, D)``."""
        x = self.patch(images)  # (B, N, D)
        b = x.shape[0]
        grid = (
            images.shape[2] // self.config.patch_size,
            images.shape[3] // self.config.patch_size,
        )
        if self.cls is not None:
            x = torch.cat([self.cls.expand(b, 1, -1).to(x.dtype), x], dim=1)
        return x + self.positions(grid, x.device).to(x.dtype)

    def forward(self, images: Tensor, *, hidden_layer: int | None = None) -> Tensor:
        """Encode images.

        Args:
            images: ``(B, C, H, W)``; H and W divisible by the patch size.
            hidden_layer: return the (un-normed) output of this block instead of the final
                normed features (LLaVA reads the penultimate layer: ``-2``).

        Returns:
            ``(B, [1 +] N, D)``.
        """
        x, inputs = self._start(images)
        stop = len(self.blocks) if hidden_layer is None else hidden_layer % len(self.blocks) + 1
        for block in self.blocks[:stop]:
            x = block(x, inputs)
        return x if hidden_layer is not None else self.norm(x)  # type: ignore[no-any-return]

    def _start(self, images: Tensor) -> tuple[Tensor, AttentionInputs]:
        """The first block's input ``(B, [1 +] N, D)`` and the (bidirectional) attention inputs."""
        x = self.embed(images)
        if self.norm_pre is not None:
            x = self.norm_pre(x)
        b, t, _ = x.shape
        inputs = AttentionInputs(
            positions=torch.arange(t, device=x.device).expand(b, t), is_causal=False
        )
        return x, inputs

    def pooled(self, features: Tensor) -> Tensor:
        """``(B, [1 +] N, D) -> (B, D)``: the class token, or the mean of the patch tokens."""
        if self.config.pool == "cls":
            return features[:, 0]
        return features[:, self.n_prefix :].mean(dim=1)

    def encode(self, images: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, D)``: the same values as ``pooled(self(images))``.

        With class-token pooling the last block runs only at the class token (its keys and
        values still come from every patch; see ``splice_vision.rows``): the other
        positions' outputs would be thrown away.
        """
        if self.config.pool != "cls":
            return self.pooled(self(images))
        x, inputs = self._start(images)
        for block in self.blocks[:-1]:
            x = block(x, inputs)
        cls = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.norm(block_rows(self.blocks[-1], x, inputs, cls))  # type: ignore[no-any-return]

    @property
    def tokens_per_image(self) -> int:
        return self.config.n_patches + self.n_prefix


def build_vit(config: ViTConfig, ctx: object = None) -> ViT:
    return ViT(config)


__all__ = ["PatchEmbedding", "ViT", "build_vit", "interpolate_grid", "sincos_2d"]
