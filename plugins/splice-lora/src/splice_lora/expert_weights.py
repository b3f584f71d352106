"""LoRA on batched expert weights: one low-rank delta per expert of a ``(E, out, in)`` parameter.

An MoE layer that stores its experts batched (splice-moe's ``GroupedExperts``: ``gate_up``
``(E, 2H, D)``, ``down`` ``(E, D, H)``, the layout transformers uses too) has no
``nn.Linear`` per expert to wrap. ``LoRAParameter`` is a parametrization of the parameter
itself (``torch.nn.utils.parametrize``): reading ``experts.gate_up`` gives
``W_e + s * B_e A_e`` for every expert ``e``, so the grouped GEMM, the padded batched matmul
and the per-expert loop all run the adapted weights unchanged, and only ``A`` and ``B`` train.

The factors are stored as PEFT's ``ParamWrapper`` stores them, so adapter files map one to
one: ``lora_A.<name>.weight`` ``(E * r, in)`` (expert-major rows: expert ``e``'s ``A_e`` is
rows ``e*r .. e*r+r``) and ``lora_B.<name>.weight`` ``(out, r * E)`` (rank-major columns:
``B_e`` is columns ``e, E + e, 2E + e, ...``).
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from splice_lora.layers import AdapterSpec, LoRALayer


class LoRAParameter(LoRALayer):
    """Per-expert LoRA deltas on ``owner.<param_name>`` ``(E, out, in)``, as its parametrization.

    Args:
        owner: the module holding the batched weight (e.g. ``GroupedExperts``).
        param_name: the parameter's name on ``owner`` (``"gate_up"``, ``"down"``).

    Raises:
        ValueError: the parameter is not 3-D.
    """

    def __init__(self, owner: nn.Module, param_name: str) -> None:
        nn.Module.__init__(self)  # not LoRALayer.__init__: the owner must not become a child
        self.specs: dict[str, AdapterSpec] = {}
        self.active_adapter: str | None = None
        self.adapters_enabled = True
        self.merged: list[str] = []
        self.param_lr_scale: dict[str, float] = {}
        weight = getattr(owner, param_name)
        if weight.ndim != 3:
            raise ValueError(
                f"target_parameters: {param_name!r} has shape {tuple(weight.shape)}; LoRA on a "
                "parameter needs a batched (experts, out, in) weight"
            )
        self.__dict__["owner"] = owner  # a plain reference (the owner holds this module)
        self.param_name = param_name
        self.n_experts, self.out_features, self.in_features = weight.shape
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        parametrize.register_parametrization(owner, param_name, self, unsafe=True)

    @property
    def original(self) -> Tensor:
        """The frozen base weight ``(E, out, in)``."""
        return self.owner.parametrizations[self.param_name].original  # type: ignore[no-any-return]

    def add_adapter(self, name: str, spec: AdapterSpec) -> None:
        unsupported = {
            "dropout": spec.dropout > 0,
            "dora": spec.dora,
            "init='pissa'": spec.init == "pissa",
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ValueError(
                f"LoRA on batched expert weights ({self.param_name!r}) does not support {bad} "
                "(as PEFT's target_parameters does not)"
            )
        e, r = self.n_experts, spec.r
        w = self.original
        self.lora_A[name] = nn.Linear(self.in_features, r * e, bias=False).to(w.device, w.dtype)
        self.lora_B[name] = nn.Linear(r * e, self.out_features, bias=False).to(w.device, w.dtype)
        with torch.no_grad():
            a = self.lora_A[name].weight
            if spec.init == "gaussian":
                nn.init.normal_(a, std=1.0 / r)
            else:
                for block in a.view(e, r, -1):  # each expert's A as its own (r, in) layer
                    nn.init.kaiming_uniform_(block, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B[name].weight)
        self.specs[name] = spec
        self._register_lr_scale(name, spec, f"lora_B.{name}.weight")

    def delta_weight(self, name: str) -> Tensor:
        """``s * B_e A_e`` for every expert: ``(E, out, in)``."""
        e, r = self.n_experts, self.specs[name].r
        a = self.lora_A[name].weight.view(e, r, self.in_features)  # (E, r, in)
        b = self.lora_B[name].weight.view(self.out_features, r, e).permute(2, 0, 1)  # (E, out, r)
        return torch.bmm(b, a) * self.specs[name].scaling

    def forward(self, weight: Tensor) -> Tensor:  # the parametrization: base -> adapted
        name = self._runs()
        if name is None:
            return weight
        return weight + self.delta_weight(name).to(weight.dtype)

    def merge(self, name: str | None = None) -> None:
        name = name or self.active_adapter
        if name is None or name in self.merged:
            return
        with torch.no_grad():
            self.original.add_(self.delta_weight(name).to(self.original.dtype))
        self.merged.append(name)

    def unmerge(self) -> None:
        with torch.no_grad():
            while self.merged:
                self.original.sub_(self.delta_weight(self.merged.pop()).to(self.original.dtype))

    def unload(self, name: str | None) -> None:
        """Merge ``name`` (if given and not merged yet) and put back the plain parameter."""
        if name is not None:
            self.merge(name)
        parametrize.remove_parametrizations(self.owner, self.param_name, leave_parametrized=False)
        self.original_param().requires_grad_(False)

    def original_param(self) -> Tensor:
        return getattr(self.owner, self.param_name)  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return f"{self.param_name}: experts={self.n_experts}, out={self.out_features}, in={self.in_features}"


PARAMETRIZED = re.compile(r"\.parametrizations\.(\w+)\.original$")

#: Shorthands of ``target_parameters``: ``experts`` is both batched weights of every MoE layer.
PARAMETER_SHORTHANDS = {
    "experts": ["experts.gate_up", "experts.down"],
    "gate_up_proj": ["gate_up"],
    "down_proj": ["down"],
}


def select_parameters(model: nn.Module, wanted: list[str]) -> list[tuple[nn.Module, str, str]]:
    """``(owner module, parameter name, dotted path)`` of the 3-D parameters ``wanted`` names.

    A wanted name matches a parameter whose dotted name equals it or ends with ``.`` + it.

    Raises:
        ValueError: a name matches nothing, or matches a parameter that is not 3-D (lists the
            model's batched weights).
    """
    names = [n for w in wanted for n in PARAMETER_SHORTHANDS.get(w, [w])]
    found = []
    # A weight that already carries an adapter is "<owner>.parametrizations.<name>.original".
    params = {PARAMETRIZED.sub(r".\1", n): p for n, p in model.named_parameters()}
    for suffix in names:
        hits = [p for p in params if p == suffix or p.endswith("." + suffix)]
        flat = [p for p in hits if params[p].ndim != 3]
        if not hits or flat:
            batched = sorted({p.split(".", 2)[-1] for p, v in params.items() if v.ndim == 3})
            why = "matches no parameter" if not hits else f"matches {flat[:2]}, which are not 3-D"
            raise ValueError(
                f"target_parameters: {suffix!r} {why}; the model's batched (experts, out, in) "
                f"weights are {batched or 'none'} (e.g. 'experts.gate_up')"
            )
        for path in hits:
            parent, _, leaf = path.rpartition(".")
            found.append((model.get_submodule(parent), leaf, path))
    return sorted({f[2]: f for f in found}.values(), key=lambda f: list(params).index(f[2]))


def parameter_layer(owner: nn.Module, param_name: str) -> LoRAParameter:
    """The ``LoRAParameter`` on ``owner.<param_name>``, created on first use."""
    if parametrize.is_parametrized(owner, param_name):
        for p in owner.parametrizations[param_name]:  # type: ignore[union-attr]
            if isinstance(p, LoRAParameter):
                return p
        raise ValueError(f"{param_name!r} already has a parametrization that is not LoRA")
    return LoRAParameter(owner, param_name)
