"""splice-dpo entry point: the DPO-family losses, the ``dpo`` and ``kto`` objectives and
preference-data tasks. Factories are ``"module:attr"`` strings: no torch at import."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_dpo import configs as c


@hookimpl
def register_preference_losses(register: Any) -> None:
    # A preference loss's "factory" is the loss function itself: loss_fn(logps, config).
    register(c.SigmoidLossConfig, "splice_dpo.losses:sigmoid_loss")
    register(c.ConservativeLossConfig, "splice_dpo.losses:conservative_loss")
    register(c.RobustLossConfig, "splice_dpo.losses:robust_loss")
    register(c.HingeLossConfig, "splice_dpo.losses:hinge_loss")
    register(c.IPOLossConfig, "splice_dpo.losses:ipo_loss")
    register(c.SimPOLossConfig, "splice_dpo.losses:simpo_loss")
    register(c.ORPOLossConfig, "splice_dpo.losses:orpo_loss")


@hookimpl
def register_objectives(register: Any) -> None:
    register(c.DPOConfig, "splice_dpo.objective:build_dpo")
    register(c.KTOConfig, "splice_dpo.kto:build_kto")


@hookimpl
def register_tasks(register: Any) -> None:
    register(c.PreferenceJsonlTaskConfig, "splice_dpo.tasks:build_preference_jsonl")
    register(c.UnpairedJsonlTaskConfig, "splice_dpo.tasks:build_unpaired_jsonl")
