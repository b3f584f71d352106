"""splice-forgetting entry point: regularizers against catastrophic forgetting."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_forgetting.configs import EWCConfig, KLReferenceConfig, L2SPConfig


@hookimpl
def register_regularizers(register: Any) -> None:
    register(L2SPConfig, "splice_forgetting.l2sp:build_l2sp")
    register(EWCConfig, "splice_forgetting.ewc:build_ewc")
    register(KLReferenceConfig, "splice_forgetting.kl:build_kl_reference")
