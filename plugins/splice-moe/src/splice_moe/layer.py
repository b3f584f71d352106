"""``MoELayer``: the ``moe`` channel mixer (router, sorted dispatch, experts, shared experts).

``forward(x (B, T, D)) -> ChannelMixerOutput(hidden (B, T, D), aux_loss)``:

    routing = router(x)                      # float32 gate, top-k per token
    dispatch = sort_by_expert(routing)       # assignments grouped by expert (+ capacity)
    xs = gather_inputs(x, dispatch)          # one gather, (M, D) (x[dispatch.token])
    ys = experts(xs, dispatch.counts)        # each expert on its contiguous slice
    y = sum_k w * gather_outputs(ys)         # one gather back, (N, k, D) -> (N, D)
    y = y + shared(x)                        # always-on shared experts

Both gathers' backward passes are gathers by the inverse permutation (no scatter).

In training the layer accumulates routing statistics; ``after_optimizer_step()`` (called
by the Trainer after each optimizer step) returns them as metrics, updates the
auxiliary-loss-free selection bias from the observed load, and resets them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from splice.interfaces import BuildContext, ChannelMixer, ChannelMixerOutput, PooledAuxLoss
from splice.nn.ffn import MLP, SwiGLU
from splice.nn.modality import current_token_modality
from torch import Tensor, nn
from torch.profiler import record_function

from splice_moe.balancing import (
    PooledBalancingLoss,
    balancing_sums,
    load_balancing_loss,
    router_z_loss,
    routing_stat_sums,
    update_selection_bias,
)
from splice_moe.configs import MoEConfig
from splice_moe.dispatch import capacity_of, gather_inputs, gather_outputs, sort_by_expert
from splice_moe.experts import ExpertModules, GroupedExperts
from splice_moe.modality import allowed_experts, modality_balance_loss, router_orthogonal_loss
from splice_moe.router import Router, Routing


class MoELayer(ChannelMixer):
    """Mixture-of-experts FFN built from an ``MoEConfig`` at model width ``d_model``.

    Attributes:
        router: ``Router`` (``router.gate`` is the ``(E, D)`` linear gate).
        experts: ``GroupedExperts`` with batched ``gate_up`` / ``down`` weights, or
            ``ExpertModules`` (one ``nn.Linear`` per expert projection) with
            ``expert_layout="modules"``.
        shared: the shared experts as one SwiGLU/GELU MLP of width ``shared_hidden``, or None.
        shared_gate: ``(1, D)`` linear gate of the shared output (``shared_gate=True``), or None.
        track_stats: accumulate routing statistics outside training too (evaluation).
    """

    def __init__(self, config: MoEConfig, d_model: int) -> None:
        super().__init__()
        self.config = config
        self.d_model = d_model
        self.router = Router(
            d_model,
            config.n_experts,
            config.top_k,
            scoring=config.scoring,
            normalize_top_k=config.normalize_top_k,
            route_scale=config.route_scale,
            jitter=config.jitter,
            noise=config.router_noise,
            selection_bias=config.has_selection_bias,
            n_groups=config.n_groups,
            top_groups=config.top_groups,
        )
        self.experts: GroupedExperts | ExpertModules
        if config.expert_layout == "batched":
            self.experts = GroupedExperts(
                config.n_experts,
                d_model,
                config.expert_width(d_model),
                activation=config.activation,
                grouped_mm=config.grouped_mm,
            )
        else:
            self.experts = ExpertModules(
                config.n_experts,
                d_model,
                config.expert_width(d_model),
                activation=config.activation,
            )
        self.shared: nn.Module | None = None
        width = config.shared_width(d_model)
        if width:
            if config.activation == "swiglu":
                self.shared = SwiGLU(d_model, width, bias=False)
            else:
                self.shared = MLP(d_model, width, activation="gelu", bias=False)
        # Qwen2-MoE: the shared experts' output scaled by a per-token sigmoid gate.
        self.shared_gate = nn.Linear(d_model, 1, bias=False) if config.shared_gate else None
        self.track_stats = False
        self._stats: Tensor | None = None  # (E + 5,) sums, see routing_stat_sums

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> ChannelMixerOutput:
        shape = x.shape
        h = x.reshape(-1, shape[-1])  # (N, D)
        cfg = self.config
        # Named scopes: profiler traces (and benchmarks/bench_moe.py's breakdown) show each phase.
        modality = self._token_modality(h)  # (N,) or None
        with record_function("moe.router"):
            allowed = None
            if modality is not None:
                allowed = allowed_experts(modality, cfg.modality_experts)  # type: ignore[arg-type]
            routing = self.router(h, allowed)
        with record_function("moe.sort"):
            capacity = capacity_of(cfg.capacity_factor, h.shape[0], cfg.top_k, cfg.n_experts)
            dispatch = sort_by_expert(
                routing.top_idx, cfg.n_experts, capacity, max_padding=self._max_padding(h)
            )
        with record_function("moe.gather"):
            xs = gather_inputs(h, dispatch, cfg.top_k)  # (R, D) one gather
        with record_function("moe.experts"):
            if isinstance(self.experts, GroupedExperts):
                ys = self.experts(xs, dispatch.counts, dispatch.block)  # (R, D)
            else:
                ys = self.experts(xs, dispatch.counts)
        with record_function("moe.combine"):
            yk = gather_outputs(ys, dispatch).view(-1, cfg.top_k, shape[-1])  # (N, k, D)
            out = (yk * routing.top_weight.to(yk.dtype).unsqueeze(-1)).sum(dim=1)  # (N, D)
        if self.shared is not None:
            with record_function("moe.shared"):
                shared = self.shared(h)  # (N, D)
                if self.shared_gate is not None:
                    shared = shared * self.shared_gate(h).sigmoid()  # (N, 1) gate per token
                out = out + shared
        with record_function("moe.aux_loss"):
            aux = self._aux_loss(routing, dispatch.routed, modality)
        if self.training or self.track_stats:
            with record_function("moe.stats"):
                self._accumulate(routing, dispatch.routed, dispatch.dropped, aux)
        return ChannelMixerOutput(out.reshape(shape), aux_loss=aux[0])

    def _max_padding(self, h: Tensor) -> float | None:
        """Padded-layout allowance for this input, None for the compact layout."""
        experts = self.experts
        if not isinstance(experts, GroupedExperts) or experts.grouped_mm != "auto":
            return None
        if h.device.type != "cpu" and experts.use_grouped(h):
            return None  # a device grouped GEMM: no padding, no host sync
        return self.config.max_padding

    def _token_modality(self, h: Tensor) -> Tensor | None:
        """``(N,)`` modality ids of the tokens when the experts are split by modality."""
        if self.config.modality_experts is None:
            return None
        ids = current_token_modality()
        if ids is None:
            return h.new_zeros(h.shape[0], dtype=torch.long)  # nothing set: all text
        if ids.numel() != h.shape[0]:
            raise ValueError(
                f"token modality ids {tuple(ids.shape)} do not cover the {h.shape[0]} tokens"
            )
        return ids.reshape(-1).to(h.device)

    def _aux_loss(
        self, routing: Routing, routed: Tensor, modality: Tensor | None = None
    ) -> tuple[Tensor | PooledAuxLoss | None, Tensor | None, Tensor | None]:
        """``(weighted total, load-balancing term, z term)``; a term is None when its weight is 0.

        With ``aux_loss_scope="model"`` the total is a ``PooledAuxLoss`` the model pools
        over layers (the load-balancing term is then only logged, per layer).
        """
        cfg = self.config
        lb = z = None
        total: Tensor | None = None
        if cfg.aux_loss_scope == "model" and cfg.aux_loss_weight > 0:
            if cfg.z_loss_weight > 0:
                z = router_z_loss(routing.logits)
            extra = cfg.z_loss_weight * z if z is not None else routing.logits.new_zeros(())
            if cfg.orthogonal_loss_weight > 0:  # a per-layer term, added as the z-loss is
                ortho = router_orthogonal_loss(self.router.gate.weight)
                extra = extra + cfg.orthogonal_loss_weight * ortho
            sums = balancing_sums(routing.scores, routed, extra, normalize=cfg.scoring == "sigmoid")
            finish = PooledBalancingLoss(cfg.n_experts, cfg.aux_loss_weight)
            return PooledAuxLoss(sums, finish), None, z
        if cfg.aux_loss_weight > 0:
            sigmoid = cfg.scoring == "sigmoid"
            if modality is not None:
                split = cfg.modality_experts or []
                lb = modality_balance_loss(
                    routing.scores, routing.top_idx, modality, split, normalize=sigmoid
                )
            else:
                lb = load_balancing_loss(routing.scores, routed, normalize=sigmoid)
            total = cfg.aux_loss_weight * lb
        if cfg.orthogonal_loss_weight > 0:
            term = cfg.orthogonal_loss_weight * router_orthogonal_loss(self.router.gate.weight)
            total = term if total is None else total + term
        if cfg.z_loss_weight > 0:
            z = router_z_loss(routing.logits)
            term = cfg.z_loss_weight * z
            total = term if total is None else total + term
        return total, lb, z

    # ------------------------------------------------------------------ statistics
    def _accumulate(
        self,
        routing: Routing,
        routed: Tensor,
        dropped: Tensor,
        aux: tuple[Tensor | PooledAuxLoss | None, Tensor | None, Tensor | None],
    ) -> None:
        _, lb, z = aux  # lb is logged even when not optimised: it measures imbalance
        new = routing_stat_sums(
            routing.logits.detach(),
            routing.scores.detach(),
            routed,
            dropped,
            sigmoid=self.config.scoring == "sigmoid",
            lb=lb,
            z=z,
        )
        self._stats = new if self._stats is None else self._stats + new  # one add per forward

    def stats(self, *, reset: bool = False) -> dict[str, Tensor]:
        """Routing statistics accumulated since the last reset (tensors, no host sync).

        Keys: ``load.{i}`` (fraction of assignments routed to expert ``i``),
        ``load_max_mean`` (max / mean load; 1 is perfect balance), ``dropped_frac``,
        ``router_entropy`` (nats, mean per token), ``lb_loss``, ``z_loss`` (the
        unweighted balancing terms, token-weighted means), and ``bias_spread`` (max - min
        of the auxiliary-loss-free bias) when that bias exists. Empty if nothing was seen.
        """
        s = self._stats
        if reset:
            self._stats = None
        if s is None:
            return {}
        e = self.config.n_experts
        routed, (dropped, entropy, lb, z, tokens) = s[:e], s[e:].unbind()
        out: dict[str, Tensor] = {
            f"load.{i}": v for i, v in enumerate(routed / routed.sum().clamp_min(1))
        }
        out["load_max_mean"] = routed.max() / routed.mean().clamp_min(1e-9)
        out["dropped_frac"] = dropped / routed.sum().clamp_min(1)
        out["router_entropy"] = entropy / tokens
        out["lb_loss"] = lb / tokens
        out["z_loss"] = z / tokens
        bias = self.router.expert_bias
        if bias is not None:
            out["bias_spread"] = bias.max() - bias.min()
        return out

    def after_optimizer_step(self) -> dict[str, Any]:
        """Update the selection bias from this step's load; return and reset the statistics.

        Called by the Trainer after every optimizer step. Under ``torch.distributed`` the
        load is summed over ranks first so every rank applies the same bias update.
        """
        routed = None if self._stats is None else self._stats[: self.config.n_experts]
        bias = self.router.expert_bias
        if bias is not None and routed is not None:
            load = routed.clone()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(load)
            update_selection_bias(bias, load, self.config.bias_update_rate)
        return self.stats(reset=True)


def build_moe(config: MoEConfig, ctx: BuildContext) -> MoELayer:
    return MoELayer(config, ctx.d_model)
