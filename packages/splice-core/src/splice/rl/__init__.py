"""RL maths and plumbing shared by every online objective (PPO, GRPO) and the forgetting KL.

- ``splice.rl.kl``: per-token KL estimators to a reference (``k1``, ``k3``): the one k3.
- ``splice.rl.stats``: masked mean / variance, whitening, explained variance.
- ``splice.rl.advantages``: GAE and group normalisation of rewards.
- ``splice.rl.surrogate``: the clipped surrogate (PPO's policy loss, GRPO's policy losses).
- ``splice.rl.rollout``: prompt batches, the per-step seeded generator, packing a rollout.
- ``splice.rl.reference``: the reference model (adapters off for a LoRA policy, else a
  frozen copy) and its log-probs.

Plugins build on these; the registered ``advantage_estimator`` and ``policy_loss`` kinds
(``splice.hookspecs``) are where new algorithms plug in.
"""
