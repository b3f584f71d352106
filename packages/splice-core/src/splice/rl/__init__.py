"""RL maths and plumbing shared by every online objective (PPO, GRPO) and the forgetting KL.

- ``splice.rl.kl``: per-token KL estimators to a reference (``k1``, ``k3``): the one k3.
- ``splice.rl.stats``: masked mean / variance, whitening, explained variance.
- ``splice.rl.advantages``: GAE and group normalisation of rewards.
- ``splice.rl.surrogate``: the clipped surrogate (PPO's policy loss, GRPO's policy losses).
- ``splice.rl.rollout``: prompt batches, the per-step seeded generator, packing a rollout.
- ``splice.rl.reference``: the reference model (adapters off for a LoRA policy, else a
  frozen copy) and its log-probs.
- ``splice.rl.kinds``: the contract of the registered ``advantage_estimator`` and
  ``policy_loss`` kinds (``AdvantageInputs -> AdvantageOutput``, ``PolicyLossInputs ->
  PolicyLossOutput``), where new algorithms plug in; ``splice.rl.estimators`` (``gae``) and
  ``splice.rl.policy_losses`` (``clipped_token``) are the core's registered ones, which PPO
  and GRPO both build through the registry.
"""
