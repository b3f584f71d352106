"""splice-recipes entry point: registers every runnable recipe by name."""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl


@hookimpl
def register_recipes(register: Any) -> None:
    """Each recipe module exposes ``recipe: splice.recipe.Recipe``."""
    register("arithmetic", "splice_recipes.arithmetic:recipe")
    register("addition", "splice_recipes.addition:recipe")
    register("translate", "splice_recipes.translate:recipe")
    register("forgetting", "splice_recipes.forgetting:recipe")
    register("lora-rank", "splice_recipes.lora_rank:recipe")
    register("dpo", "splice_recipes.dpo:recipe")
    register("clip", "splice_recipes.clip:recipe")
    register("vlm-compare", "splice_recipes.vlm_compare:recipe")
    register("r1-zero", "splice_recipes.r1_zero:recipe")
    register("r1-zero-start", "splice_recipes.r1_zero_start:recipe")
    register("ppo", "splice_recipes.ppo:recipe")
    register("moe-vs-dense", "splice_recipes.moe_vs_dense:recipe")
    register("vlm-moe", "splice_recipes.vlm_moe:recipe")
    register("rag", "splice_recipes.rag:recipe")
    register("vlm-grpo", "splice_recipes.vlm_grpo:recipe")


@hookimpl
def register_tasks(register: Any) -> None:
    """The ``markov_text`` task (``moe-vs-dense``'s language of stored rules)."""
    from splice_recipes.markov_text_config import MarkovTextTaskConfig

    register(MarkovTextTaskConfig, "splice_recipes.markov_text:build_markov_text")
