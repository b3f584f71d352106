"""splice-ppo entry point: registers the ``ppo`` objective."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_ppo.configs import PPOConfig


@hookimpl
def register_objectives(register: Any) -> None:
    register(PPOConfig, "splice_ppo.objective:build_ppo")
