"""Conformance of a non-text encoder (kind ``encoder``): ``EncoderConformance``.

An encoder feeds a connector (splice-vision's LLaVA/Flamingo models build one from
``config.encoder``). What those models rely on, and the suite checks with real tensors:

- ``encoder(images (B, C, H, W)) -> features (B, N, D)`` with ``D = config.d_model`` and
  ``N = encoder.tokens_per_image`` where it has one (else ``config.n_patches +
  encoder.n_prefix``, what a VLM reads), finite, in the input's dtype (float32, bfloat16);
  the probe images are ``(B, config.in_channels, config.image_size, config.image_size)``
  (an encoder config has these fields, as ``ViTConfig`` does);
- a row's features do not depend on the other images of the batch (on perturbed weights,
  so a zero-initialised part cannot hide a leak);
- ``encode(images)``, where it exists beside ``pooled``, equals ``pooled(encoder(images))``;
- gradients reach the images and every parameter; every tensor is a parameter or buffer;
  the state dict round-trips through safetensors; two seeded builds agree; the config
  round-trips through JSON; every config field changes the parameters or the features.

Every failure names the encoder's tag, plugin and module.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from splice.testing import checks, wiring
from splice.testing.naming import NamedConformance
from splice.testing.specs import KindSpec, Probe, Result, register_spec


def encoder_images(config: Any, batch: int, generator: torch.Generator) -> Tensor:
    """``(B, config.in_channels, config.image_size, config.image_size)`` random images."""
    for name in ("in_channels", "image_size"):
        if not hasattr(config, name):
            raise AssertionError(
                f"encoder config {type(config).__name__} has no {name!r}: the suite makes "
                "images from in_channels and image_size"
            )
    size = int(config.image_size)
    return torch.randn(batch, int(config.in_channels), size, size, generator=generator)


class EncoderSpec(KindSpec):
    """``encoder(images (B, C, H, W)) -> (B, N, config.d_model)``."""

    kind = "encoder"

    def probe(self, module, config, ctx, *, batch, seq_len, dtype, generator):  # type: ignore[no-untyped-def]
        images = encoder_images(config, batch, generator).to(dtype).requires_grad_()
        return Probe(args=(images,), grad_inputs={"images": images})

    def result(self, out, probe):  # type: ignore[no-untyped-def]
        return Result(out)


register_spec(EncoderSpec())


def tokens_of(encoder: nn.Module, config: Any) -> int:
    """The feature count a VLM expects: ``tokens_per_image``, else ``n_patches + n_prefix``."""
    if hasattr(encoder, "tokens_per_image"):
        return int(encoder.tokens_per_image)
    return int(config.n_patches) + int(getattr(encoder, "n_prefix", 0))


class EncoderConformance(NamedConformance):
    """The checks of one registered encoder; define ``make_config()``.

    Knobs:
        dtypes: dtypes the shape check runs in.
        may_skip: ``fnmatch`` patterns of parameters allowed no gradient on a tiny batch.
        config_fields_exempt: fields that cannot change the features (say why).
        atol: tolerance of the batch-composition check.
    """

    kind: ClassVar[str] = "encoder"
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16)
    may_skip: ClassVar[tuple[str, ...]] = ()
    config_fields_exempt: ClassVar[tuple[str, ...]] = ()
    unregistered_tensors_allowed: ClassVar[tuple[str, ...]] = ()
    atol: ClassVar[float] = 1e-5

    def make_images(self, batch: int, seed: int) -> Tensor:
        return encoder_images(self.make_config(), batch, torch.Generator().manual_seed(seed))

    def build(self) -> nn.Module:
        return checks.build_seeded(self.make_config(), None, kind=self.kind)

    # -- the tests -----------------------------------------------------------
    def test_features_shape_dtype_and_values(self) -> None:
        config = self.make_config()
        for dtype in self.dtypes:
            encoder = self.build().to(dtype).eval()
            images = self.make_images(2, seed=0).to(dtype)
            with torch.no_grad():
                out = encoder(images)
            want = (2, tokens_of(encoder, config), int(config.d_model))
            assert isinstance(out, Tensor) and tuple(out.shape) == want, (
                f"images {tuple(images.shape)} gave {tuple(getattr(out, 'shape', ())) or out!r}; "
                f"expected {want} (batch, tokens_per_image, config.d_model)"
            )
            assert out.dtype == dtype, f"{dtype} images and weights gave {out.dtype} features"
            assert torch.isfinite(out).all(), f"non-finite features in {dtype}"

    def test_a_row_is_independent_of_the_batch(self) -> None:
        encoder = checks.perturb_parameters(self.build()).eval()
        images = self.make_images(3, seed=1)
        with torch.no_grad():
            alone = encoder(images[:1])
            together = encoder(images)[:1]
            flipped = encoder(images.flip(0))[2:]
        for where, got in (("first of three", together), ("last of three", flipped)):
            diff = (got - alone).abs().max().item()
            assert diff <= self.atol, (
                f"an image's features change by {diff:.3g} as the {where} images compared "
                "with alone (the encoder mixes information across the batch: no batch "
                "statistics at inference)"
            )

    def test_encode_is_the_pooled_features(self) -> None:
        encoder = checks.perturb_parameters(self.build()).eval()
        if not (hasattr(encoder, "encode") and hasattr(encoder, "pooled")):
            import pytest

            pytest.skip("no encode/pooled pair")
        images = self.make_images(2, seed=2)
        with torch.no_grad():
            fast, slow = encoder.encode(images), encoder.pooled(encoder(images))
        diff = (fast - slow).abs().max().item()
        assert fast.shape == slow.shape and diff <= 1e-4, (
            f"encode(images) {tuple(fast.shape)} differs from pooled(encoder(images)) "
            f"{tuple(slow.shape)} by {diff:.3g}"
        )

    def test_gradients_reach_images_and_parameters(self) -> None:
        checks.check_gradients(self.make_config(), None, kind=self.kind, may_skip=self.may_skip)

    def test_every_tensor_is_a_parameter_or_buffer(self) -> None:
        wiring.check_parameters_registered(
            self.make_config(), None, kind=self.kind, allow=self.unregistered_tensors_allowed
        )

    def test_state_dict_roundtrips_through_safetensors(self, tmp_path: Any) -> None:
        checks.check_state_dict_roundtrip(
            self.make_config(), None, kind=self.kind, tmp_dir=tmp_path
        )

    def test_deterministic_under_seed(self) -> None:
        checks.check_determinism(self.make_config(), None, kind=self.kind)

    def test_config_roundtrips_through_json(self) -> None:
        checks.check_config_roundtrip(self.make_config(), kind=self.kind)

    def test_config_fields_are_honoured(self) -> None:
        wiring.check_config_fields_honoured(
            self.make_config(), None, kind=self.kind, exempt=self.config_fields_exempt
        )


__all__ = ["EncoderConformance", "EncoderSpec", "encoder_images", "tokens_of"]
