"""Generalized advantage estimation and the masked statistics PPO needs.

The maths lives in ``splice.rl`` (shared with GRPO and the forgetting KL); this module
keeps PPO's names for them.
"""

from __future__ import annotations

from splice.rl.advantages import gae
from splice.rl.stats import explained_variance, masked_mean, masked_var, whiten

__all__ = ["explained_variance", "gae", "masked_mean", "masked_var", "whiten"]
