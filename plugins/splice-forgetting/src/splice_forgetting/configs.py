"""Configs of the forgetting regularizers (torch-free, so loading the plugin stays light).

Every regularizer's ``penalty`` already includes its ``weight``: the trainer adds
``sum(r.penalty(model, batch) for r in regularizers)`` to the objective's loss.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt
from splice.config import ComponentConfig


class L2SPConfig(ComponentConfig):
    """L2-SP (Li et al., 2018): pull the trainable weights toward their starting point.

    ``penalty = weight / 2 * sum_i ||theta_i - theta0_i||^2`` over the parameters that
    are trainable when ``setup`` runs (``theta0`` is snapshotted then).
    """

    type: Literal["l2sp"] = "l2sp"
    weight: float = Field(default=0.01, ge=0.0)


class EWCConfig(ComponentConfig):
    """Elastic Weight Consolidation (Kirkpatrick et al., 2017) with a diagonal Fisher.

    ``penalty = weight / 2 * sum_i F_i (theta_i - theta0_i)^2``. ``F`` is estimated at
    ``setup`` on the *old* task's batches as the mean over ``n_batches`` batches of the
    squared gradient of the batch's mean token negative log-likelihood (an empirical,
    batch-level Fisher: cheap, and proportional to the per-example one up to a factor).

    Attributes:
        weight: strength of the pull (``lambda`` in the paper).
        n_batches: how many old-task batches to average the squared gradients over.
        fisher_path: a ``.safetensors`` file; loaded if it exists, else the Fisher is
            estimated and saved there. None: estimate, do not save.
        normalize: rescale ``F`` so that its ``mean`` (or ``max``) over all entries is 1,
            which makes ``weight`` comparable across models and with L2-SP's (``"none"``
            keeps the raw Fisher, as in the paper).
    """

    type: Literal["ewc"] = "ewc"
    weight: float = Field(default=1.0, ge=0.0)
    n_batches: PositiveInt = 16
    fisher_path: str | None = None
    normalize: Literal["none", "mean", "max"] = "none"


class KLReferenceConfig(ComponentConfig):
    """KL divergence from a frozen copy of the starting model, as in RLHF/GRPO.

    Attributes:
        weight: the KL coefficient (``beta``).
        direction: ``"reverse"`` is ``KL(p_theta || p_ref)`` (what RLHF and GRPO penalise);
            ``"forward"`` is ``KL(p_ref || p_theta)`` (distillation from the reference).
            Used by ``estimator="full"``.
        estimator: ``"full"`` sums the exact KL over the vocabulary at each position;
            ``"k3"`` is GRPO's per-token estimator ``r - log r - 1`` with
            ``r = p_ref(y) / p_theta(y)`` at the batch's actual next tokens ``y``
            (unbiased for the reverse KL when ``y`` is sampled from the model).
        tokens: which positions count: ``"attention"`` every real (non-pad) token,
            ``"labels"`` only positions whose next token is supervised (``labels != -100``).
    """

    type: Literal["kl_reference"] = "kl_reference"
    weight: float = Field(default=0.1, ge=0.0)
    direction: Literal["reverse", "forward"] = "reverse"
    estimator: Literal["full", "k3"] = "full"
    tokens: Literal["attention", "labels"] = "attention"
