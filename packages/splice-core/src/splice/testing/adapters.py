"""Conformance of adapters (kind ``adapter``) and quantizers (kind ``quantizer``).

``AdapterConformance``: subclass, define ``make_config()`` (and ``make_model()`` if your
adapter targets other module names than the default model's ``q_proj``/``k_proj``/
``v_proj``/``o_proj``/``up``/``down`` linears). On real tensors it checks that

- ``apply`` freezes every base weight and leaves trainable adapter weights, which all get
  gradients once the adapter is off its (identity) initialisation;
- an adapter that starts as the identity (``identity_at_init``) leaves outputs unchanged;
- ``disable`` / ``enable`` switch the adapter's effect off and back on;
- ``merge`` returns a plain model with the adapted output (within ``merge_atol``);
- ``adapter_state_dict`` holds every trainable tensor (so checkpoints save all of it;
  names are the adapter's, e.g. PEFT's without the adapter name).

``QuantizerConformance``: ``quantize(linear)`` approximates the linear (relative error at
most ``max_relative_error``), keeps its bias and shapes, ``dequantize`` gives back an
``nn.Linear`` of the same shape, and ``nbytes`` reports fewer bytes than float32.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from splice.testing.naming import NamedConformance


class TinyLinearModel(nn.Module):
    """``x (B, T, 16) -> (B, T, 16)`` through attention-named and FFN-named linears."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.o_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        h = self.o_proj(torch.tanh(self.q_proj(x)) * self.k_proj(x) + self.v_proj(x))
        return h + self.down(torch.relu(self.up(h)))


def _build(kind: str, config: Any) -> Any:
    from splice.registry import get_registry

    return get_registry().build(kind, config, None)


class AdapterConformance(NamedConformance):
    """The checks of one registered adapter; define ``make_config()``."""

    kind: ClassVar[str] = "adapter"

    identity_at_init = True  # False for adapters that change the base (quantizing ones)
    merge_atol = 1e-4

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def make_model(self) -> nn.Module:
        return TinyLinearModel()

    def make_input(self) -> Tensor:
        return torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))

    def _adapted(self) -> tuple[Any, nn.Module, Tensor, Tensor]:
        """``(adapter, adapted model, output before, output right after apply)``; the base
        model's own parameters are remembered in ``self._base_ids``."""
        torch.manual_seed(0)
        model, x = self.make_model().eval(), self.make_input()
        self._base_params = list(model.parameters())  # kept alive: ids stay unique
        self._base_ids = {id(p) for p in self._base_params}
        with torch.no_grad():
            before = model(x)
        adapter = _build("adapter", self.make_config())
        model = (adapter.apply(model) or model).eval()  # new adapter layers start in train mode
        with torch.no_grad():
            after = model(x)
        return adapter, model, before, after

    @staticmethod
    def _train_off_identity(model: nn.Module) -> None:
        """Move every trainable weight, as training would (zero-initialised B included)."""
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.1 * torch.randn(p.shape, generator=g).to(p.dtype))

    def test_apply_freezes_the_base_and_trains_the_adapter(self) -> None:
        _, model, before, after = self._adapted()
        name = self.make_config().type
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable, f"adapter {name!r}: no trainable parameter after apply"
        unfrozen = [
            n for n, p in model.named_parameters() if p.requires_grad and id(p) in self._base_ids
        ]
        assert not unfrozen, f"adapter {name!r}: base weights left trainable: {unfrozen}"
        if self.identity_at_init:
            assert torch.allclose(before, after, atol=1e-5), (
                f"adapter {name!r}: applying it changed the output by "
                f"{(before - after).abs().max().item():.3g} (expected the identity at init)"
            )
        self._train_off_identity(model)
        model(self.make_input()).square().sum().backward()
        silent = [
            n for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
        ]  # fmt: skip
        assert not silent, f"adapter {name!r}: trainable parameters get no gradient: {silent}"

    def test_disable_and_enable_switch_the_adapter(self) -> None:
        adapter, model, _, after = self._adapted()
        name = self.make_config().type
        self._train_off_identity(model)
        x = self.make_input()
        with torch.no_grad():
            on = model(x)
            adapter.disable(model)
            off = model(x)
            adapter.enable(model)
            again = model(x)
        assert not torch.allclose(on, off), f"adapter {name!r}: disable() changes nothing"
        assert torch.allclose(off, after, atol=1e-5), (
            f"adapter {name!r}: disabled, the output is not the adapted base's"
        )
        assert torch.equal(on, again), f"adapter {name!r}: enable() does not restore the output"

    def test_merge_keeps_the_adapted_output(self) -> None:
        adapter, model, _, _ = self._adapted()
        self._train_off_identity(model)
        x = self.make_input()
        with torch.no_grad():
            want = model(x)
            merged = adapter.merge(model)
            got = merged(x)
        diff = (got - want).abs().max().item()
        assert diff <= self.merge_atol, (
            f"adapter {self.make_config().type!r}: merged output differs by {diff:.3g}"
        )

    def test_adapter_state_dict_saves_every_trainable_tensor(self) -> None:
        adapter, model, _, _ = self._adapted()
        name = self.make_config().type
        self._train_off_identity(model)  # every trainable tensor now holds distinct values
        saved = list(adapter.adapter_state_dict(model).values())
        missing = [
            n for n, p in model.named_parameters()
            if p.requires_grad and not any(v.shape == p.shape and torch.equal(v, p) for v in saved)
        ]  # fmt: skip
        assert not missing, (
            f"adapter {name!r}: adapter_state_dict leaves out {missing} (trainable tensors "
            "a checkpoint would not save)"
        )


class QuantizerConformance(NamedConformance):
    """The checks of one registered quantizer; define ``make_config()``."""

    kind: ClassVar[str] = "quantizer"

    max_relative_error = 0.15
    features = (64, 48)  # (in, out): multiples of the usual block sizes

    def make_config(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define make_config()")

    def _linear(self) -> nn.Linear:
        torch.manual_seed(0)
        return nn.Linear(*self.features)

    def test_quantized_linear_approximates_the_linear(self) -> None:
        quantizer, linear = _build("quantizer", self.make_config()), self._linear()
        x = torch.randn(3, self.features[0], generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = linear(x)
            got = quantizer.quantize(linear)(x).float()
        assert got.shape == want.shape, f"quantized output shape {tuple(got.shape)}"
        err = ((got - want).norm() / want.norm()).item()
        assert err <= self.max_relative_error, (
            f"quantizer {self.make_config().type!r}: relative error {err:.3g} > "
            f"{self.max_relative_error} (is the bias kept? the scales applied?)"
        )

    def test_dequantize_gives_back_a_linear(self) -> None:
        quantizer, linear = _build("quantizer", self.make_config()), self._linear()
        back = quantizer.dequantize(quantizer.quantize(linear))
        assert isinstance(back, nn.Linear), f"dequantize returned {type(back).__name__}"
        assert back.weight.shape == linear.weight.shape
        assert back.bias is not None and torch.allclose(
            back.bias.float(), linear.bias, atol=1e-2
        ), f"quantizer {self.make_config().type!r}: the bias is lost or changed"
        err = ((back.weight.float() - linear.weight).norm() / linear.weight.norm()).item()
        assert err <= self.max_relative_error, f"dequantized weight off by {err:.3g} (relative)"

    def test_reports_fewer_bytes_than_float32(self) -> None:
        quantizer, linear = _build("quantizer", self.make_config()), self._linear()
        q = quantizer.quantize(linear)
        n = quantizer.nbytes(q)
        dense = 4 * linear.weight.numel()
        assert isinstance(n, int) and 0 < n < dense, (
            f"quantizer {self.make_config().type!r}: nbytes={n!r}, expected 0 < n < {dense} "
            "(the float32 weight's bytes)"
        )
        stored = sum(t.numel() * t.element_size() for t in q.state_dict().values())
        assert n >= stored * 0.5, (
            f"quantizer {self.make_config().type!r}: nbytes={n} but the state dict holds "
            f"{stored} bytes"
        )


__all__ = ["AdapterConformance", "QuantizerConformance", "TinyLinearModel"]
