"""Configs of splice-dpo (torch-free, so ``splice plugins`` stays fast).

Preference losses (kind ``preference_loss``) score a batch of pairs from their summed
log-probs; the ``dpo`` objective computes those log-probs (one forward for chosen and
rejected together) and applies the configured loss. ``kto`` is a separate objective
because its data is unpaired.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat, model_validator
from splice.config import ComponentConfig, PreferenceLossField


class SigmoidLossConfig(ComponentConfig):
    """DPO (Rafailov et al., 2023): ``-log σ(β Δ)``, ``Δ`` the chosen minus rejected log-ratio.

    Attributes:
        beta: the KL coefficient β; larger keeps the policy closer to the reference.
    """

    type: Literal["sigmoid"] = "sigmoid"
    beta: PositiveFloat = 0.1
    needs_reference: ClassVar[bool] = True


class ConservativeLossConfig(ComponentConfig):
    """Conservative DPO (cDPO): labels flipped with probability ε,
    ``-(1-ε) log σ(βΔ) - ε log σ(-βΔ)``."""

    type: Literal["cdpo"] = "cdpo"
    beta: PositiveFloat = 0.1
    label_smoothing: float = Field(default=0.1, gt=0.0, lt=0.5)
    needs_reference: ClassVar[bool] = True


class RobustLossConfig(ComponentConfig):
    """Robust DPO (Chowdhury et al., 2024): the unbiased loss under label noise ε,
    ``(-(1-ε) log σ(βΔ) + ε log σ(-βΔ)) / (1 - 2ε)``."""

    type: Literal["robust"] = "robust"
    beta: PositiveFloat = 0.1
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=0.5)
    needs_reference: ClassVar[bool] = True


class HingeLossConfig(ComponentConfig):
    """SLiC-style hinge: ``max(0, 1 - βΔ)``."""

    type: Literal["hinge"] = "hinge"
    beta: PositiveFloat = 0.1
    needs_reference: ClassVar[bool] = True


class IPOLossConfig(ComponentConfig):
    """IPO (Azar et al., 2023): ``(Δ̄ - 1/(2β))²`` with per-token (length-averaged) log-ratios,
    as in TRL (confirmed with the IPO authors)."""

    type: Literal["ipo"] = "ipo"
    beta: PositiveFloat = 0.1
    needs_reference: ClassVar[bool] = True


class SimPOLossConfig(ComponentConfig):
    """SimPO (Meng et al., 2024), reference-free: ``-log σ(β(ā_c - ā_r) - γ)``,
    ``ā`` the per-token average log-prob, ``γ`` the target margin.

    Attributes:
        beta: reward scale (the paper uses 2.0-2.5).
        gamma: target reward margin γ (the paper's γ/β ratio ~0.5).
        label_smoothing: conservative smoothing, as in TRL's CPO trainer (0: none).
    """

    type: Literal["simpo"] = "simpo"
    beta: PositiveFloat = 2.0
    gamma: float = Field(default=1.0, ge=0.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5)
    needs_reference: ClassVar[bool] = False


class ORPOLossConfig(ComponentConfig):
    """ORPO (Hong et al., 2024), reference-free: ``NLL(chosen) - λ log σ(log odds_c - log odds_r)``
    with ``odds = p / (1 - p)`` of the per-token average probability.

    Attributes:
        beta: λ, the weight of the odds-ratio term against the SFT (NLL) term.
    """

    type: Literal["orpo"] = "orpo"
    beta: PositiveFloat = 0.1
    needs_reference: ClassVar[bool] = False


ReferenceMode = Literal["auto", "adapters_off", "copy"]


class DPOConfig(ComponentConfig):
    """Direct preference optimisation with any registered ``preference_loss``.

    Attributes:
        loss: the pairwise loss (``sigmoid`` DPO by default; ``ipo``, ``hinge``, ``cdpo``,
            ``robust``, ``simpo``, ``orpo``, or a third party's).
        reference: ``"auto"`` (adapters off on a LoRA policy, else a frozen copy),
            ``"adapters_off"`` or ``"copy"``. Unused by reference-free losses.
        precompute_reference: compute the reference log-probs once over the (finite)
            dataset before training, save them beside the run
            (``reference_logps.safetensors``) and reuse them on resume, instead of a
            reference forward every step.
        aux_loss_weight: multiplier of the model's auxiliary loss (MoE balancing), if any.
    """

    type: Literal["dpo"] = "dpo"
    loss: PreferenceLossField = Field(default="sigmoid", validate_default=True)
    reference: ReferenceMode = "auto"
    precompute_reference: bool = False
    aux_loss_weight: float = Field(default=0.0, ge=0.0)


class KTOConfig(ComponentConfig):
    """KTO (Ethayarajh et al., 2024) on unpaired desirable/undesirable completions.

    Per example, with ``r = log π(y|x) - log π_ref(y|x)`` and ``z`` the batch's
    reference-point KL estimate (detached, clamped at 0):
    desirable ``w_d (1 - σ(β(r - z)))``, undesirable ``w_u (1 - σ(β(z - r)))``.
    ``z`` is estimated on mismatched pairs: each completion scored after the next
    example's prompt (as TRL does).

    Attributes:
        beta: β.
        desirable_weight / undesirable_weight: λ_D, λ_U (balance the two kinds).
    """

    type: Literal["kto"] = "kto"
    beta: PositiveFloat = 0.1
    desirable_weight: PositiveFloat = 1.0
    undesirable_weight: PositiveFloat = 1.0
    reference: ReferenceMode = "auto"
    aux_loss_weight: float = Field(default=0.0, ge=0.0)


class PreferenceJsonlTaskConfig(ComponentConfig):
    """Preference pairs from JSONL: ``{"prompt", "chosen", "rejected", "answer"?}`` per line,
    or chat ``{"chosen": [messages], "rejected": [messages]}`` sharing all but the last message.

    Attributes:
        train: the training file.
        held_out: an evaluation file, or None to set aside ``held_out_fraction`` of ``train``.
        held_out_fraction: share of ``train`` held out (by a hash of each pair) when
            ``held_out`` is None.
        layout: how a batch's chosen and rejected sequences are laid out
            (``splice_dpo.packing``): ``"shared_prompt"`` (default: pairs packed into rows
            without padding, each prompt run once for both completions), ``"packed"``
            (every sequence packed whole) or ``"padded"`` (one right-padded row per
            sequence: for models whose forward takes no ``positions`` / ``doc_ids`` /
            ``branch_ids``). All three give the same log-probs up to float rounding.
    """

    type: Literal["preference_jsonl"] = "preference_jsonl"
    train: str
    held_out: str | None = None
    held_out_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    layout: Literal["padded", "packed", "shared_prompt"] = "shared_prompt"


class UnpairedJsonlTaskConfig(ComponentConfig):
    """Unpaired examples for KTO: ``{"prompt", "completion", "label": true|false}`` per line
    (``label`` true = desirable), or chat ``{"messages": [...], "label": ...}``."""

    type: Literal["unpaired_jsonl"] = "unpaired_jsonl"
    train: str
    held_out: str | None = None
    held_out_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _paths(self) -> UnpairedJsonlTaskConfig:
        if not self.train:
            raise ValueError("train must name a JSONL file")
        return self


__all__ = [
    "ConservativeLossConfig",
    "DPOConfig",
    "HingeLossConfig",
    "IPOLossConfig",
    "KTOConfig",
    "ORPOLossConfig",
    "PreferenceJsonlTaskConfig",
    "RobustLossConfig",
    "SigmoidLossConfig",
    "SimPOLossConfig",
    "UnpairedJsonlTaskConfig",
]
