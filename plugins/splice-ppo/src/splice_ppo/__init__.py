"""splice-ppo: PPO for language models.

``configs.PPOConfig`` (torch-free) configures ``objective.PPOObjective``. The advantage
estimator (``gae`` by default) and the policy loss (``clipped_token`` by default) are the
registered kinds of ``splice.rl.kinds``, built from the config through the registry; PPO's
own parts are ``kl`` (the KL-shaped per-token rewards and the adaptive coefficient),
``losses`` (the clipped value loss), ``value_head`` (value head on the policy trunk or a
separate critic) and ``rollout`` (prompt + completion sequences).
"""
