"""The moe channel mixer passes splice.testing's ChannelMixerConformance: shapes, gradients,
state dict, batch composition, length, packing/padding isolation on perturbed weights,
registered parameters, honoured config fields."""

from __future__ import annotations

from typing import Any, ClassVar

from splice.testing import ChannelMixerConformance
from splice_moe.configs import MoEConfig


class TestMoE(ChannelMixerConformance):
    may_skip: ClassVar[tuple[str, ...]] = ("experts.*",)  # an expert no token picked
    config_fields_exempt: ClassVar[tuple[str, ...]] = (
        "multiple",  # expert_hidden is set, which overrides it
        "grouped_mm",  # how the experts run (kernels), not what they compute
        "max_padding",  # likewise: padding of the batched expert matmul
        "n_groups",  # with top_groups unset every group is kept: the same routing
        "top_groups",  # needs n_groups > 1 to mean anything
        "shared_hidden",  # needs shared experts (n_shared >= 1): the other test
        "shared_gate",  # likewise
        "modality_experts",  # needs per-token modality ids (test_modality.py)
    )

    def make_config(self) -> Any:
        return MoEConfig(n_experts=4, top_k=2, expert_hidden=16, aux_loss_weight=0.01)


class TestSharedExpertsSigmoidRouting(ChannelMixerConformance):
    may_skip: ClassVar[tuple[str, ...]] = ("experts.*",)
    config_fields_exempt: ClassVar[tuple[str, ...]] = (
        *TestMoE.config_fields_exempt,
        "n_shared",  # shared_hidden is the total width: one MLP either way (documented)
        "aux_loss_scope",  # aux_loss_weight is 0 here: there is no balancing loss to pool
    )

    def make_config(self) -> Any:
        return MoEConfig(
            n_experts=4, top_k=2, expert_hidden=16, n_shared=1, shared_hidden=8,
            scoring="sigmoid", shared_gate=True, z_loss_weight=0.01,
        )  # fmt: skip
