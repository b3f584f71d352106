"""``PPOObjective``: rollout, KL-shaped rewards, advantages, and policy + value updates.

The online trainer drives it: ``collect(model, prompts, generate)`` makes one rollout
(the experience), ``minibatches(experience)`` yields ``epochs`` shuffled passes over it
(one optimizer update each, stopping early on approximate KL), and ``loss(model, mb)``
is the PPO loss of one minibatch. ``trainable_modules()`` hands the value head (or the
separate critic) to the trainer's optimizer and checkpoints.

The advantage estimator (GAE by default) and the policy loss (the clipped surrogate by
default) are registered kinds (``splice.rl.kinds``) built from the config through the
registry; the value loss and the KL-shaped rewards are PPO's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from splice.interfaces import LossOutput
from splice.objectives.logprobs import TokenLogprobs, token_logprobs
from splice.rl.advantages import gae
from splice.rl.kinds import (
    AdvantageInputs,
    PolicyLossInputs,
    build_advantage_estimator,
    build_policy_loss,
    check_advantages,
)
from splice.rl.kl import token_kl
from splice.rl.reference import ReferenceModel
from splice.rl.stats import explained_variance, masked_mean, whiten
from torch import Tensor, nn

from splice_ppo.configs import PPOConfig
from splice_ppo.kl import AdaptiveKLController, shaped_rewards
from splice_ppo.losses import clipped_value_loss
from splice_ppo.rollout import Sequences, build_sequences
from splice_ppo.value_head import SeparateCritic, ValueHead, hidden_size

#: The per-row tensors of an experience batch that minibatches slice.
ROW_KEYS = (
    "input_ids",
    "attention_mask",
    "positions",
    "score_mask",
    "completion_mask",
    "old_logprobs",
    "old_values",
    "advantages",
    "returns",
)


class PPOObjective:
    """PPO for language models; see ``PPOConfig`` for every knob.

    Args:
        config: the ``PPOConfig``.
        tokenizer: decodes completions for the rewards (``decode(ids) -> str``, ``pad_id``)
            when ``generate`` has no ``texts`` method (the trainer's generator has one).
        rewards: a ``RewardSet``-like scorer overriding ``config.rewards`` (tests, custom code):
            ``score(prompts, completions, references) -> RewardScores``.
        advantage: an ``AdvantageEstimator`` overriding ``config.advantage_config()`` (built
            through the registry when None).
        policy_loss: a ``PolicyLoss`` overriding ``config.policy_loss_config()`` (likewise).
    """

    def __init__(
        self,
        config: PPOConfig,
        *,
        tokenizer: Any = None,
        rewards: Any = None,
        advantage: Any = None,
        policy_loss: Any = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        if rewards is None:
            from splice.rewards import build_rewards

            rewards = build_rewards(config.rewards)
        self.rewards = rewards
        self.advantage_tag = (  # how errors name the estimator
            str(config.advantage_config().type)
            if advantage is None
            else getattr(advantage, "__name__", type(advantage).__name__)
        )
        self.advantage = advantage or build_advantage_estimator(config.advantage_config())
        self.policy_loss = policy_loss or build_policy_loss(config.policy_loss_config())
        self.kl_ctl = AdaptiveKLController(
            config.kl_coef, target=config.kl_target, horizon=config.kl_horizon
        )
        self.value_head: ValueHead | None = None
        self.critic: SeparateCritic | None = None
        self.reference: ReferenceModel | None = None
        self.rollouts = 0  # rollouts collected so far (seeds each one's minibatch order)
        self.stopped_early = False  # set by ``loss`` when approx KL passes ``target_kl``

    # ------------------------------------------------------------------ setup
    def setup(self, model: nn.Module, data: Any = None) -> None:
        """Build the critic and the reference for ``model`` (once, at its starting weights).

        The trainer calls it before building the optimizer and loading a checkpoint;
        ``data`` (the run's reference data) is not used by PPO.
        """
        if self.value_head is not None or self.critic is not None:
            return
        d_model = hidden_size(model)
        device = next(model.parameters()).device
        drop = self.config.value_head_dropout
        critic: nn.Module
        if self.config.critic == "shared":
            critic = self.value_head = ValueHead(d_model, dropout=drop).to(device)
        else:
            critic = self.critic = SeparateCritic.from_policy(model, d_model, dropout=drop).to(
                device
            )
        if self.config.value_lr_scale != 1.0:  # the trainer's optimizer reads param_lr_scale
            critic.param_lr_scale = {
                name: self.config.value_lr_scale for name, _ in critic.named_parameters()
            }
        if self.config.kl_coef > 0 or self.config.kl_target is not None:
            self.reference = ReferenceModel(model, mode=self.config.reference)

    def trainable_modules(self) -> dict[str, nn.Module]:
        """``{"value_head": ...}`` (shared trunk) or ``{"critic": ...}`` (separate critic)."""
        if self.value_head is not None:
            return {"value_head": self.value_head}
        if self.critic is not None:
            return {"critic": self.critic}
        raise RuntimeError("PPOObjective.setup(model) must run before trainable_modules()")

    # ------------------------------------------------------------------ forward
    def _forward(
        self, model: nn.Module, batch: Mapping[str, Any], *, with_entropy: bool
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(logprobs, values, entropy, aux_loss)`` of the completion tokens, each ``(N, L)``."""
        p = int(batch["prompt_width"])
        inputs = {"attention_mask": batch["attention_mask"], "positions": batch["positions"]}
        ids = batch["input_ids"]
        out: TokenLogprobs = token_logprobs(
            model, ids, batch["score_mask"], with_entropy=with_entropy, **inputs
        )
        if self.value_head is not None:
            assert out.hidden is not None
            values = self.value_head(out.hidden[:, :-1])  # (N, T-1): V(s) before each token
        elif self.critic is not None:
            values = self.critic(ids, **inputs)[:, :-1]
        else:
            raise RuntimeError("PPOObjective.setup(model) must run before collect/loss")
        ent = out.entropy[:, p - 1 :] if out.entropy is not None else None
        return out.logprobs[:, p - 1 :], values[:, p - 1 :], ent, out.aux_loss

    # ------------------------------------------------------------------ rollout
    def collect(
        self, model: nn.Module, prompts: Mapping[str, Any], generate: Callable[..., Any]
    ) -> dict[str, Any]:
        """Generate, score, and compute advantages and returns for one rollout.

        Args:
            model: the policy.
            prompts: a prompt batch (``splice.rl.rollout.PromptBatches``): ``prompt_ids``
                (``B`` lists of token ids), ``prompts`` (their texts; decoded from the ids when
                absent), ``references`` (the rewards' reference answers).
            generate: ``generate(model, prompt_ids, n=...) -> GenerationOutput``, the core
                generator bound to the run's sampling config (a ``RolloutGenerator``); its
                ``texts(out)`` and ``pad_id`` are used when present, else the tokenizer's.

        Returns:
            The experience: ``ROW_KEYS`` tensors (``N`` rows), ``prompt_width`` and ``metrics``.
        """
        self.setup(model)
        prompt_ids, texts, refs = _read_prompts(prompts, self.tokenizer)
        pad_id = int(getattr(generate, "pad_id", getattr(self.tokenizer, "pad_id", 0)))
        gen = generate(model, prompt_ids, n=self.config.samples_per_prompt)
        if gen.tokens.shape[1] == 0:
            raise ValueError("generate returned 0 tokens per row; max_new_tokens must be >= 1")
        seq = build_sequences(prompt_ids, gen, pad_id=pad_id)
        idx = gen.prompt_index.tolist()
        if callable(getattr(generate, "texts", None)):  # the run's RolloutGenerator decodes
            completions = list(generate.texts(gen))
        else:
            completions = [_decode(self.tokenizer, row) for row in gen.completions()]
        scored = self.rewards.score([texts[i] for i in idx], completions, [refs[i] for i in idx])
        scores = scored.total.to(seq.input_ids.device, torch.float32)  # (N,)
        experience = self._advantages(model, seq, scores)
        metrics = {
            "reward": float(scores.mean()),
            "completion_length": float(seq.completion_mask.sum(-1).float().mean()),
            **{k: v for k, v in scored.metrics().items() if k != "reward/total"},
            **experience.pop("metrics"),
        }
        self.rollouts += 1
        self.stopped_early = False
        experience["metrics"] = metrics
        return experience

    @torch.no_grad()
    def _advantages(self, model: nn.Module, seq: Sequences, scores: Tensor) -> dict[str, Any]:
        cfg = self.config
        batch = {
            "input_ids": seq.input_ids,
            "attention_mask": seq.attention_mask,
            "positions": seq.positions,
            "score_mask": seq.score_mask,
            "prompt_width": seq.prompt_width,
        }
        old_logprobs, old_values, _, _ = self._forward(model, batch, with_entropy=False)
        mask = seq.completion_mask  # (N, L)
        kl = torch.zeros_like(old_logprobs)
        if self.reference is not None:
            ref = self.reference.token_logprobs(
                seq.input_ids, seq.score_mask, **seq.model_inputs()
            )[:, seq.prompt_width - 1 :]
            kl = token_kl(old_logprobs, ref, estimator=cfg.kl_estimator) * mask
        kl_coef = self.kl_ctl.value
        rewards = shaped_rewards(scores, kl, mask, kl_coef=kl_coef)
        if cfg.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        inputs = AdvantageInputs(
            rewards=scores,
            group_size=cfg.samples_per_prompt,  # generate keeps a prompt's samples adjacent
            mask=mask,
            token_rewards=rewards,
            values=old_values,
        )
        estimate = self.advantage(inputs)
        advantages = check_advantages(estimate, inputs, self.advantage_tag, per_token=True)
        if advantages.ndim == 1:  # one per completion: it applies to each of its tokens
            advantages = advantages[:, None].expand_as(old_values) * mask
        returns = estimate.returns
        if returns is None:  # no critic targets from the estimator: the discounted return
            returns = gae(rewards, old_values, mask, gamma=cfg.gamma, lam=1.0)[1]
        if returns.shape != mask.shape:
            raise ValueError(
                f"advantage estimator {self.advantage_tag!r} returned returns of shape "
                f"{tuple(returns.shape)}; expected {tuple(mask.shape)} (one per token)"
            )
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        seq_kl = float(kl.sum(-1).mean())  # per-sequence KL, what the controller targets
        self.kl_ctl.update(seq_kl, int(scores.numel()))
        metrics = {
            "kl": seq_kl,
            "kl_coef": kl_coef,
            "value_mean": float(masked_mean(old_values, mask)),
            "return_mean": float(masked_mean(returns, mask)),
            "explained_variance": float(explained_variance(old_values, returns, mask)),
        }
        return {
            **batch,
            "completion_mask": mask,
            "old_logprobs": old_logprobs,
            "old_values": old_values,
            "advantages": advantages,
            "returns": returns,
            "metrics": metrics,
        }

    def minibatches(self, experience: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """``epochs`` shuffled passes of ``minibatch_size`` rows; stops once ``loss`` saw
        approximate KL above ``target_kl`` (checked before each further update)."""
        n = int(experience["input_ids"].shape[0])
        size = self.config.minibatch_size or n
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.rollouts)
        for epoch in range(self.config.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, size):
                if self.stopped_early:
                    return
                rows = order[start : start + size].to(experience["input_ids"].device)
                mb = {k: experience[k][rows] for k in ROW_KEYS}
                mb["prompt_width"] = experience["prompt_width"]
                mb["epoch"] = epoch
                yield mb

    # ------------------------------------------------------------------ loss
    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> LossOutput:
        """``policy_loss + vf_coef * value_loss - entropy_coef * entropy`` of one minibatch."""
        cfg = self.config
        missing = [k for k in ROW_KEYS if k not in batch]
        if missing:
            raise ValueError(
                f"a PPO minibatch needs {list(ROW_KEYS)} (from collect), missing {missing}"
            )
        logprobs, values, entropy, aux = self._forward(model, batch, with_entropy=True)
        mask, old = batch["completion_mask"], batch["old_logprobs"]
        pol = self.policy_loss(PolicyLossInputs(logprobs, old, batch["advantages"], mask))
        pol_loss = masked_mean(pol.per_token, mask)  # every generated token weighs the same
        with torch.no_grad():  # an estimate of KL(π_old || π), for target_kl
            local_kl = masked_mean(0.5 * (logprobs.detach() - old) ** 2, mask)
        val = clipped_value_loss(
            values, batch["old_values"], batch["returns"], mask, clip=cfg.value_clip
        )
        assert entropy is not None
        ent = masked_mean(entropy, mask)
        loss = pol_loss + cfg.vf_coef * val.loss
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * ent
        if aux is not None:
            loss = loss + aux
        approx_kl = _global_mean(local_kl)  # every rank stops at the same update
        if cfg.target_kl is not None and approx_kl > cfg.target_kl:
            self.stopped_early = True
        n_tokens = int(mask.sum())
        metrics = {
            **{k: float(v) for k, v in pol.metrics.items()},  # clip_fraction, ratio_mean, ...
            "policy_loss": float(pol_loss.detach()),
            "value_loss": float(val.loss.detach()),
            "value_clip_fraction": float(val.clip_fraction),
            "approx_kl": approx_kl,
            "entropy": float(ent.detach()),
            "loss": float(loss.detach()),
            "tokens": float(n_tokens),
        }
        if "ratio_mean" in metrics:  # PPO's name for it in 0.1 logs
            metrics["ratio"] = metrics["ratio_mean"]
        return LossOutput(loss=loss, metrics=metrics, n_tokens=n_tokens)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """What exact resume needs besides the critic's weights: ``β`` and the rollout count."""
        return {**self.kl_ctl.state_dict(), "rollouts": self.rollouts}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.kl_ctl.load_state_dict({"kl_coef": float(state["kl_coef"])})
        self.rollouts = int(state["rollouts"])


def _decode(tokenizer: Any, ids: list[int]) -> str:
    if tokenizer is None:
        raise ValueError(
            "PPO needs a tokenizer to decode completions for the rewards: pass "
            "PPOObjective(config, tokenizer=...) or a generate with a texts() method"
        )
    eos = getattr(tokenizer, "eos_id", None)
    if ids and eos is not None and ids[-1] == eos:
        ids = ids[:-1]
    text: str = tokenizer.decode(ids)
    return text


def _global_mean(x: Tensor) -> float:
    """``x``'s mean over processes under torchrun (one process: ``x``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        x = x.detach().clone()
        dist.all_reduce(x)
        x = x / dist.get_world_size()
    return float(x)


def _read_prompts(
    prompts: Mapping[str, Any], tokenizer: Any
) -> tuple[list[list[int]], list[str], list[str | None]]:
    ids = prompts.get("prompt_ids")
    if ids is None:
        raise ValueError(
            f"PPO prompts need 'prompt_ids' (lists of token ids), got {sorted(prompts)}"
        )
    ids = [list(map(int, p)) for p in ids]
    if not ids:
        raise ValueError("prompt_ids is empty; a rollout needs at least one prompt")
    texts: Sequence[str] | None = prompts.get("prompts")
    if texts is None:
        texts = [_decode(tokenizer, p) for p in ids]
    # No references: None per prompt, never "": a reward that needs one (answer_match)
    # then stops naming the prompt instead of rewarding an empty answer.
    refs: Sequence[str | None] | None = prompts.get("references")
    if refs is None:
        refs = [None] * len(ids)
    if not len(texts) == len(refs) == len(ids):
        raise ValueError(
            f"{len(ids)} prompt_ids, {len(texts)} prompts and {len(refs)} references: "
            "need one of each per prompt"
        )
    return ids, list(texts), list(refs)


def build_ppo(config: PPOConfig, ctx: object = None) -> PPOObjective:
    """PPO with its advantage estimator and policy loss built through the registry."""
    return PPOObjective(config)


__all__ = ["ROW_KEYS", "PPOObjective", "build_ppo"]
