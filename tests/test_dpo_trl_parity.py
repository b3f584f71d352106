"""splice-dpo's losses against TRL's own loss code, on the same fixed per-token log-probs.

For every loss type TRL also implements, the loss and its gradient with respect to the
per-token log-probs (the leaf both sides start from) agree to 1e-6:

* sigmoid, hinge, ipo, robust: ``trl.DPOTrainer._compute_loss``, run on a stand-in model
  whose forward returns the fixed log-probs (TRL's precomputed-reference path);
* cdpo: ``trl.experimental.cpo.CPOTrainer.cpo_loss`` (its label-smoothed sigmoid) fed the
  log-ratios, which is exactly conservative DPO; simpo: ``cpo_loss`` with ``loss_type="simpo"``
  fed per-token average log-probs, as CPOTrainer computes them;
* orpo: ``trl.experimental.orpo.ORPOTrainer.odds_ratio_loss`` on average log-probs, plus its
  token-mean chosen NLL (``loss = nll - mean(losses)`` as in ``get_batch_loss_metrics``);
* kto: ``trl.KTOTrainer._compute_loss`` with the stand-in model and a fixed KL batch.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL (root `peers` group) is needed for the parity tests")

from splice_dpo import configs as C  # noqa: E402
from splice_dpo import losses as L  # noqa: E402
from splice_dpo.kto import kto_losses  # noqa: E402

B, T = 5, 12
TOL = dict(atol=1e-6, rtol=1e-6)


class _Accelerator:
    device = torch.device("cpu")

    def gather_for_metrics(self, x: Any) -> Any:
        return x

    def gather(self, x: Any) -> Any:
        return x


def _fixed(seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-token log-probs of 2B rows (chosen then rejected), their masks, reference sums."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, T - 1, (2 * B,), generator=g)
    mask = torch.zeros(2 * B, T, dtype=torch.long)  # completion mask over input positions
    prompt = torch.randint(1, 3, (2 * B,), generator=g)
    for i in range(2 * B):
        mask[i, prompt[i] : prompt[i] + lengths[i]] = 1
    shifted = mask[:, 1:].bool()  # (2B, T-1): what TRL and splice score
    per_token = -torch.rand(2 * B, T - 1, generator=g, dtype=torch.float32) * 1.5
    per_token = (per_token * shifted).requires_grad_()
    ref = per_token.detach().sum(1) + torch.randn(2 * B, generator=g) * 2.0
    return {"per_token": per_token, "mask": mask, "shifted": shifted, "ref": ref}


def _splice_logps(d: dict[str, torch.Tensor], *, with_ref: bool = True) -> L.PreferenceLogps:
    seq = d["per_token"].sum(1)
    counts = d["shifted"].sum(1).float()
    return L.PreferenceLogps(
        seq[:B],
        seq[B:],
        counts[:B],
        counts[B:],
        d["ref"][:B] if with_ref else None,
        d["ref"][B:] if with_ref else None,
    )


def _grad(loss: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, leaf)
    return g


def _trl_dpo_loss(
    d: dict[str, torch.Tensor], loss_type: str, beta: float, eps: float = 0.0
) -> torch.Tensor:
    from trl import DPOTrainer

    out = SimpleNamespace(
        log_probs=d["per_token"],
        entropy=torch.zeros(2 * B, T - 1),
        mean_logits=torch.zeros(2 * B, T - 1),
        is_top1=torch.zeros(2 * B, T - 1, dtype=torch.bool),
        aux_loss=None,
    )
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=eps,
        use_weighting=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
    )
    inputs = {
        "input_ids": torch.ones(2 * B, T, dtype=torch.long),
        "attention_mask": torch.ones(2 * B, T, dtype=torch.long),
        "completion_mask": d["mask"],
        "ref_chosen_logps": d["ref"][:B],
        "ref_rejected_logps": d["ref"][B:],
    }
    return DPOTrainer._compute_loss(fake, lambda **kw: out, inputs, False)


@pytest.mark.parametrize(
    ("tag", "loss_fn", "config", "trl_type"),
    [
        ("sigmoid", L.sigmoid_loss, C.SigmoidLossConfig(beta=0.3), "sigmoid"),
        ("hinge", L.hinge_loss, C.HingeLossConfig(beta=0.2), "hinge"),
        ("ipo", L.ipo_loss, C.IPOLossConfig(beta=0.4), "ipo"),
        ("robust", L.robust_loss, C.RobustLossConfig(beta=0.3, label_smoothing=0.2), "robust"),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_dpo_trainer_losses(tag: str, loss_fn: Any, config: Any, trl_type: str, seed: int) -> None:
    d = _fixed(seed)
    ours = loss_fn(_splice_logps(d), config).losses.mean()
    theirs = _trl_dpo_loss(d, trl_type, config.beta, getattr(config, "label_smoothing", 0.0))
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(_grad(ours, d["per_token"]), _grad(theirs, d["per_token"]), **TOL)
    assert ours.item() != 0.0


def _cpo(loss_type: str, beta: float, eps: float, gamma: float = 0.0) -> Any:
    from trl.experimental.cpo import CPOTrainer

    fake = SimpleNamespace(
        alpha=0.0,
        loss_type=loss_type,
        beta=beta,
        label_smoothing=eps,
        simpo_gamma=gamma,
        accelerator=_Accelerator(),
    )
    return lambda c, r: CPOTrainer.cpo_loss(fake, c, r)


@pytest.mark.parametrize("seed", [0, 1])
def test_conservative_dpo_is_cpo_sigmoid_on_log_ratios(seed: int) -> None:
    d = _fixed(seed)
    cfg = C.ConservativeLossConfig(beta=0.25, label_smoothing=0.15)
    lp = _splice_logps(d)
    ours = L.conservative_loss(lp, cfg).losses.mean()
    chosen_lr, rejected_lr = lp.logratios()
    theirs = _cpo("sigmoid", cfg.beta, cfg.label_smoothing)(chosen_lr, rejected_lr)[0].mean()
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(_grad(ours, d["per_token"]), _grad(theirs, d["per_token"]), **TOL)


@pytest.mark.parametrize(("eps", "seed"), [(0.0, 0), (0.1, 1)])
def test_simpo(eps: float, seed: int) -> None:
    d = _fixed(seed)
    cfg = C.SimPOLossConfig(beta=2.0, gamma=0.8, label_smoothing=eps)
    lp = _splice_logps(d, with_ref=False)
    out = L.simpo_loss(lp, cfg)
    ours = out.losses.mean()
    avg_c, avg_r = lp.average()
    losses, chosen_rewards, rejected_rewards = _cpo("simpo", cfg.beta, eps, cfg.gamma)(avg_c, avg_r)
    theirs = losses.mean()
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(_grad(ours, d["per_token"]), _grad(theirs, d["per_token"]), **TOL)
    torch.testing.assert_close(out.chosen_rewards, chosen_rewards, **TOL)
    torch.testing.assert_close(out.rejected_rewards, rejected_rewards, **TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_orpo(seed: int) -> None:
    from trl.experimental.orpo import ORPOTrainer

    d = _fixed(seed)
    cfg = C.ORPOLossConfig(beta=0.2)
    lp = _splice_logps(d, with_ref=False)
    ours = L.orpo_loss(lp, cfg).losses.mean()
    avg_c, avg_r = lp.average()
    fake = SimpleNamespace(beta=cfg.beta, accelerator=_Accelerator())
    or_losses = ORPOTrainer.odds_ratio_loss(fake, avg_c, avg_r)[0]
    # ORPOTrainer's NLL: cross-entropy mean over the chosen completions' tokens.
    chosen_tokens = d["per_token"][:B][d["shifted"][:B]]
    theirs = -chosen_tokens.mean() - or_losses.mean()
    torch.testing.assert_close(ours, theirs, **TOL)
    # Off-completion positions are constant zeros in both (no path to the weights): compare
    # the gradient where tokens are scored.
    keep = d["shifted"]
    ours_g, theirs_g = _grad(ours, d["per_token"]), _grad(theirs, d["per_token"])
    torch.testing.assert_close(ours_g[keep], theirs_g[keep], **TOL)
    assert ours_g[keep].abs().min() > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_kto(seed: int) -> None:
    from trl import KTOTrainer

    d = _fixed(seed)  # 2B rows used as 2B unpaired examples
    n = 2 * B
    g = torch.Generator().manual_seed(seed + 10)
    labels = torch.rand(n, generator=g) < 0.5
    labels[0], labels[1] = True, False
    kl_policy = torch.randn(n, generator=g) - 20.0
    kl_ref = kl_policy - torch.rand(n, generator=g)  # mean KL > 0, so the clamp does not hide it
    cfg = C.KTOConfig(beta=0.3, desirable_weight=1.0, undesirable_weight=1.5)
    seq = d["per_token"].sum(1)
    kl = (kl_policy - kl_ref).mean().clamp(min=0)
    ours = kto_losses(seq, d["ref"], labels, kl, cfg)[0].mean()

    out = SimpleNamespace(
        log_probs=d["per_token"],
        entropy=torch.zeros(n, T - 1),
        mean_logits=torch.zeros(n, T - 1),
        aux_loss=None,
    )
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_Accelerator(),
        precompute_ref_logps=True,
        calculate_KL=True,
        loss_type="kto",
        beta=cfg.beta,
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
        _compute_kl_logps=lambda model, batch: kl_policy,
    )
    inputs = {
        "input_ids": torch.ones(n, T, dtype=torch.long),
        "attention_mask": torch.ones(n, T, dtype=torch.long),
        "completion_mask": d["mask"],
        "label": labels,
        "ref_logps": d["ref"],
        "ref_KL_logps": kl_ref,
    }
    theirs = KTOTrainer._compute_loss(fake, lambda **kw: out, inputs, False)
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(_grad(ours, d["per_token"]), _grad(theirs, d["per_token"]), **TOL)
