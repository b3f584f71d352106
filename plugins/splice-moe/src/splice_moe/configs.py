"""``MoEConfig``: the ``moe`` channel mixer's settings (torch-free, so loading stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)
from splice.config import ComponentConfig


class MoEConfig(ComponentConfig):
    """A mixture-of-experts FFN: a router sends each token to ``top_k`` of ``n_experts``.

    Attributes:
        n_experts: routed experts ``E``.
        top_k: experts per token ``k`` (1 = Switch, 2 = Mixtral/GShard, any ``k <= E``).
        expert_hidden: hidden width of one routed expert; default ``multiple * d_model``
            rounded up to 8. Fine-grained experts (DeepSeekMoE) = many experts, small width.
        multiple: width multiple used when ``expert_hidden`` is None.
        activation: ``swiglu`` (``down(silu(gate x) * up x)``) or ``gelu`` (``down(gelu(up x))``).
        n_shared: always-on shared experts whose output is added to the routed output.
        shared_hidden: total hidden width of the shared experts (they are stored as one MLP
            of this width, which equals ``n_shared`` MLPs of ``shared_hidden / n_shared``);
            default ``n_shared * expert_hidden``.
        scoring: ``softmax`` over experts (Mixtral, Switch) or per-expert ``sigmoid``
            (DeepSeek-V3).
        normalize_top_k: divide the chosen ``k`` scores by their sum (Mixtral, DeepSeek-V3);
            False keeps the raw scores (Switch).
        route_scale: multiplier of the routing weights (DeepSeek-V3's scaling factor).
        jitter: training-time multiplicative noise on the router input, uniform in
            ``[1 - jitter, 1 + jitter]`` (Switch Transformer).
        router_noise: training-time Gaussian noise std added to the router logits before
            top-k selection (noisy top-k gating, Shazeer et al. 2017).
        aux_loss_weight: weight of the Switch/GShard load-balancing loss
            ``E * sum_i f_i * P_i`` (0 disables it).
        aux_loss_scope: ``layer``: each MoE layer adds its own loss (``f_i`` the fraction of
            the layer's assignments), summed over layers; ``model``: transformers' Mixtral /
            Qwen-MoE loss, one per model with ``f_i`` and ``P_i`` pooled over every layer's
            tokens and ``f_i`` counted per token (summing to ``k``). Imported Mixtral
            checkpoints use ``model``.
        z_loss_weight: weight of the router z-loss ``mean(logsumexp(logits)^2)`` (ST-MoE).
        bias_update_rate: DeepSeek-V3 auxiliary-loss-free balancing: after each optimizer
            step every expert's selection bias moves by this rate toward balance
            (``+rate`` if under-loaded, ``-rate`` if over-loaded); 0 disables it.
        capacity_factor: None = dropless (every assignment is computed); a number ``c``
            caps each expert at ``ceil(c * tokens * k / E)`` assignments and drops the rest
            (dropped assignments contribute zero; the residual carries the token).
        grouped_mm: run the experts with torch's grouped GEMM (``F.grouped_mm``) (``on``), a
            loop over each expert's contiguous slice (``off``), or (``auto``) the device's
            grouped GEMM on CUDA (where the widths' rows are 16-byte multiples), else one batched matmul over the padded layout when
            ``max_padding`` allows it, else the grouped GEMM or the loop.
        max_padding: with ``grouped_mm="auto"`` off CUDA's grouped GEMM, pad every expert's
            slice to the longest one (one ``(E, C, D)`` batched matmul, one kernel instead of
            ``E``) when that adds at most this fraction of rows (e.g. 0.25); None (default)
            never pads. Padding costs its extra rows (~10% slower on an idle CPU) but wins
            ~2x where OpenMP threads fight other jobs for the cores (fewer kernels, fewer
            barriers); see docs/benchmarks.md.
        n_groups: split the experts into this many equal groups for group-limited routing
            (DeepSeek-V3's ``n_group``): a token first keeps its ``top_groups`` best groups,
            scored by the sum of each group's two highest selection scores, then picks its
            ``top_k`` experts inside them. 1 (default): no groups.
        top_groups: groups a token may use (DeepSeek-V3's ``topk_group``); None = all.
        shared_gate: scale the shared experts' output by ``sigmoid(w . x)``, a learned
            per-token gate (Qwen2-MoE's ``shared_expert_gate``).
        selection_bias: keep the per-expert selection bias (``router.expert_bias``) even when
            ``bias_update_rate`` is 0, so an imported DeepSeek-V3 / ERNIE 4.5
            ``e_score_correction_bias`` routes as trained (it always exists when the rate
            is above 0).
        modality_experts: split the routed experts by modality, in order (e.g. ``[6, 2]``:
            experts 0-5 for text tokens, 6-7 for image tokens); a token is routed among its
            modality's experts only, the shared experts serve all (ERNIE 4.5). The ids come
            from ``splice.nn.modality`` (a VLM sets them). The balancing loss is then taken
            per modality. None: one pool for every token.
        orthogonal_loss_weight: weight of the router orthogonal loss
            ``|| W_n W_n^T - I ||^2 / E^2`` (ERNIE 4.5), 0 disables it.
        expert_layout: ``batched`` stores the routed experts as ``(E, ...)`` weights (grouped
            GEMM); ``modules`` as one ``nn.Linear`` per expert projection
            (``experts.experts.{e}.gate/up/down``) so that adapters wrapping linear layers,
            such as splice-lora's LoRA, can target individual experts. Same routing and
            dispatch; the experts then run as a loop over their contiguous slices.
    """

    type: Literal["moe"] = "moe"
    n_experts: PositiveInt = 8
    top_k: PositiveInt = 2
    expert_hidden: PositiveInt | None = None
    multiple: PositiveFloat = 8.0 / 3.0
    activation: Literal["swiglu", "gelu"] = "swiglu"
    n_shared: NonNegativeInt = 0
    shared_hidden: PositiveInt | None = None
    scoring: Literal["softmax", "sigmoid"] = "softmax"
    normalize_top_k: bool = True
    route_scale: PositiveFloat = 1.0
    jitter: float = Field(default=0.0, ge=0.0, lt=1.0)
    router_noise: NonNegativeFloat = 0.0
    aux_loss_weight: NonNegativeFloat = 0.0
    aux_loss_scope: Literal["layer", "model"] = "layer"
    z_loss_weight: NonNegativeFloat = 0.0
    bias_update_rate: NonNegativeFloat = 0.0
    capacity_factor: PositiveFloat | None = None
    grouped_mm: Literal["auto", "on", "off"] = "auto"
    max_padding: NonNegativeFloat | None = None
    n_groups: PositiveInt = 1
    top_groups: PositiveInt | None = None
    shared_gate: bool = False
    selection_bias: bool = False
    modality_experts: list[PositiveInt] | None = None
    orthogonal_loss_weight: NonNegativeFloat = 0.0
    expert_layout: Literal["batched", "modules"] = "batched"

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.top_k > self.n_experts:
            raise ValueError(
                f"top_k={self.top_k} exceeds n_experts={self.n_experts}: "
                "each token is routed to top_k distinct experts"
            )
        self._check_groups()
        self._check_modalities()
        if self.shared_gate and self.n_shared == 0:
            raise ValueError("shared_gate=True needs shared experts (n_shared >= 1)")
        if self.shared_hidden is not None:
            if self.n_shared == 0:
                raise ValueError(
                    f"shared_hidden={self.shared_hidden} is set but n_shared=0: "
                    "set n_shared >= 1 or leave shared_hidden unset"
                )
            if self.shared_hidden % self.n_shared:
                raise ValueError(
                    f"shared_hidden={self.shared_hidden} does not split into n_shared="
                    f"{self.n_shared} experts of equal width (not a multiple)"
                )
        return self

    def _check_groups(self) -> None:
        g = self.n_groups
        if self.n_experts % g:
            raise ValueError(f"n_groups={g} does not divide n_experts={self.n_experts}")
        if g > 1 and self.n_experts // g < 2:
            raise ValueError(
                f"n_groups={g}: each group needs >= 2 experts (a group is scored by its top two)"
            )
        if self.top_groups is not None:
            if self.top_groups > g:
                raise ValueError(f"top_groups={self.top_groups} exceeds n_groups={g}")
            if self.top_k > self.top_groups * (self.n_experts // g):
                raise ValueError(
                    f"top_k={self.top_k} exceeds the experts in top_groups={self.top_groups} "
                    f"groups of {self.n_experts // g}"
                )

    def _check_modalities(self) -> None:
        split = self.modality_experts
        if split is None:
            return
        if sum(split) != self.n_experts:
            raise ValueError(
                f"modality_experts={split} sums to {sum(split)}, not n_experts={self.n_experts}"
            )
        if self.top_k > min(split):
            raise ValueError(
                f"top_k={self.top_k} exceeds the {min(split)} experts of a modality in modality_experts={split}"
            )
        if self.n_groups > 1:
            raise ValueError("modality_experts with n_groups > 1 is not supported")
        if self.aux_loss_scope == "model" and self.aux_loss_weight > 0:
            raise ValueError(
                "modality_experts balances per modality per layer: use aux_loss_scope='layer'"
            )

    @property
    def has_selection_bias(self) -> bool:
        """Whether the router keeps the per-expert selection bias buffer."""
        return self.selection_bias or self.bias_update_rate > 0

    def expert_width(self, d_model: int) -> int:
        """Hidden width of one routed expert at model width ``d_model``."""
        if self.expert_hidden is not None:
            return self.expert_hidden
        return max(8, -(-int(self.multiple * d_model) // 8) * 8)

    def shared_width(self, d_model: int) -> int:
        """Total hidden width of the shared experts (0 when there are none)."""
        if self.n_shared == 0:
            return 0
        self._check_groups()
        self._check_modalities()
        if self.shared_gate and self.n_shared == 0:
            raise ValueError("shared_gate=True needs shared experts (n_shared >= 1)")
        if self.shared_hidden is not None:
            return self.shared_hidden
        return self.n_shared * self.expert_width(d_model)

    def active_params(self, d_model: int) -> int:
        """Parameters one token uses: router + ``k`` routed experts + the shared experts."""
        per = 3 if self.activation == "swiglu" else 2
        routed = self.top_k * per * d_model * self.expert_width(d_model)
        gate = d_model if self.shared_gate else 0
        return d_model * self.n_experts + routed + per * d_model * self.shared_width(d_model) + gate


__all__ = ["MoEConfig"]
