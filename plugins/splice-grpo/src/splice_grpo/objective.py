"""The GRPO objective: group rollouts, rule-based rewards, group-relative advantages.

Per step (``collect``): each of the ``P`` prompts is continued ``G`` times; the rewards
score the ``N = P * G`` completions; the advantage estimator turns the rewards into one
advantage per completion (GRPO: against the group's mean, the Monte-Carlo baseline); the
rollout policy's log-probs (``old``, when the policy will have moved by the time a
minibatch is trained on) and the reference's (``β > 0``) are stored. Then
(``minibatches``/``loss``) ``inner_iterations`` passes over ``minibatches`` slices::

    per_token = policy_loss(log π, log π_old, A, mask) + β * k3,   k3 = exp(q) - q - 1,
                                                                   q  = log π_ref - log π
    loss = aggregate(per_token)        # grpo | dr_grpo | token

With one update per rollout (``inner_iterations = minibatches = 1``) the policy has not
moved since the rollout, so ``log π_old`` is ``log π`` detached and no extra forward pass
is needed (TRL does the same).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from splice.interfaces import LossOutput
from splice.objectives.logprobs import token_logprobs
from splice.rl.kinds import AdvantageInputs, PolicyLossInputs, check_advantages
from splice.rl.kl import k3
from splice.rl.reference import ReferenceModel
from splice.rl.rollout import PROMPT_MODEL_INPUTS, model_inputs_of, pack_rollout
from torch import Tensor, nn

from splice_grpo.configs import GRPOConfig

#: Experience keys with one row per completion (sliced into minibatches); per-prompt model
#: inputs (a VLM's ``images``) are repeated to one row per completion too.
ROW_KEYS = (
    "input_ids",
    "completion_mask",
    "advantages",
    "weights",
    "old_logprobs",
    "ref_logprobs",
    *PROMPT_MODEL_INPUTS,
)


def aggregate(
    per_token: Tensor, mask: Tensor, weights: Tensor, how: str, max_new_tokens: int
) -> tuple[Tensor, int]:
    """Reduce ``(N, L)`` per-token losses to a scalar; returns ``(loss, count)``.

    ``weights`` ``(N,)`` is 1 for kept completions, 0 for filtered ones. ``count`` is what
    the loss is a mean over (kept sequences for ``grpo``/``dr_grpo``, kept tokens for
    ``token``), so processes holding different counts can be weighed exactly.

    * ``grpo``: ``1/n Σ_i 1/|y_i| Σ_t l_it`` (each sequence counts the same);
    * ``dr_grpo``: ``1/(n * max_new_tokens) Σ_i Σ_t l_it`` (no length bias);
    * ``token``: ``1/Σ|y_i| Σ_i Σ_t l_it`` (each token counts the same, DAPO).
    """
    m = mask.to(per_token.dtype) * weights[:, None].to(per_token.dtype)  # (N, L)
    summed = (per_token * m).sum(-1)  # (N,)
    if how == "grpo":
        count = int(weights.sum())
        lengths = mask.sum(-1).clamp(min=1).to(per_token.dtype)
        return (summed / lengths).sum() / max(count, 1), count
    if how == "dr_grpo":
        count = int(weights.sum())
        return summed.sum() / (max(count, 1) * max_new_tokens), count
    if how == "token":
        count = int(m.sum())
        return summed.sum() / max(count, 1), count
    raise ValueError(f"loss_aggregation={how!r}: expected 'grpo', 'dr_grpo' or 'token'")


class GRPOObjective:
    """GRPO as an ``OnlineObjective`` (see the module docstring).

    Args:
        config: the ``GRPOConfig``.
        rewards: a ``splice.rewards.RewardSet`` (``score(prompts, completions, references)``).
        advantage: ``advantage(AdvantageInputs) -> AdvantageOutput`` with ``(N,)`` advantages
            (``splice.rl.kinds``; build it with ``build_advantage_estimator``).
        policy_loss: ``policy_loss(PolicyLossInputs) -> PolicyLossOutput``.
    """

    def __init__(self, config: GRPOConfig, rewards: Any, advantage: Any, policy_loss: Any) -> None:
        self.config = config
        self.rewards, self.advantage, self.policy_loss = rewards, advantage, policy_loss
        self.reference: ReferenceModel | None = None

    # ------------------------------------------------------------------ lifecycle
    def setup(self, model: nn.Module, data: Any = None) -> None:
        """Make the reference from the starting policy (nothing when ``beta == 0``)."""
        if self.config.beta > 0 and self.reference is None:
            self.reference = ReferenceModel(model, mode=self.config.reference)

    def state_dict(self) -> dict[str, Any]:
        """The reference copy's weights (empty when it shares the policy's, or β = 0)."""
        ref = self.reference.state_dict() if self.reference is not None else {}
        return {f"reference.{k}": v for k, v in ref.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.reference is not None:
            self.reference.load_state_dict(
                {k[len("reference.") :]: v for k, v in state.items() if k.startswith("reference.")}
            )

    # ------------------------------------------------------------------ rollout
    def _slices(self, n_rows: int) -> list[slice]:
        """Row ranges of the minibatches: whole groups, as even as possible."""
        g = self.config.group_size
        groups = torch.arange(n_rows // g).tensor_split(min(self.config.minibatches, n_rows // g))
        return [slice(int(c[0]) * g, (int(c[-1]) + 1) * g) for c in groups if c.numel()]

    def collect(
        self, model: nn.Module, prompts: Mapping[str, Any], generate: Any
    ) -> dict[str, Any]:
        """Generate ``G`` completions per prompt, score them, store advantages and log-probs.

        Returns the experience: ``input_ids``/``completion_mask`` ``(N, T)``, ``advantages``,
        ``weights``, ``rewards`` ``(N,)``, ``old_logprobs``/``ref_logprobs`` ``(N, T-1)`` when
        needed, ``max_new_tokens`` and ``metrics``.

        Raises:
            RewardError: a reward raised or returned NaN/inf (names the reward and value).
        """
        cfg, g = self.config, self.config.group_size
        prompt_ids = list(prompts["prompt_ids"])
        inputs = model_inputs_of(prompts)  # e.g. images: generation conditions on them
        out = generate(model, prompt_ids, n=g, **({"model_inputs": inputs} if inputs else {}))
        texts = generate.texts(out)
        rows = out.prompt_index.tolist()
        scores = self.rewards.score(
            [prompts["prompts"][i] for i in rows], texts, [prompts["references"][i] for i in rows]
        )
        rewards = scores.total.to(out.tokens.device)  # (N,)
        estimated = AdvantageInputs(rewards=rewards, group_size=g)
        advantages = check_advantages(  # GRPO: one advantage per completion
            self.advantage(estimated), estimated, cfg.advantage.type, per_token=False
        )
        grouped = rewards.view(-1, g)
        equal = grouped.amax(-1) == grouped.amin(-1)  # (P,)
        weights = torch.ones_like(rewards)
        if cfg.filter_equal_groups:
            weights = (~equal).repeat_interleave(g).to(rewards.dtype)
        batch = pack_rollout(prompt_ids, out, generate.pad_id, inputs)
        experience: dict[str, Any] = {
            **batch,
            "advantages": advantages,
            "weights": weights,
            "rewards": rewards,
            "max_new_tokens": cfg.max_new_tokens or generate.sampling.max_new_tokens,
        }
        ids, cmask = batch["input_ids"], batch["completion_mask"]
        rows_inputs = model_inputs_of(batch)  # (N, ...): the same images for every forward
        if cfg.inner_iterations > 1 or len(self._slices(len(rows))) > 1:
            # The policy moves after the first update: keep the rollout policy's log-probs,
            # computed on exactly the minibatches `loss` will see (same rows, same width),
            # so the first ratio is exactly 1. With grad enabled, as in `loss`: some kernels
            # (the RoPE training path) differ from the no-grad ones in the last bit.
            with torch.enable_grad():
                experience["old_logprobs"] = torch.cat(
                    [
                        token_logprobs(
                            model, ids[s], cmask[s], **{k: v[s] for k, v in rows_inputs.items()}
                        ).logprobs.detach()
                        for s in self._slices(len(rows))
                    ]
                )
        if self.reference is not None:
            experience["ref_logprobs"] = torch.cat(
                [
                    self.reference.token_logprobs(
                        ids[s], cmask[s], **{k: v[s] for k, v in rows_inputs.items()}
                    )
                    for s in self._slices(len(rows))
                ]
            )
        lengths = batch["lengths"].float()
        experience["metrics"] = {
            "reward": float(rewards.mean()),
            "reward_std": float(grouped.std(-1).mean()),
            **scores.metrics(),
            "completion_length": float(lengths.mean()),
            "equal_reward_groups": float(equal.float().mean()),
            "kept": float(weights.mean()),
            "advantage_abs": float(advantages.abs().mean()),
        }
        return experience

    def minibatches(self, experience: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """``inner_iterations`` passes over the minibatch slices, in order."""
        slices = self._slices(int(experience["input_ids"].shape[0]))
        for _ in range(self.config.inner_iterations):
            for s in slices:
                yield {
                    **{k: v[s] for k, v in experience.items() if k in ROW_KEYS},
                    "max_new_tokens": experience["max_new_tokens"],
                }

    # ------------------------------------------------------------------ loss
    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput:
        """The GRPO loss of one minibatch (see the module docstring)."""
        cfg = self.config
        tl = token_logprobs(
            model, batch["input_ids"], batch["completion_mask"], **model_inputs_of(batch)
        )
        lp, mask = tl.logprobs, tl.mask  # (B, T-1)
        old = batch.get("old_logprobs")
        if old is None:
            old = lp.detach()
        pl = self.policy_loss(PolicyLossInputs(lp, old, batch["advantages"], mask))
        per_token = pl.per_token
        metrics = {k: float(v) for k, v in pl.metrics.items()}
        ref = batch.get("ref_logprobs")
        if cfg.beta > 0 and ref is not None:
            kl = k3(lp, ref)  # (B, T-1), >= 0, unbiased for KL(π || π_ref)
            per_token = per_token + cfg.beta * kl
            m = mask.float()
            metrics["kl"] = float((kl.detach() * m).sum() / m.sum().clamp(min=1))
        loss, count = aggregate(
            per_token, mask, batch["weights"], cfg.loss_aggregation, int(batch["max_new_tokens"])
        )
        if tl.aux_loss is not None:  # e.g. MoE balancing of the policy
            loss = loss + tl.aux_loss
        metrics["tokens"] = float(count)
        return LossOutput(loss=loss, metrics=metrics, n_tokens=count)


def build_grpo(config: GRPOConfig, ctx: object = None) -> GRPOObjective:
    """Build the rewards, estimator and policy loss through the registry."""
    from splice.rewards import build_rewards
    from splice.rl.kinds import build_advantage_estimator, build_policy_loss

    return GRPOObjective(
        config,
        build_rewards(config.rewards),
        build_advantage_estimator(config.advantage),
        build_policy_loss(config.policy_loss),
    )


__all__ = ["GRPOObjective", "aggregate", "build_grpo"]
