"""LoRA layers: a frozen base module plus named low-rank deltas, one of them active.

``LoRALinear`` wraps any linear-like base (``splice.adapters.is_linear_like``: ``nn.Linear``
or a quantized linear) and computes ``y = base(x) + s * B (A dropout(x))`` with
``A (r, in)``, ``B (out, r)``; ``LoRAEmbedding`` adds ``s * (B A)^T[ids]`` to a frozen
embedding. Parameter names follow PEFT (``lora_A.<adapter>.weight``,
``lora_embedding_A.<adapter>``, ``lora_magnitude_vector.<adapter>``) so that adapter files
map one to one. Both implement the core ``AdapterLayer`` protocol: with adapters disabled
the output is exactly the base's, which is how a LoRA policy serves as its own reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from splice.adapters import dense_weight
from torch import Tensor, nn
from torch.nn import functional as F

from splice_lora.fused import LoRALinearFunction, fusable


@dataclass(frozen=True)
class AdapterSpec:
    """One named adapter's hyperparameters on one layer."""

    r: int
    scaling: float
    alpha: float = 1.0
    rslora: bool = False
    dropout: float = 0.0
    init: str = "kaiming"
    dora: bool = False
    lora_plus_ratio: float | None = None


class LoRALayer(nn.Module):
    """What the two LoRA layers share: named adapters, the active one, enable and merge state.

    Attributes:
        specs: each adapter's ``AdapterSpec`` by name.
        active_adapter: the adapter that runs (None: none does).
        adapters_enabled: False makes ``forward`` the base's own (``AdapterLayer``).
        merged: names of adapters currently folded into the base weight.
        param_lr_scale: learning-rate multipliers by parameter name, read by the core's
            ``build_optimizer`` (LoRA+: B's parameters get ``lora_plus_ratio``).
    """

    base_layer: nn.Module

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.specs: dict[str, AdapterSpec] = {}
        self.active_adapter: str | None = None
        self.adapters_enabled = True
        self.merged: list[str] = []
        self.param_lr_scale: dict[str, float] = {}

    # ---------------------------------------------------------------- AdapterLayer
    def set_adapters_enabled(self, enabled: bool) -> None:
        """Switch the adapter delta on or off (off: ``forward`` is the base's).

        Raises:
            RuntimeError: disabling while an adapter is merged into the base weight.
        """
        if not enabled and self.merged:
            raise RuntimeError(
                f"adapter(s) {self.merged} are merged into the base weight of this "
                f"{type(self.base_layer).__name__}; unmerge before disabling adapters"
            )
        self.adapters_enabled = enabled

    def _runs(self) -> str | None:
        """The adapter whose delta ``forward`` adds, or None."""
        name = self.active_adapter
        if not self.adapters_enabled or name is None or name in self.merged:
            return None
        return name

    def adapter_parameters(self, name: str) -> dict[str, nn.Parameter]:
        """``{local parameter name: parameter}`` of adapter ``name`` on this layer."""
        return {
            k: p
            for k, p in self.named_parameters()
            if not k.startswith("base_layer.") and _adapter_of(k) == name
        }

    # ---------------------------------------------------------------- merge
    def merge(self, name: str | None = None) -> None:
        """Fold adapter ``name`` (default: the active one) into the base weight, in place."""
        name = name or self.active_adapter
        if name is None or name in self.merged:
            return
        weight = _writable_weight(self.base_layer)
        with torch.no_grad():
            weight.copy_(self.merged_weight(name, weight).to(weight.dtype))
        self.merged.append(name)

    def unmerge(self) -> None:
        """Undo ``merge`` for every merged adapter, last merged first."""
        weight = _writable_weight(self.base_layer)
        with torch.no_grad():
            while self.merged:
                name = self.merged.pop()
                weight.copy_(self.unmerged_weight(name, weight).to(weight.dtype))

    def merged_weight(self, name: str, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def unmerged_weight(self, name: str, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _register_lr_scale(self, name: str, spec: AdapterSpec, b_name: str) -> None:
        if spec.lora_plus_ratio is not None:
            self.param_lr_scale[b_name] = float(spec.lora_plus_ratio)


def _adapter_of(param_name: str) -> str | None:
    """``lora_A.default.weight`` -> ``default``; ``lora_magnitude_vector.x`` -> ``x``."""
    parts = param_name.split(".")
    return parts[1] if len(parts) > 1 else None


def _writable_weight(base: nn.Module) -> Tensor:
    w = getattr(base, "weight", None)
    if not isinstance(w, Tensor) or not w.is_floating_point():
        raise TypeError(
            f"cannot merge into a {type(base).__name__} in place (no floating-point weight); "
            "use merge_and_unload, which replaces a quantized base with a dense one"
        )
    return w


class LoRALinear(LoRALayer):
    """``(..., in) -> (..., out)``: ``base(x) + s * B A dropout(x)`` for the active adapter.

    With DoRA the output is ``(m / ||W + s B A||_row) * (W + s B A) x + bias``: a trainable
    magnitude ``m (out,)`` times the normalised direction; the norm is treated as a constant
    in backward (as in the DoRA paper and PEFT), which saves memory.
    """

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features: int = base_layer.in_features  # type: ignore[assignment]
        self.out_features: int = base_layer.out_features  # type: ignore[assignment]
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.lora_magnitude_vector = nn.ParameterDict()
        # PiSSA's initial A, B (the base keeps W - s B0 A0): needed to export the adapter
        # as a plain LoRA delta against the original W. Recomputed from W when re-applied.
        self.pissa_init: dict[str, tuple[Tensor, Tensor]] = {}
        self._dora_merge_norms: dict[str, Tensor] = {}  # ||W + s B A|| rows, while merged

    @property
    def weight(self) -> Tensor:
        """The base's weight (so code reading ``.weight.dtype`` keeps working)."""
        return self.base_layer.weight  # type: ignore[return-value]

    @property
    def bias(self) -> Tensor | None:
        return getattr(self.base_layer, "bias", None)

    def add_adapter(self, name: str, spec: AdapterSpec) -> None:
        """Create adapter ``name`` (A, B, dropout, DoRA magnitude) and initialise it."""
        if name in self.specs:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        ref = dense_weight(self.base_layer)
        # A half-precision (or quantized) base still gets float32 adapters, as PEFT does:
        # a few trainable parameters, updated by small steps, need the mantissa.
        dtype = ref.dtype if ref.dtype in (torch.float32, torch.float64) else torch.float32
        kw = {"device": ref.device, "dtype": dtype}
        self.lora_A[name] = nn.Linear(self.in_features, spec.r, bias=False, **kw)  # (r, in)
        self.lora_B[name] = nn.Linear(spec.r, self.out_features, bias=False, **kw)  # (out, r)
        self.lora_dropout[name] = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.specs[name] = spec
        self._init(name, spec)
        if spec.dora:
            with torch.no_grad():
                norm = self._row_norm(dense_weight(self.base_layer), name)
            self.lora_magnitude_vector[name] = nn.Parameter(norm.clone())
        self._register_lr_scale(name, spec, f"lora_B.{name}.weight")

    def _init(self, name: str, spec: AdapterSpec) -> None:
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        with torch.no_grad():
            if spec.init == "pissa":
                if len(self.specs) > 1:
                    raise ValueError("init='pissa' must be the first adapter on a layer")
                weight = _writable_weight(self.base_layer)
                # W = U S V^T; the top-r part becomes s * B A, W keeps the residual.
                u, s_vals, vh = torch.linalg.svd(weight.float(), full_matrices=False)
                root = (s_vals[: spec.r] / spec.scaling).sqrt()  # (r,)
                a.copy_(root[:, None] * vh[: spec.r])  # (r, in)
                b.copy_(u[:, : spec.r] * root[None, :])  # (out, r)
                weight.sub_((spec.scaling * b.float() @ a.float()).to(weight.dtype))
                self.pissa_init[name] = (a.detach().clone(), b.detach().clone())
                return
            if spec.init == "gaussian":
                nn.init.normal_(a, std=1.0 / spec.r)
            else:  # Kaiming-uniform A as nn.Linear does (PEFT's default)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            nn.init.zeros_(b)

    def delta_weight(self, name: str) -> Tensor:
        """``s * B A``: ``(out, in)``, the adapter's change to the base weight."""
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        return self.specs[name].scaling * (b @ a)

    def _row_norm(self, weight: Tensor, name: str) -> Tensor:
        """``||W + s B A||`` of each output row, ``(out,)``."""
        w = weight.to(self.lora_A[name].weight.dtype) + self.delta_weight(name)
        return torch.linalg.vector_norm(w, dim=1)

    def merged_weight(self, name: str, weight: Tensor) -> Tensor:
        w = weight.float() + self.delta_weight(name).float()
        if name in self.lora_magnitude_vector:
            m = self.lora_magnitude_vector[name].float()
            w = w * (m / torch.linalg.vector_norm(w, dim=1))[:, None]
        return w

    def unmerged_weight(self, name: str, weight: Tensor) -> Tensor:
        w = weight.float()
        if name in self.lora_magnitude_vector:
            # Merged rows are d * m / ||d|| with d = W + s B A, so d = row * ||d|| / m; ||d||
            # was kept at merge time (it cannot be read back from the merged weight).
            m = self.lora_magnitude_vector[name].float()
            w = w / m[:, None] * self._dora_merge_norms.pop(name)[:, None]
        return w - self.delta_weight(name).float()

    def merge(self, name: str | None = None) -> None:
        name = name or self.active_adapter
        if name is not None and name in self.lora_magnitude_vector and name not in self.merged:
            with torch.no_grad():
                d = dense_weight(self.base_layer).float() + self.delta_weight(name).float()
                self._dora_merge_norms[name] = torch.linalg.vector_norm(d, dim=1)
        super().merge(name)

    def forward(self, x: Tensor) -> Tensor:
        name = self._runs()
        if name is None:
            return self.base_layer(x)  # type: ignore[no-any-return]
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        scaling = self.specs[name].scaling
        dropout = self.lora_dropout[name]
        dropped = self.training and not isinstance(dropout, nn.Identity)
        if not dropped and name not in self.lora_magnitude_vector:
            fused = fusable(self.base_layer, x, a, b)
            if fused is not None:  # base + LoRA in one autograd node (see splice_lora.fused)
                weight, weight_fn = fused
                return LoRALinearFunction.apply(x, a, b, weight, self.bias, scaling, weight_fn)  # type: ignore[no-any-return]
        y: Tensor = self.base_layer(x)  # (..., out)
        xd = dropout(x)
        if xd.dtype != a.dtype and not torch.is_autocast_enabled(x.device.type):
            xd = xd.to(a.dtype)  # a half-precision base under float32 adapters
        if name in self.lora_magnitude_vector:
            return self._dora(xd, y, name, dropped=dropped)
        h = F.linear(xd, a)  # (..., r)
        if (h.dtype == y.dtype and b.dtype == h.dtype) or torch.is_autocast_enabled(x.device.type):
            # y + s * h B^T in one kernel: no separate pass to scale and add the delta.
            out = torch.addmm(y.reshape(-1, y.shape[-1]), h.reshape(-1, h.shape[-1]), b.t(),
                              alpha=scaling)  # fmt: skip
            return out.view(y.shape)
        return y + (F.linear(h, b) * scaling).to(y.dtype)

    def _dora(self, xd: Tensor, y: Tensor, name: str, *, dropped: bool) -> Tensor:
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        scaling = self.specs[name].scaling
        weight = dense_weight(self.base_layer)
        norm = self._row_norm(weight.detach(), name).detach()  # (out,), a constant in backward
        mag = self.lora_magnitude_vector[name] / norm  # (out,)
        bias = self.bias
        if not dropped:  # the base output is W x + bias already
            base = y - bias if bias is not None else y
        else:  # PEFT: with dropout the direction term reads the dropped-out input
            base = F.linear(xd, weight.to(xd.dtype))
        lora = F.linear(F.linear(xd, a), b) * scaling
        return y + ((mag - 1) * base + mag * lora).to(y.dtype)


class LoRAEmbedding(LoRALayer):
    """``ids (...) -> (..., D)``: ``base(ids) + s * (B A)^T[ids]``.

    ``lora_embedding_A`` is ``(r, V)`` and ``lora_embedding_B`` ``(D, r)`` as in PEFT; A starts
    at zero and B Gaussian (PEFT's embedding init), so the model starts as the base.
    """

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.num_embeddings = base_layer.num_embeddings
        self.embedding_dim = base_layer.embedding_dim
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()

    @property
    def weight(self) -> Tensor:
        return self.base_layer.weight  # type: ignore[return-value]

    def add_adapter(self, name: str, spec: AdapterSpec) -> None:
        if name in self.specs:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        if spec.dora or spec.init == "pissa":
            raise ValueError("DoRA and PiSSA apply to linear layers, not to the embedding")
        w = self.weight
        dtype = w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32
        a = torch.zeros(spec.r, self.num_embeddings, device=w.device, dtype=dtype)  # (r, V)
        b = torch.empty(self.embedding_dim, spec.r, device=w.device, dtype=dtype)  # (D, r)
        if spec.init == "gaussian":
            nn.init.normal_(b, std=1.0 / spec.r)
        else:
            nn.init.normal_(b)
        self.lora_embedding_A[name] = nn.Parameter(a)
        self.lora_embedding_B[name] = nn.Parameter(b)
        self.specs[name] = spec
        self._register_lr_scale(name, spec, f"lora_embedding_B.{name}")

    def delta_weight(self, name: str) -> Tensor:
        """``s * (B A)^T``: ``(V, D)``."""
        a, b = self.lora_embedding_A[name], self.lora_embedding_B[name]
        return self.specs[name].scaling * (b @ a).T

    def merged_weight(self, name: str, weight: Tensor) -> Tensor:
        return weight.float() + self.delta_weight(name).float()

    def unmerged_weight(self, name: str, weight: Tensor) -> Tensor:
        return weight.float() - self.delta_weight(name).float()

    def forward(self, ids: Tensor) -> Tensor:
        y: Tensor = self.base_layer(ids)  # (..., D)
        name = self._runs()
        if name is None:
            return y
        a, b = self.lora_embedding_A[name], self.lora_embedding_B[name]
        h = F.embedding(ids, a.T)  # (..., r)
        return y + (F.linear(h, b) * self.specs[name].scaling).to(y.dtype)


__all__ = ["AdapterSpec", "LoRAEmbedding", "LoRALayer", "LoRALinear"]
