"""splice-ppo: PPO for language models.

``configs.PPOConfig`` (torch-free) configures ``objective.PPOObjective``; the parts are
``advantages`` (GAE, whitening, explained variance), ``losses`` (clipped policy and value
losses), ``kl`` (per-token KL penalty, adaptive coefficient), ``value_head`` (value head on
the policy trunk or a separate critic) and ``rollout`` (prompt + completion sequences).
"""
