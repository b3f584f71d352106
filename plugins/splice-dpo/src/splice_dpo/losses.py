"""The DPO family of pairwise preference losses, each one function of summed log-probs.

A preference loss is registered (kind ``preference_loss``) as ``(ConfigClass, loss_fn)``
where ``loss_fn(logps: PreferenceLogps, config) -> Tensor (B,) | PreferenceLossOutput``:
per-pair losses (the objective takes their mean), optionally with the implicit rewards
to log. That single function is all a third-party DPO-style loss needs; the ``dpo``
objective does the forward passes, the reference and the logging.

Notation: for pair ``i``, ``c``/``r`` are the policy's summed log-probs of the chosen /
rejected completion, ``c_ref``/``r_ref`` the reference's, ``n_c``/``n_r`` the completion
token counts, ``Δ = (c - c_ref) - (r - r_ref)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from splice.objectives.preference import PreferenceLogps, PreferenceLossOutput
from torch import Tensor

from splice_dpo.configs import (
    ConservativeLossConfig,
    HingeLossConfig,
    IPOLossConfig,
    ORPOLossConfig,
    RobustLossConfig,
    SigmoidLossConfig,
    SimPOLossConfig,
)


def _dpo_rewards(logps: PreferenceLogps, beta: float) -> tuple[Tensor, Tensor]:
    chosen, rejected = logps.logratios()
    return beta * chosen.detach(), beta * rejected.detach()


def _smoothed(logits: Tensor, eps: float) -> Tensor:
    """``-(1-ε) log σ(x) - ε log σ(-x)``: the sigmoid loss against a soft label ``1-ε``."""
    return -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)


def sigmoid_loss(logps: PreferenceLogps, config: SigmoidLossConfig) -> PreferenceLossOutput:
    """DPO: ``-log σ(βΔ)``."""
    losses = -F.logsigmoid(config.beta * logps.delta())
    return PreferenceLossOutput(losses, *_dpo_rewards(logps, config.beta))


def conservative_loss(
    logps: PreferenceLogps, config: ConservativeLossConfig
) -> PreferenceLossOutput:
    """cDPO: ``-(1-ε) log σ(βΔ) - ε log σ(-βΔ)``."""
    losses = _smoothed(config.beta * logps.delta(), config.label_smoothing)
    return PreferenceLossOutput(losses, *_dpo_rewards(logps, config.beta))


def robust_loss(logps: PreferenceLogps, config: RobustLossConfig) -> PreferenceLossOutput:
    """rDPO: ``(-(1-ε) log σ(βΔ) + ε log σ(-βΔ)) / (1 - 2ε)``, unbiased under flip rate ε."""
    eps, x = config.label_smoothing, config.beta * logps.delta()
    losses = (-(1 - eps) * F.logsigmoid(x) + eps * F.logsigmoid(-x)) / (1 - 2 * eps)
    return PreferenceLossOutput(losses, *_dpo_rewards(logps, config.beta))


def hinge_loss(logps: PreferenceLogps, config: HingeLossConfig) -> PreferenceLossOutput:
    """``max(0, 1 - βΔ)``."""
    losses = torch.relu(1 - config.beta * logps.delta())
    return PreferenceLossOutput(losses, *_dpo_rewards(logps, config.beta))


def ipo_loss(logps: PreferenceLogps, config: IPOLossConfig) -> PreferenceLossOutput:
    """IPO: ``(Δ̄ - 1/(2β))²``, ``Δ̄`` the difference of per-token average log-ratios."""
    chosen, rejected = logps.logratios()
    delta = chosen / logps.chosen_tokens.clamp(min=1.0) - rejected / logps.rejected_tokens.clamp(
        min=1.0
    )
    losses = (delta - 1 / (2 * config.beta)) ** 2
    return PreferenceLossOutput(losses, *_dpo_rewards(logps, config.beta))


def simpo_loss(logps: PreferenceLogps, config: SimPOLossConfig) -> PreferenceLossOutput:
    """SimPO: ``-log σ(β(ā_c - ā_r) - γ)`` (optionally label-smoothed); no reference."""
    avg_c, avg_r = logps.average()
    logits = config.beta * (avg_c - avg_r) - config.gamma
    losses = _smoothed(logits, config.label_smoothing)
    return PreferenceLossOutput(losses, config.beta * avg_c.detach(), config.beta * avg_r.detach())


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable on both sides of ``-ln 2``; any shape.

    ``torch.where`` evaluates both branches and backpropagates through both (the unused
    one times 0), so each branch gets an input clamped into its own safe range: without
    that, ``log1p(-exp(x))`` at ``x`` in ``(-3e-8, 0]`` (float32 ``exp(x) == 1``) has an
    infinite gradient and ``0 * inf`` is a NaN gradient for a confident model. ``x >= 0``
    (no longer a probability's log) is read as the largest float below 0: finite.
    """
    low = -math.log(2)
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)
    far = x < low
    x_far = torch.where(far, x, torch.full_like(x, low))  # log1p branch sees only x < -ln 2
    x_near = torch.where(far, torch.full_like(x, low), x)  # expm1 branch sees only x >= -ln 2
    return torch.where(far, torch.log1p(-torch.exp(x_far)), torch.log(-torch.expm1(x_near)))


def orpo_loss(logps: PreferenceLogps, config: ORPOLossConfig) -> PreferenceLossOutput:
    """ORPO: ``NLL(chosen) - λ log σ(log odds(ā_c) - log odds(ā_r))``; no reference.

    The NLL is the token mean over the batch's chosen completions (the SFT loss); it is
    added to each pair's loss, so the batch mean is ``NLL - λ mean(log σ(...))``.
    """
    avg_c, avg_r = logps.average()
    log_odds = (avg_c - avg_r) - (log1mexp(avg_c) - log1mexp(avg_r))
    nll = -logps.chosen.sum() / logps.chosen_tokens.sum().clamp(min=1.0)
    losses = nll - config.beta * F.logsigmoid(log_odds)
    return PreferenceLossOutput(losses, config.beta * avg_c.detach(), config.beta * avg_r.detach())


def as_output(result: Any, logps: PreferenceLogps, config: Any) -> PreferenceLossOutput:
    """A loss function's result as ``PreferenceLossOutput`` (a bare ``(B,)`` tensor gets
    rewards ``β · log-ratio``, or ``β · average log-prob`` without a reference)."""
    if isinstance(result, PreferenceLossOutput):
        out = result
    elif isinstance(result, Tensor):
        beta = float(getattr(config, "beta", 1.0))
        if logps.ref_chosen is not None:
            rewards = _dpo_rewards(logps, beta)
        else:
            avg_c, avg_r = logps.average()
            rewards = (beta * avg_c.detach(), beta * avg_r.detach())
        out = PreferenceLossOutput(result, *rewards)
    else:
        raise TypeError(
            f"preference loss {getattr(config, 'type', '?')!r} returned {type(result).__name__}; "
            "expected a (B,) tensor of per-pair losses or a PreferenceLossOutput"
        )
    n = logps.chosen.shape[0]
    if out.losses.shape != (n,):
        raise ValueError(
            f"preference loss {getattr(config, 'type', '?')!r} returned shape "
            f"{tuple(out.losses.shape)} for {n} pairs; expected ({n},) per-pair losses"
        )
    return out


__all__ = [
    "PreferenceLogps",
    "PreferenceLossOutput",
    "as_output",
    "conservative_loss",
    "hinge_loss",
    "ipo_loss",
    "log1mexp",
    "orpo_loss",
    "robust_loss",
    "sigmoid_loss",
    "simpo_loss",
]
