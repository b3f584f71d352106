"""Pytest-friendly conformance suites: subclass one, define ``make_config()``, done.

Example (a plugin's ``tests/test_conformance.py``)::

    from splice.interfaces import BuildContext
    from splice.testing import CachedTokenMixerConformance
    from splice_mha.configs import MHAConfig

    class TestMHA(CachedTokenMixerConformance):
        def make_config(self):
            return MHAConfig(n_heads=4, n_kv_heads=2)

        def make_context(self):
            return BuildContext(d_model=16, max_seq_len=32)

The base classes are not named ``Test*`` so pytest collects only subclasses.
No pytest import is needed: ``tmp_path`` is requested by argument name.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from splice.interfaces import BuildContext
from splice.testing import checks, isolation, wiring
from splice.testing.checks import PositionMixing
from splice.testing.naming import NamedConformance


class ConformanceSuite(NamedConformance):
    """The common tests of every registered component; subclasses set ``kind``.

    Hooks and knobs:
        make_config(): the registered config under test (required).
        make_context(): the ``BuildContext`` to build it with.
        prepare(module): runs after each build (open a zero-init gate, randomise LoRA ``B``).
        dtypes: dtypes the output check runs in (weights and inputs cast).
        may_skip: ``fnmatch`` patterns of parameters allowed no/zero gradient on a tiny batch.
        position_mixing: how outputs may depend on other positions; None derives it
            from the context (``causal`` if ``ctx.causal`` else ``bidirectional``).
        config_fields_exempt: config fields that cannot change a tiny probe's output or
            shapes (say why in a comment); every other field must.
        unregistered_tensors_allowed: attribute paths of tensors deliberately kept outside
            parameters and buffers (e.g. a lazily rebuilt cache).
    """

    kind: ClassVar[str] = ""
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16)
    may_skip: ClassVar[tuple[str, ...]] = ()
    position_mixing: ClassVar[PositionMixing | None] = None
    config_fields_exempt: ClassVar[tuple[str, ...]] = ()
    unregistered_tensors_allowed: ClassVar[tuple[str, ...]] = ()

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def make_context(self) -> BuildContext | None:
        return BuildContext(d_model=16, max_seq_len=32)

    def prepare(self, module: nn.Module) -> None:
        """Called on every freshly built module; the default leaves it as built."""

    def expected_mixing(self, ctx: BuildContext | None) -> PositionMixing:
        if self.position_mixing is not None:
            return self.position_mixing
        return "causal" if ctx is None or ctx.causal else "bidirectional"

    # -- the tests ---------------------------------------------------------
    def test_output_shape_and_dtype(self) -> None:
        for dtype in self.dtypes:
            checks.check_output(
                self.make_config(),
                self.make_context(),
                kind=self.kind,
                dtype=dtype,
                prepare=self.prepare,
            )

    def test_gradients_reach_inputs_and_parameters(self) -> None:
        checks.check_gradients(
            self.make_config(),
            self.make_context(),
            kind=self.kind,
            may_skip=self.may_skip,
            prepare=self.prepare,
        )

    def test_state_dict_roundtrips_through_safetensors(self, tmp_path: Any) -> None:
        checks.check_state_dict_roundtrip(
            self.make_config(),
            self.make_context(),
            kind=self.kind,
            tmp_dir=tmp_path,
            prepare=self.prepare,
        )

    def test_config_roundtrips_through_json(self) -> None:
        checks.check_config_roundtrip(self.make_config(), kind=self.kind)

    def test_deterministic_under_seed(self) -> None:
        checks.check_determinism(
            self.make_config(), self.make_context(), kind=self.kind, prepare=self.prepare
        )

    def test_every_tensor_is_a_parameter_or_buffer(self) -> None:
        wiring.check_parameters_registered(
            self.make_config(),
            self.make_context(),
            kind=self.kind,
            prepare=self.prepare,
            allow=self.unregistered_tensors_allowed,
        )

    def test_config_fields_are_honoured(self) -> None:
        wiring.check_config_fields_honoured(
            self.make_config(),
            self.make_context(),
            kind=self.kind,
            prepare=self.prepare,
            exempt=self.config_fields_exempt,
        )

    def test_position_mixing(self) -> None:
        ctx = self.make_context()
        checks.check_position_mixing(
            self.make_config(),
            ctx,
            kind=self.kind,
            expect=self.expected_mixing(ctx),
            prepare=self.prepare,
        )


class _CacheTest(ConformanceSuite):
    """Adds the KV-cache test: prefill, then one token at a time, equals the full pass."""

    def test_kv_cache_matches_full_pass(self) -> None:
        checks.check_kv_cache(
            self.make_config(), self.make_context(), kind=self.kind, prepare=self.prepare
        )


class _IsolationTest(ConformanceSuite):
    """Adds the isolation checks (``splice.testing.isolation``: packing, left padding, batch
    composition, length) on perturbed weights, for causal and pointwise components;
    skipped, with the reason, for bidirectional ones and cross-attention (whose inputs
    include a context the checks do not model)."""

    def _isolation_context(self) -> BuildContext | None:
        ctx = self.make_context()
        mixing = self.expected_mixing(ctx)
        if self.kind == "model":
            return ctx
        if mixing == "bidirectional" or (ctx is not None and ctx.d_context):
            import pytest

            pytest.skip("not a causal or pointwise self-mixing component")
        return ctx

    def test_a_row_is_independent_of_the_batch(self) -> None:
        ctx = self._isolation_context()
        isolation.check_batch_composition(
            self.make_config(), ctx, kind=self.kind, prepare=self.prepare
        )

    def test_outputs_do_not_depend_on_later_length(self) -> None:
        ctx = self._isolation_context()
        isolation.check_length_consistency(
            self.make_config(), ctx, kind=self.kind, prepare=self.prepare
        )

    def test_packed_documents_do_not_see_each_other(self) -> None:
        ctx = self._isolation_context()
        isolation.check_packing_isolation(
            self.make_config(), ctx, kind=self.kind, prepare=self.prepare
        )

    def test_left_padding_is_invisible(self) -> None:
        ctx = self._isolation_context()
        isolation.check_padding_isolation(
            self.make_config(), ctx, kind=self.kind, prepare=self.prepare
        )


class TokenMixerConformance(_IsolationTest):
    """Attention-like layers (``kind = "token_mixer"``). Use ``CachedTokenMixerConformance``
    for self-attention with a KV cache; set ``position_mixing = "pointwise"`` for
    cross-attention (each query depends only on itself and the context)."""

    kind = "token_mixer"


class CachedTokenMixerConformance(TokenMixerConformance, _CacheTest):
    """Self-attention that reads and extends ``inputs.cache``."""


class ChannelMixerConformance(_IsolationTest):
    """FFN-like layers (``kind = "channel_mixer"``); pointwise by default."""

    kind = "channel_mixer"
    position_mixing: ClassVar[PositionMixing | None] = "pointwise"


class ConnectorConformance(ConformanceSuite):
    """Connectors (``kind = "connector"``): encoder features ``(B, N, D_enc)`` to LM-width
    tokens. Build context: ``BuildContext(d_model=<LM width>, d_context=<encoder width>)``.
    Pointwise by default (projectors); a resampler (Q-Former) sets ``position_mixing =
    "bidirectional"``."""

    kind = "connector"
    position_mixing: ClassVar[PositionMixing | None] = "pointwise"

    def make_context(self) -> BuildContext | None:
        return BuildContext(d_model=16, max_seq_len=32, d_context=12)

    def test_a_row_is_independent_of_the_batch(self) -> None:
        isolation.check_batch_composition(
            self.make_config(), self.make_context(), kind=self.kind, prepare=self.prepare
        )


class NormConformance(_IsolationTest):
    """Normalisation layers (``kind = "norm"``)."""

    kind = "norm"
    position_mixing: ClassVar[PositionMixing | None] = "pointwise"


class BlockConformance(_IsolationTest):
    """Transformer blocks (``kind = "block"``)."""

    kind = "block"


class ModelConformance(_IsolationTest):
    """Language models (``kind = "model"``): ``model(ids) -> ModelOutput``; causal by default."""

    kind = "model"
    # A length limit sizes caches and position tables; within it a forward pass is the same.
    config_fields_exempt: ClassVar[tuple[str, ...]] = ("max_seq_len",)

    def make_context(self) -> BuildContext | None:
        return None


class CachedModelConformance(ModelConformance, _CacheTest):
    """Models with ``new_cache()`` whose cached decoding must equal the full pass."""


def run_suite(suite: Any, tmp_dir: Any = None) -> dict[str, str]:
    """Run every ``test_*`` method of a suite instance outside pytest (a script, a notebook,
    the docs). Returns ``{test name: "passed" | "skipped: reason"}``; a failing check raises
    its ``AssertionError`` naming the problem. ``tmp_dir`` is passed to tests that take
    ``tmp_path`` (a temporary folder is made when None)."""
    import inspect
    import tempfile

    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as default_tmp:
        for name in sorted(n for n in dir(suite) if n.startswith("test_")):
            method = getattr(suite, name)
            kwargs = {}
            if "tmp_path" in inspect.signature(method).parameters:
                kwargs["tmp_path"] = tmp_dir or default_tmp
            try:
                method(**kwargs)
            except BaseException as exc:  # pytest.skip raises a BaseException subclass
                if type(exc).__name__ != "Skipped":
                    raise
                results[name] = f"skipped: {exc}"
                continue
            results[name] = "passed"
    return results
