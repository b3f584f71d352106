"""The training engine: any ``Objective`` (+ ``Regularizer`` terms) over a batch stream.

One *step* = ``grad_accum`` micro-batches, then clip, then one optimizer update.
Per-step values stay tensors until a *flush* (every ``log_every`` steps, and before
an eval or a checkpoint), where they are synced once, checked for non-finite
values, written to ``metrics.jsonl`` (one line per step) and shown in the progress bar.
A checkpoint is only written after a flush that found every step finite and a check
that its weights are finite; see ``splice.training.nan_guard`` for when it counts as
good and what a diverged run leaves behind.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from splice.checkpoint import CheckpointManager, CorruptCheckpointError
from splice.data.device import batch_to
from splice.interfaces import LossOutput
from splice.training.clip import clip_gradients
from splice.training.compile import compile_blocks, eager
from splice.training.configs import OptimizerConfig, TrainConfig
from splice.training.host_memory import retain_freed_host_memory
from splice.training.metrics import MetricsLog
from splice.training.nan_guard import (
    NonFiniteLossError,
    NonFiniteWeightsError,
    check_start_weights,
    divergence_message,
    newest_good,
    non_finite_tensors,
    set_aside_unverified,
)
from splice.training.online import (
    is_online,
    load_objective_state,
    objective_state,
    online_train_step,
    trainable_modules,
    unwrap,
)
from splice.training.precision import resolve_precision
from splice.training.report import plot_curves, write_report
from splice.training.run_folder import ResumeMode, claim_run_folder
from splice.training.schedule import lr_multiplier, set_learning_rate
from splice.training.step_hooks import after_optimizer_step
from splice.training.stream import Batch, BatchSource, as_source

Evaluator = Callable[[nn.Module], Mapping[str, float]]
__all__ = [  # NonFinite*Error live in nan_guard; re-exported where they were first defined
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "Trainer",
    "build_optimizer",
    "param_lr_scales",
    "seed_everything",
    "trainable_summary",
]


def param_lr_scales(model: nn.Module) -> dict[int, float]:
    """``id(param) -> learning-rate multiplier`` declared by modules of ``model``.

    A module may carry ``param_lr_scale: dict[str, float]`` keyed by its own parameter names
    (as ``module.named_parameters()`` spells them); e.g. LoRA+ gives ``lora_B`` a larger rate.
    Parameters nobody names get 1.0 (absent from the dict).
    """
    scales: dict[int, float] = {}
    for module in model.modules():
        declared = getattr(module, "param_lr_scale", None)
        if not declared:
            continue
        for name, p in module.named_parameters():
            if name in declared:
                scales[id(p)] = float(declared[name])
    return scales


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW (or SGD) over the parameters that require grad; frozen ones get no state.

    Matrices (ndim >= 2) are weight-decayed, vectors (norm scales, biases) are not.
    Parameters with a learning-rate multiplier (``param_lr_scale`` on their module, see
    ``param_lr_scales``) get their own group carrying ``lr_scale``; the trainer sets each
    group's rate to ``lr_scale`` times the scheduled rate.
    """
    scales = param_lr_scales(model)
    buckets: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for p in model.parameters():  # shared (tied) parameters are yielded once
        if p.requires_grad:
            buckets.setdefault((p.ndim >= 2, scales.get(id(p), 1.0)), []).append(p)
    if not buckets:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    groups: list[dict[str, Any]] = []
    for (decayed, scale), ps in sorted(buckets.items(), key=lambda kv: (kv[0][1], not kv[0][0])):
        group: dict[str, Any] = {"params": ps, "weight_decay": cfg.weight_decay if decayed else 0.0}
        if scale != 1.0:
            group["lr_scale"] = scale
        groups.append(group)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name != "adamw":  # adamw_8bit, paged_adamw(_8bit): bitsandbytes
        from splice.training.bnb_optimizers import build_bnb_optimizer

        return build_bnb_optimizer(groups, cfg)
    fused = cfg.fused
    if fused is None:  # the fused kernel is one pass over all params: less per-step overhead
        fused = all(
            p.dtype in (torch.float32, torch.bfloat16, torch.float16)
            for g in groups
            for p in g["params"]
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def trainable_summary(model: nn.Module) -> dict[str, Any]:
    """``{"trainable_params", "total_params", "trainable_percent"}`` (tied weights once)."""
    params = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100.0 * trainable / max(total, 1), 4),
    }


def seed_everything(seed: int) -> None:
    """Seed torch, Python ``random`` and NumPy from one integer."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class _Pending:
    """One step's values, kept as tensors until the next flush."""

    step: int
    lr: float
    loss: Tensor
    tokens: Tensor | int
    grad_norm: Tensor | None
    penalty: Tensor | None
    metrics: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Trains ``model`` with ``objective`` on ``train_batches``.

    Args:
        model: the module to train (its ``requires_grad`` flags choose what trains).
        objective: ``loss(model, batch) -> LossOutput``.
        train_batches: a ``BatchSource`` (restartable at a micro-batch index, needed for exact
            resume) or a re-iterable of batches (dicts of tensors).
        config: the ``TrainConfig``.
        regularizers: terms whose ``penalty(model, batch)`` is added to the loss; each gets
            ``setup(model, regularizer_data)`` once, at the model's starting weights.
        run_dir: folder for ``metrics.jsonl``, ``checkpoints/``, ``curves.png``, ``report.md``
            (None: write nothing).
        seed: seeds torch/Python/NumPy at the start of a fresh run.
        evaluator: ``evaluator(model) -> {name: value}``, run in eval mode without grad every
            ``eval_every`` steps and at the end.
        run_config: JSON-able config saved inside each checkpoint.
        title: heading of ``report.md``.
        rollouts: for an online objective (one with ``collect``): makes each step's bound
            generator (``splice.training.rollout.Rollouts``); ``train_batches`` then yields
            prompt batches, and each step is one rollout plus its updates
            (``splice.training.online``).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Any,
        train_batches: BatchSource | Iterable[Batch],
        config: TrainConfig,
        *,
        regularizers: Sequence[Any] = (),
        regularizer_data: Iterable[Batch] | None = None,
        run_dir: str | Path | None = None,
        seed: int = 0,
        evaluator: Evaluator | None = None,
        eval_every: int | None = None,
        run_config: dict[str, Any] | None = None,
        title: str = "splice run",
        rollouts: Any = None,
    ) -> None:
        self.model, self.objective, self.config = model, objective, config
        self.policy = unwrap(model)  # what generates (DDP wrappers have no `new_cache`)
        self.online, self.rollouts = is_online(objective), rollouts
        if self.online and callable(getattr(objective, "setup", None)):
            # At the starting weights (a reference copy), before the optimizer is built (a
            # value head made here joins it) and before any checkpoint is loaded.
            objective.setup(self.policy, regularizer_data)
        if self.online and config.grad_accum != 1:
            raise ValueError(
                f"train.grad_accum={config.grad_accum}: an online objective makes one update per "
                "minibatch it yields; size its minibatches instead"
            )
        self.extra_modules = trainable_modules(objective) if self.online else {}
        self.source = as_source(train_batches)
        self.regularizers = list(regularizers)
        self.regularizer_data = regularizer_data
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed, self.evaluator, self.eval_every = seed, evaluator, eval_every
        self.run_config, self.title = run_config, title
        self.is_main = True  # distributed subclasses set False on ranks that must not write
        if config.compile:
            compile_blocks(model)
        trained: nn.Module = model
        if self.extra_modules:  # the policy's parameters first, then e.g. a value head's
            trained = nn.ModuleList([model, *self.extra_modules.values()])
        self.optimizer = build_optimizer(trained, config.optimizer)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(config.precision, self.device, self.policy)
        if config.retain_host_memory and self.device.type == "cpu":
            retain_freed_host_memory()  # process-wide, once; a no-op off glibc
        self.step = 0
        self.micro_batches = 0
        self.train_time = 0.0  # seconds spent in training steps, carried across resumes
        self.tokens_seen = 0
        self.last_checkpoint: Path | None = None
        self.run_id = uuid.uuid4().hex  # names this run's checkpoints; kept across resumes
        self.finite_through = 0  # the last step whose loss was seen finite (nan_guard)
        self.history: list[dict[str, Any]] = []  # eval records
        self._pending: list[_Pending] = []
        self._last_loss = math.nan
        self._pbar: Any = None
        self._t0: float | None = None  # start of the step being timed

    # ------------------------------------------------------------------ helpers
    @property
    def checkpoints(self) -> CheckpointManager | None:
        if self.run_dir is None:
            return None
        return CheckpointManager(
            self.run_dir / "checkpoints", keep_last=self.config.keep_last, run_id=self.run_id
        )

    def last_good_checkpoint(self) -> Path | None:
        """The newest checkpoint known to hold finite weights that give a finite loss."""
        return newest_good(self.checkpoints, self.finite_through)

    def _metrics(self) -> MetricsLog:
        path = self.run_dir / "metrics.jsonl" if self.run_dir is not None and self.is_main else None
        return MetricsLog(path)

    def _to_device(self, batch: Batch) -> Batch:
        return batch_to(batch, self.device)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def no_sync(self, last_micro: bool) -> contextlib.AbstractContextManager[Any]:
        """Context for one micro-batch's forward and backward; DDP subclasses skip the
        gradient all-reduce until the last micro-batch of the step."""
        return contextlib.nullcontext()

    def reduce_rollout_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """An online step's rollout metrics over all processes (one process: unchanged)."""
        return metrics

    def sync_extra_grads(self) -> None:
        """Average the gradients of the objective's own modules over processes (DDP does the
        policy's); nothing to do in one process."""

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The trainer's own resumable state (besides model, optimizer and RNG)."""
        st: dict[str, Any] = {
            "micro_batches": self.micro_batches,
            "examples": self.micro_batches * self.config.batch_size,
            "schedule_step": self.step,
            "train_time_s": self.train_time,
            "tokens_seen": self.tokens_seen,
        }
        if self.online:  # micro_batches counts prompt batches (one per step)
            st["examples"] = self.micro_batches * getattr(self.rollouts, "prompts_per_step", 0)
        return st

    def extra_checkpoint(self) -> tuple[dict[str, Tensor] | None, dict[str, Any]]:
        """An online objective's tensors (``objective.safetensors``) and JSON state."""
        if not self.online:
            return None, {}
        tensors, meta = objective_state(self.objective)
        return tensors, {"objective": meta}

    def restore_extra(self, st: dict[str, Any], checkpoint: Path) -> None:
        """Load what ``extra_checkpoint`` saved into the objective."""
        if not self.online:
            return
        from safetensors.torch import load_file

        path = checkpoint / "objective.safetensors"
        tensors = load_file(str(path)) if path.is_file() else {}
        load_objective_state(self.objective, tensors, st.get("objective", {}))

    def non_finite_weights(self) -> list[str]:
        """Up to 5 names of this process's non-finite parameters and buffers: the policy's,
        then the objective's own modules' (``<module>.<param>``, e.g. a value head's)."""
        bad = non_finite_tensors(self.policy)
        for name, module in self.extra_modules.items():
            bad += [f"{name}.{n}" for n in non_finite_tensors(module)]
        return bad[:5]

    def check_weights_finite(self) -> None:
        """Stop if the last update left non-finite weights (they are never checkpointed).

        Raises:
            NonFiniteLossError: naming the tensors, the step and the last good checkpoint.
        """
        bad = self.non_finite_weights()
        if bad:  # the last update overflowed: its loss (next step) would be the first NaN
            what = f"weights ({', '.join(bad)}) after the update"
            raise NonFiniteLossError(
                divergence_message(what, self.step, self.last_good_checkpoint(), [])
            )

    def save_checkpoint(self) -> Path | None:
        """Flush (so only verified-finite steps are saved), check the weights are finite,
        then write checkpoint ``step`` (pruning never removes the newest good one)."""
        self.flush()
        mgr = self.checkpoints
        if mgr is None or not self.is_main:
            return None
        self.check_weights_finite()
        extra, extra_state = self.extra_checkpoint()
        self.last_checkpoint = mgr.save(
            self.step,
            model=self.model,
            optimizer=self.optimizer,
            state={**self.state(), **extra_state},
            config=self.run_config,
            protect=[self.last_good_checkpoint()],
            extra_tensors=extra,
        )
        return self.last_checkpoint

    def resume(self) -> bool:
        """Load the newest intact checkpoint of ``run_dir`` if there is one; True when resumed.

        Damaged newer checkpoints are reported, set aside (``step-N.corrupt``) and skipped.

        Raises:
            CorruptCheckpointError: there are checkpoints but none is intact.
        """
        mgr = self.checkpoints
        if mgr is None or not mgr.checkpoints():
            return False
        latest = mgr.latest_intact(set_aside=True)
        if latest is None:
            raise CorruptCheckpointError(mgr.root, "no intact checkpoint left to resume from")
        st = mgr.load(latest, model=self.model, optimizer=self.optimizer, verify=False)
        self.restore_extra(st, latest)
        self.restore_state(st, latest)
        return True

    def restore_state(self, st: dict[str, Any], checkpoint: Path) -> None:
        """Take back ``state()`` from a loaded checkpoint and drop later metrics lines."""
        self.step = int(st["step"])
        self.micro_batches = int(st["micro_batches"])
        self.train_time = float(st.get("train_time_s", 0.0))
        self.tokens_seen = int(st.get("tokens_seen", 0))
        self.last_checkpoint = checkpoint
        self.run_id = str(st.get("run_id", self.run_id))
        self.finite_through = self.step  # the run reached this step with finite losses
        self._metrics().truncate_after(self.step)

    # ------------------------------------------------------------------ one step
    def train_step(self, batches: Any) -> None:
        """``grad_accum`` forward/backward passes, clip, one optimizer update.

        With ``grad_accum > 1`` the step's loss is the token-weighted mean over all its
        micro-batches, as if they were one batch: micro-batch ``i``, whose objective reports
        ``n_i`` tokens (``LossOutput.n_tokens``), backpropagates ``n_i * L_i``, and the summed
        gradient is divided by ``sum_i n_i`` inside the clipping / optimizer step. A plain
        mean of the micro-batch means would over-weight the tokens of short micro-batches
        (SFT completions differ in length). Objectives that report no token count weigh
        every micro-batch equally.
        """
        if self.online:
            online_train_step(self, batches)
            return
        cfg = self.config
        lr = cfg.optimizer.lr * lr_multiplier(self.step, cfg.steps, cfg.schedule)
        set_learning_rate(self.optimizer, lr)
        loss_sum: Tensor | None = None  # sum_i w_i L_i
        pen_sum: Tensor | None = None
        weight_sum = 0.0
        tokens: Tensor | int = 0
        metrics: dict[str, Any] = {}
        for micro in range(cfg.grad_accum):
            try:
                batch = self._to_device(next(batches))
            except StopIteration:
                raise ValueError(
                    f"the training data ran out after {self.micro_batches} micro-batches "
                    f"(step {self.step} of {cfg.steps}); give an endless BatchSource or fewer steps"
                ) from None
            # DDP decides at forward time whether the backward all-reduces: wrap both.
            with self.no_sync(micro == cfg.grad_accum - 1):
                with self._autocast():
                    out = self.objective.loss(self.model, batch)
                    loss = out.loss
                    if self.regularizers:
                        pen = sum(r.penalty(self.model, batch) for r in self.regularizers)
                        loss = loss + pen
                weight = _micro_batch_weight(out) if cfg.grad_accum > 1 else 1.0
                (loss * weight if weight != 1.0 else loss).backward()
            weight_sum += weight
            weighted = out.loss.detach() * weight
            loss_sum = weighted if loss_sum is None else loss_sum + weighted
            if self.regularizers:
                weighted = pen.detach() * weight
                pen_sum = weighted if pen_sum is None else pen_sum + weighted
            tokens = tokens + _count_tokens(batch, out)
            for k, v in out.metrics.items():
                if k not in ("loss", "tokens"):
                    metrics[k] = metrics.get(k, 0.0) + v * weight
            self.micro_batches += 1
        # Every micro-batch had zero tokens: nothing was learnt; avoid dividing by zero.
        divisor = weight_sum if weight_sum > 0 else 1.0
        grad_norm = clip_gradients(self.params, cfg.max_grad_norm, self.optimizer, divisor=divisor)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        module_metrics = after_optimizer_step(self.model)  # e.g. MoE bias updates, load stats
        self.step += 1
        assert loss_sum is not None
        self._pending.append(
            _Pending(
                step=self.step,
                lr=lr,
                loss=loss_sum / divisor,
                tokens=tokens,
                grad_norm=grad_norm,
                metrics={**{k: v / divisor for k, v in metrics.items()}, **module_metrics},
                penalty=pen_sum / divisor if pen_sum is not None else None,
            )
        )

    # ------------------------------------------------------------------ logging
    def flush(self) -> None:
        """Sync pending step values once, stop on a non-finite one, log the rest."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        losses = torch.stack([p.loss.float() for p in pending]).tolist()
        norms = [float(p.grad_norm) if p.grad_norm is not None else None for p in pending]
        records: list[dict[str, Any]] = []
        window_tokens = 0
        for p, loss, norm in zip(pending, losses, norms):
            tokens = int(p.tokens)
            window_tokens += tokens
            rec: dict[str, Any] = {
                "kind": "train",
                "step": p.step,
                "loss": loss,
                "lr": p.lr,
                "tokens": tokens,
            }
            if norm is not None:
                rec["grad_norm"] = norm
            if p.penalty is not None:
                rec["penalty"] = float(p.penalty)
            rec.update({k: float(v) for k, v in p.metrics.items()})
            if not math.isfinite(loss) or (norm is not None and not math.isfinite(norm)):
                self._metrics().write(records)
                what = f"loss={loss}" if not math.isfinite(loss) else f"gradient norm={norm}"
                # Step p's loss is the first bad one: the weights it saw (step p - 1) are bad.
                self.finite_through = p.step - 1
                mgr = self.checkpoints if self.is_main else None
                aside = set_aside_unverified(mgr, self.finite_through)
                good = newest_good(self.checkpoints, self.finite_through)  # on every rank
                self.last_checkpoint = good
                raise NonFiniteLossError(divergence_message(what, p.step, good, aside))
            records.append(rec)
        self.finite_through = pending[-1].step
        self.tokens_seen += window_tokens
        self._last_loss = losses[-1]
        elapsed = self._elapsed()
        for rec in records:
            rec["elapsed_s"] = round(elapsed, 3)
        self._metrics().write(records)
        if self._pbar is not None:
            self._pbar.update(pending[-1].step - self._pbar.n)
            self._pbar.set_postfix(
                loss=f"{sum(losses) / len(losses):.4f}",
                tok_s=f"{self.tokens_seen / max(elapsed, 1e-9):.0f}",
                refresh=False,
            )

    def _elapsed(self) -> float:
        return self.train_time + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    # ------------------------------------------------------------------ eval
    def evaluate(self) -> dict[str, Any]:
        """Run the evaluator (eval mode, no grad) and log an ``eval`` record."""
        self.flush()
        if self.evaluator is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self._autocast(), eager():  # generation shapes change per step
            result = dict(self.evaluator(self.model))
        self.model.train(was_training)
        rec = {"kind": "eval", "step": self.step, **result}
        self.history.append(rec)
        self._metrics().write([rec])
        if self._pbar is not None:
            shown = {k: f"{v:.3g}" for k, v in result.items() if isinstance(v, float)}
            self._pbar.write(
                f"step {self.step}: " + ", ".join(f"{k}={v}" for k, v in shown.items())
            )
        return rec

    # ------------------------------------------------------------------ the loop
    def fit(self, *, resume: ResumeMode = False, overwrite: bool = False) -> dict[str, Any]:
        """Train to ``config.steps``; the run folder is held (locked) for the whole run.

        Args:
            resume: ``True``: continue from the latest checkpoint (an error if there is
                none); ``"auto"``: continue if there is one, else start fresh.
            overwrite: a fresh run may delete the checkpoints of an earlier run in
                ``run_dir`` (without it, such a folder is refused).

        Returns a summary dict (steps, loss, tokens/s, final eval, paths).

        Raises:
            NonFiniteLossError: the loss or gradient norm became NaN/inf (names the step).
            RunFolderError: ``run_dir`` is in use by another process, holds another run's
                checkpoints, or has nothing to resume (see ``splice.training.run_folder``).
        """
        run_dir = self.run_dir if self.is_main else None
        with claim_run_folder(run_dir, resume=resume, overwrite=overwrite):
            return self._fit(resume=bool(resume))

    def _fit(self, *, resume: bool) -> dict[str, Any]:
        cfg = self.config
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        # Regularizers (and objectives with a reference model) snapshot the *starting*
        # weights, so set up before loading a checkpoint.
        setup = getattr(self.objective, "setup", None)
        if callable(setup) and not self.online:  # online ones were set up in __init__
            setup(self.model, self.regularizer_data)
        for reg in self.regularizers:
            reg.setup(self.model, self.regularizer_data)
        seed_everything(self.seed)
        resumed = self.resume() if resume else False
        check_start_weights(
            self.model,
            step=self.step,
            source=self.last_checkpoint if resumed else "the model given to the trainer",
        )
        if self.run_dir is not None and self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resumed:  # a fresh run starts a fresh log
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        self._t0 = None
        from tqdm.auto import tqdm

        threads_before = torch.get_num_threads()
        if cfg.num_threads is not None:  # for this run only (tiny models run best on 1 thread)
            torch.set_num_threads(cfg.num_threads)
        self._pbar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc=self.title,
            unit="step",
            disable=not (cfg.progress and self.is_main),
            dynamic_ncols=True,
        )
        if self.is_main:  # every run says what it trains
            t = trainable_summary(self.model)
            print(
                f"{self.title}: trainable params {t['trainable_params']:,} of "
                f"{t['total_params']:,} ({t['trainable_percent']:.2f}%)",
                flush=True,
            )
        self.model.train()
        batches = self.source.batches(self.micro_batches)
        evaluated_at = -1
        try:
            while self.step < cfg.steps:
                self._t0 = time.perf_counter()
                self.train_step(batches)
                step = self.step
                if step % cfg.log_every == 0 or step == cfg.steps:
                    self.flush()
                self.train_time += time.perf_counter() - self._t0
                self._t0 = None
                if self.eval_every and step % self.eval_every == 0:
                    self.evaluate()
                    evaluated_at = step
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
            self.flush()
            # The final checkpoint comes first: a failing final evaluation loses no training.
            if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(
                f"{self.step:06d}"
            ):
                self.save_checkpoint()
            done = evaluated_at == self.step and self.history
            final = self.history[-1] if done else self.evaluate()
        finally:
            self._pbar.close()
            self._pbar = None
            torch.set_num_threads(threads_before)
        return self._finish(final, resumed=resumed)

    def _finish(self, final: dict[str, Any], *, resumed: bool) -> dict[str, Any]:
        counts = trainable_summary(self.model)
        summary: dict[str, Any] = {
            "steps": self.step,
            "final_train_loss": self._last_loss,
            "train_time_s": round(self.train_time, 2),
            "tokens_seen": self.tokens_seen,
            "tokens_per_s": round(self.tokens_seen / max(self.train_time, 1e-9), 1),
            **counts,
            "resumed": resumed,
            "precision": self.precision,
        }
        if self.run_dir is not None and self.is_main:
            png = None
            if self.config.plot_curves:
                png = plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")
            write_report(
                self.run_dir / "report.md",
                title=self.title,
                summary=summary,
                final_eval=final,
                plot=png.name if png else None,
            )
            summary["run_dir"] = str(self.run_dir)
            summary["checkpoint"] = str(self.last_checkpoint) if self.last_checkpoint else None
        summary["eval"] = {k: v for k, v in final.items() if k not in ("kind", "step")}
        return summary


def _micro_batch_weight(out: LossOutput) -> float:
    """A micro-batch's weight in its step's loss: its token count, or 1 if it reports none."""
    if out.n_tokens or "tokens" in out.metrics:  # counted (possibly 0: nothing to learn)
        return float(out.n_tokens or out.metrics.get("tokens", 0.0))
    return 1.0


def _count_tokens(batch: Batch, out: Any) -> Tensor | int:
    """Tokens processed by one micro-batch: real (unpadded) input tokens."""
    mask = batch.get("attention_mask")
    if isinstance(mask, Tensor):
        return mask.sum()
    ids = batch.get("input_ids")
    if isinstance(ids, Tensor):
        return ids.numel()
    return int(getattr(out, "n_tokens", 0) or 0)
