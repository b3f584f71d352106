"""A plain per-expert-mask MoE forward, the yardstick the sorted dispatch is tested
and benchmarked against.

For each expert ``e``: find the tokens whose top-k contains ``e`` (a boolean mask),
keep the first ``capacity`` of them in token order, run the expert on them and
index-add the weighted result. Same router and weights as the layer, no sorting,
no grouped GEMM.
"""

from __future__ import annotations

from torch import Tensor

from splice_moe.dispatch import capacity_of
from splice_moe.layer import MoELayer


def reference_forward(layer: MoELayer, x: Tensor) -> Tensor:
    """``x (B, T, D) -> (B, T, D)``: what ``layer(x).hidden`` must equal."""
    cfg = layer.config
    h = x.reshape(-1, x.shape[-1])  # (N, D)
    routing = layer.router(h)
    capacity = capacity_of(cfg.capacity_factor, h.shape[0], cfg.top_k, cfg.n_experts)
    out = h.new_zeros(h.shape)
    for e in range(cfg.n_experts):
        token, slot = (routing.top_idx == e).nonzero(as_tuple=True)  # row-major: token order
        if capacity is not None:
            token, slot = token[:capacity], slot[:capacity]
        if token.numel() == 0:
            continue
        y = layer.experts.expert_forward(e, h[token])
        # .to(out.dtype): under autocast the expert runs in bf16, the accumulator is float32
        out.index_add_(
            0, token, (y * routing.top_weight[token, slot, None].to(y.dtype)).to(out.dtype)
        )
    if layer.shared is not None:
        shared = layer.shared(h)
        if layer.shared_gate is not None:
            shared = shared * layer.shared_gate(h).sigmoid()
        out = out + shared
    return out.reshape(x.shape)
