"""Conformance of a positional encoding (kind ``positional``): ``PositionalConformance``.

A model builds its positional encoding with ``BuildContext(d_model, max_seq_len,
extra={"head_dim": ...})`` and uses it by type (``splice.models.common.build_positions``):

- an ``AdditivePositional`` (``forward(positions (B, T)) -> (B, T, D)``) is added to the
  token embeddings;
- a ``RotaryEmbedding`` rotates queries and keys inside attention: the model computes
  ``cos_sin(positions)`` once per forward and attention calls ``rotate(q, k, positions,
  cos_sin)`` or ``rotate_heads(x (B, n, T, d), positions, cos_sin)``;
- a ``NoPositional`` adds nothing. Anything else is silently dropped by the model.

Subclass the suite and define ``make_config()``; it checks, with real tensors:

- the built module is one of the three types above;
- shapes and dtypes (float32 and bfloat16 for rotary), finite values;
- position dependence: no two positions get the same encoding (rotation);
- a position's encoding depends on that position alone: not on the sequence length, the
  offset of the window, or the other rows of the batch (left-padded rows included);
- rotary: a rotation (norms kept), relative (``<R_m q, R_n k>`` depends on ``m - n``
  only), and ``rotate``, ``rotate_heads`` and the precomputed ``cos_sin`` path agree;
- gradients reach every parameter, every tensor is a parameter or buffer, the state dict
  round-trips through safetensors, two seeded builds agree, the config round-trips
  through JSON and every config field changes the encoding.

Every failure names the encoding's tag, plugin and module.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from splice.interfaces import BuildContext
from splice.nn.positional import AdditivePositional, NoPositional, RotaryEmbedding
from splice.testing import checks, wiring
from splice.testing.naming import NamedConformance
from splice.testing.specs import KindSpec, Probe, Result, register_spec


class PositionalSpec(KindSpec):
    """Additive: ``module(positions (B, T)) -> (B, T, D)``. Rotary: a ``(B, 2, T, head_dim)``
    input rotated by ``rotate_heads`` with the precomputed ``cos_sin``, as a model does."""

    kind = "positional"

    def probe(self, module, config, ctx, *, batch, seq_len, dtype, generator):  # type: ignore[no-untyped-def]
        positions = torch.arange(seq_len).expand(batch, seq_len)
        if isinstance(module, RotaryEmbedding):
            x = torch.randn(batch, 2, seq_len, module.head_dim, generator=generator).to(dtype)
            x.requires_grad_()
            return Probe(args=(x, positions), grad_inputs={"x": x})
        return Probe(args=(positions,))

    def run(self, module: nn.Module, probe: Probe) -> Result:
        if isinstance(module, RotaryEmbedding):
            x, positions = probe.args
            return Result(module.rotate_heads(x, positions, module.cos_sin(positions)))
        return Result(module(*probe.args))


register_spec(PositionalSpec())


def _encode(module: nn.Module, positions: Tensor, x: Tensor | None = None) -> Tensor:
    """Additive: ``(B, T, D)``. Rotary: ``x (B, n, T, d)`` rotated (``x`` defaults to ones,
    so the result is the rotation itself)."""
    if isinstance(module, RotaryEmbedding):
        if x is None:
            x = torch.ones(positions.shape[0], 1, positions.shape[1], module.head_dim)
        return module.rotate_heads(x, positions, module.cos_sin(positions))
    return module(positions)  # type: ignore[no-any-return]


def _per_position(out: Tensor, rotary: bool) -> Tensor:
    """``(B, T, ...)`` with the position axis second (rotary outputs are ``(B, n, T, d)``)."""
    return out.transpose(1, 2) if rotary else out


class PositionalConformance(NamedConformance):
    """The checks of one registered positional encoding; define ``make_config()``.

    Knobs:
        make_context(): the ``BuildContext`` (``extra["head_dim"]`` sizes a rotary one).
        config_fields_exempt: fields that cannot change the encoding here (say why).
        atol: tolerance of the equalities (float32).
    """

    kind: ClassVar[str] = "positional"
    config_fields_exempt: ClassVar[tuple[str, ...]] = ()
    unregistered_tensors_allowed: ClassVar[tuple[str, ...]] = ()
    atol: ClassVar[float] = 1e-5

    def make_context(self) -> BuildContext:
        return BuildContext(d_model=16, max_seq_len=32, extra={"head_dim": 8})

    def build(self) -> nn.Module:
        module = checks.build_seeded(self.make_config(), self.make_context(), kind=self.kind)
        return checks.perturb_parameters(module).eval()

    def _encoding(self) -> nn.Module:
        """The built module, skipping the test for ``NoPositional`` (it encodes nothing)."""
        module = self.build()
        if isinstance(module, NoPositional):
            import pytest

            pytest.skip("NoPositional adds nothing (the model skips it)")
        return module

    # -- the tests -----------------------------------------------------------
    def test_is_a_type_the_model_uses(self) -> None:
        module = self.build()
        assert isinstance(module, AdditivePositional | RotaryEmbedding), (
            f"the factory built a {type(module).__name__}; a model uses only an "
            "AdditivePositional (added to the embeddings), a RotaryEmbedding (handed to "
            "attention) or a NoPositional, and silently drops anything else"
        )

    def test_output_shape_dtype_and_values(self) -> None:
        module, ctx = self._encoding(), self.make_context()
        positions = torch.arange(7).expand(3, 7)
        if isinstance(module, RotaryEmbedding):
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.randn(3, 2, 7, module.head_dim).to(dtype)
                out = _encode(module, positions, x)
                assert out.shape == x.shape and out.dtype == dtype, (
                    f"rotating {tuple(x.shape)} {dtype} gave {tuple(out.shape)} {out.dtype}"
                )
                assert torch.isfinite(out).all(), "non-finite rotated values"
            return
        out = module(positions)
        assert tuple(out.shape) == (3, 7, ctx.d_model), (
            f"positions (3, 7) gave {tuple(out.shape)}; expected (3, 7, {ctx.d_model})"
        )
        assert out.is_floating_point() and torch.isfinite(out).all(), (
            f"the encoding must be finite floats, got {out.dtype}"
        )

    def test_positions_are_told_apart(self) -> None:
        module = self._encoding()
        n = self.make_context().max_seq_len
        rotary = isinstance(module, RotaryEmbedding)
        table = _per_position(_encode(module, torch.arange(n)[None]), rotary)[0]  # (T, ...)
        table = table.reshape(n, -1).float()
        dist = torch.cdist(table, table) + torch.eye(n) * 1e9
        i, j = divmod(int(dist.argmin()), n)
        assert dist.min() > self.atol, (
            f"positions {i} and {j} get the same encoding (distance {dist.min().item():.3g}): "
            "the model could not tell them apart"
        )

    def test_a_position_is_encoded_alone(self) -> None:
        module = self._encoding()
        rotary = isinstance(module, RotaryEmbedding)
        g = torch.Generator().manual_seed(0)
        x = None
        if rotary:
            x = torch.randn(1, 2, 12, module.head_dim, generator=g)  # type: ignore[arg-type]
        with torch.no_grad():
            full = _per_position(_encode(module, torch.arange(12)[None], x), rotary)
            short = _per_position(
                _encode(module, torch.arange(5)[None], None if x is None else x[:, :, :5]), rotary
            )
            shifted = _per_position(
                _encode(module, torch.arange(4, 12)[None], None if x is None else x[:, :, 4:]),
                rotary,
            )
            # Row 0 left-padded (positions counted over real tokens, 0 under the padding).
            mixed_pos = torch.stack([torch.tensor([0] * 4 + list(range(8))), torch.arange(12)])
            mixed_x = (
                None if x is None else torch.cat([torch.cat([x[:, :, :4], x[:, :, :8]], 2), x])
            )
            mixed = _per_position(_encode(module, mixed_pos, mixed_x), rotary)
        for what, got, want in (
            ("a length-5 sequence vs the first 5 of a length-12 one", short, full[:, :5]),
            ("positions 4..11 alone vs inside 0..11", shifted, full[:, 4:]),
            ("a left-padded row next to a full row vs alone", mixed[:1, 4:], full[:, :8]),
            ("a full row next to a left-padded row vs alone", mixed[1:], full),
        ):
            diff = (got - want).abs().max().item()
            assert diff <= self.atol, (
                f"{what}: the encodings differ by {diff:.3g} (a position's encoding must "
                "depend on that position alone, not on the length, offset or other rows)"
            )

    def test_rotary_is_a_relative_rotation(self) -> None:
        module = self._encoding()
        if not isinstance(module, RotaryEmbedding):
            import pytest

            pytest.skip("not a rotary encoding")
        g = torch.Generator().manual_seed(1)
        d = module.head_dim
        q, k = torch.randn(1, 1, 1, d, generator=g), torch.randn(1, 1, 1, d, generator=g)

        def at(x: Tensor, p: int) -> Tensor:
            return _encode(module, torch.tensor([[p]]), x)

        with torch.no_grad():
            norm = (at(q, 5).norm() - q.norm()).abs().item()
            assert norm <= self.atol * 10, f"rotating changes a vector's norm by {norm:.3g}"
            for m, n, s in ((3, 1, 4), (0, 6, 5), (7, 7, 2)):
                a = (at(q, m) * at(k, n)).sum()
                b = (at(q, m + s) * at(k, n + s)).sum()
                assert torch.allclose(a, b, atol=self.atol * 10), (
                    f"<R_{m} q, R_{n} k> = {a.item():.5f} but <R_{m + s} q, R_{n + s} k> = "
                    f"{b.item():.5f}: the score must depend on the offset {m - n} only"
                )

    def test_rotary_paths_agree(self) -> None:
        module = self._encoding()
        if not isinstance(module, RotaryEmbedding):
            import pytest

            pytest.skip("not a rotary encoding")
        g = torch.Generator().manual_seed(2)
        d = module.head_dim
        q, k = torch.randn(2, 4, 6, d, generator=g), torch.randn(2, 2, 6, d, generator=g)
        positions = torch.arange(6).expand(2, 6)
        with torch.no_grad():
            plain = module.rotate(q, k, positions)
            cached = module.rotate(q, k, positions, module.cos_sin(positions))
            heads = module.rotate_heads(torch.cat([q, k], 1), positions, module.cos_sin(positions))
        for what, got in (
            ("rotate with the precomputed cos_sin", cached),
            ("rotate_heads of q and k side by side", (heads[:, :4], heads[:, 4:])),
        ):
            diff = max((a - b).abs().max().item() for a, b in zip(got, plain))
            assert diff <= self.atol, (
                f"{what} differs from rotate(q, k, positions) by {diff:.3g} (models compute "
                "cos_sin once per forward and attention calls rotate or rotate_heads)"
            )

    def test_gradients_reach_every_parameter(self) -> None:
        module = self._encoding()
        trains = any(p.requires_grad for p in module.parameters())
        if not trains and not isinstance(module, RotaryEmbedding):
            import pytest

            pytest.skip("a fixed additive encoding: no parameter, no floating input")
        checks.check_gradients(self.make_config(), self.make_context(), kind=self.kind)

    def test_every_tensor_is_a_parameter_or_buffer(self) -> None:
        wiring.check_parameters_registered(
            self.make_config(),
            self.make_context(),
            kind=self.kind,
            allow=self.unregistered_tensors_allowed,
        )

    def test_state_dict_roundtrips_through_safetensors(self, tmp_path: Any) -> None:
        self._encoding()
        checks.check_state_dict_roundtrip(
            self.make_config(), self.make_context(), kind=self.kind, tmp_dir=tmp_path
        )

    def test_deterministic_under_seed(self) -> None:
        self._encoding()
        checks.check_determinism(self.make_config(), self.make_context(), kind=self.kind)

    def test_config_roundtrips_through_json(self) -> None:
        checks.check_config_roundtrip(self.make_config(), kind=self.kind)

    def test_config_fields_are_honoured(self) -> None:
        self._encoding()
        wiring.check_config_fields_honoured(
            self.make_config(),
            self.make_context(),
            kind=self.kind,
            exempt=self.config_fields_exempt,
        )


__all__ = ["PositionalConformance", "PositionalSpec"]
