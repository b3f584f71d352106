"""``MoELayer``: the ``moe`` channel mixer (router, sorted dispatch, experts, shared experts).

``forward(x (B, T, D)) -> ChannelMixerOutput(hidden (B, T, D), aux_loss)``:

    routing = router(x)                      # float32 gate, top-k per token
    dispatch = sort_by_expert(routing)       # assignments grouped by expert (+ capacity)
    xs = x[dispatch.token]                   # one gather, (M, D)
    ys = experts(xs, dispatch.counts)        # each expert on its contiguous slice
    y = zeros.index_add(dispatch.token, w * ys)   # one scatter
    y = y + shared(x)                        # always-on shared experts

In training the layer accumulates routing statistics; ``after_optimizer_step()`` (called
by the Trainer after each optimizer step) returns them as metrics, updates the
auxiliary-loss-free selection bias from the observed load, and resets them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from splice.interfaces import BuildContext, ChannelMixer, ChannelMixerOutput
from splice.nn.ffn import MLP, SwiGLU
from torch import Tensor, nn

from splice_moe.balancing import (
    load_balancing_loss,
    router_entropy,
    router_z_loss,
    update_selection_bias,
)
from splice_moe.configs import MoEConfig
from splice_moe.dispatch import capacity_of, sort_by_expert
from splice_moe.experts import ExpertModules, GroupedExperts
from splice_moe.router import Router, Routing

_STAT_KEYS = ("routed", "dropped", "assignments", "entropy", "lb_loss", "z_loss", "tokens")


class MoELayer(ChannelMixer):
    """Mixture-of-experts FFN built from an ``MoEConfig`` at model width ``d_model``.

    Attributes:
        router: ``Router`` (``router.gate`` is the ``(E, D)`` linear gate).
        experts: ``GroupedExperts`` with batched ``gate_up`` / ``down`` weights, or
            ``ExpertModules`` (one ``nn.Linear`` per expert projection) with
            ``expert_layout="modules"``.
        shared: the shared experts as one SwiGLU/GELU MLP of width ``shared_hidden``, or None.
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
            selection_bias=config.bias_update_rate > 0,
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
        self.track_stats = False
        self._stats: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> ChannelMixerOutput:
        shape = x.shape
        h = x.reshape(-1, shape[-1])  # (N, D)
        routing = self.router(h)
        capacity = capacity_of(
            self.config.capacity_factor, h.shape[0], self.config.top_k, self.config.n_experts
        )
        dispatch = sort_by_expert(routing.top_idx, self.config.n_experts, capacity)
        xs = h[dispatch.token]  # (M, D) one gather
        ys = self.experts(xs, dispatch.counts)  # (M, D)
        weight = routing.top_weight.reshape(-1)[dispatch.assignment]  # (M,)
        ys = ys * weight[:, None].to(ys.dtype)
        out = ys.new_zeros(h.shape[0], shape[-1]).index_add_(0, dispatch.token, ys)  # one scatter
        if self.shared is not None:
            out = out + self.shared(h)
        aux = self._aux_loss(routing, dispatch.routed)
        if self.training or self.track_stats:
            self._accumulate(routing, dispatch.routed, dispatch.dropped, aux)
        return ChannelMixerOutput(out.reshape(shape), aux_loss=aux[0])

    def _aux_loss(
        self, routing: Routing, routed: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """``(weighted total, load-balancing term, z term)``; a term is None when its weight is 0."""
        cfg = self.config
        lb = z = None
        total: Tensor | None = None
        if cfg.aux_loss_weight > 0:
            lb = load_balancing_loss(routing.scores, routed, normalize=cfg.scoring == "sigmoid")
            total = cfg.aux_loss_weight * lb
        if cfg.z_loss_weight > 0:
            z = router_z_loss(routing.logits)
            term = cfg.z_loss_weight * z
            total = term if total is None else total + term
        return total, lb, z

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def _accumulate(
        self,
        routing: Routing,
        routed: Tensor,
        dropped: Tensor,
        aux: tuple[Tensor | None, Tensor | None, Tensor | None],
    ) -> None:
        _, lb, z = aux
        if lb is None:  # logged even when not optimised: it measures imbalance
            lb = load_balancing_loss(
                routing.scores, routed, normalize=self.config.scoring == "sigmoid"
            )
        if z is None:
            z = router_z_loss(routing.logits)
        n = float(routing.scores.shape[0])
        new = {
            "routed": routed.float(),
            "dropped": dropped.float(),
            "assignments": routed.sum().float(),
            "entropy": router_entropy(routing.scores) * n,
            "lb_loss": lb.detach() * n,
            "z_loss": z.detach() * n,
            "tokens": torch.tensor(n, device=routed.device),
        }
        for key, value in new.items():
            old = self._stats.get(key)
            self._stats[key] = value if old is None else old + value

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
            self._stats = {}
        if not s:
            return {}
        routed = s["routed"]
        out: dict[str, Tensor] = {
            f"load.{i}": v for i, v in enumerate(routed / routed.sum().clamp_min(1))
        }
        out["load_max_mean"] = routed.max() / routed.mean().clamp_min(1e-9)
        out["dropped_frac"] = s["dropped"] / s["assignments"].clamp_min(1)
        for key in ("entropy", "lb_loss", "z_loss"):
            name = "router_entropy" if key == "entropy" else key
            out[name] = s[key] / s["tokens"]
        bias = self.router.expert_bias
        if bias is not None:
            out["bias_spread"] = bias.max() - bias.min()
        return out

    def after_optimizer_step(self) -> dict[str, Any]:
        """Update the selection bias from this step's load; return and reset the statistics.

        Called by the Trainer after every optimizer step. Under ``torch.distributed`` the
        load is summed over ranks first so every rank applies the same bias update.
        """
        routed = self._stats.get("routed")
        bias = self.router.expert_bias
        if bias is not None and routed is not None:
            load = routed.clone()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(load)
            update_selection_bias(bias, load, self.config.bias_update_rate)
        return self.stats(reset=True)


def build_moe(config: MoEConfig, ctx: BuildContext) -> MoELayer:
    return MoELayer(config, ctx.d_model)
