"""The training loop: any ``Objective`` (+ ``Regularizer`` terms) over a batch stream.

The Trainer is a loop, checkpoints and a flush. Each step calls its *step strategy*
(``SupervisedStep`` or ``OnlineStep``, see ``splice.training.steps``), which returns a
``StepRecord``; how the run spreads over processes is the *parallel strategy* it is given
(``splice.training.parallel``). Step values stay tensors until a *flush* (every ``log_every``
steps, and before an eval or a checkpoint) syncs them once, stops on a non-finite one
(``nan_guard``) and logs them (``run_log``). A checkpoint (``run_checkpoints``) is written only
after a flush that found every step finite and a check that the weights are; evaluations
follow ``eval_schedule``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splice.data.device import batch_to
from splice.interfaces import RolloutFactory
from splice.training.compile import compile_blocks
from splice.training.configs import TrainConfig
from splice.training.eval_schedule import EvalSchedule, Evaluator
from splice.training.host_memory import retain_freed_host_memory
from splice.training.moved_attributes import MovedTrainerAttributes
from splice.training.nan_guard import (
    NonFiniteLossError,
    NonFiniteWeightsError,
    check_start_weights,
    divergence_message,
    non_finite_weights,
)
from splice.training.online import OnlineStep, is_online, unwrap
from splice.training.optimizer import (
    build_optimizer,
    build_run_optimizer,
    param_lr_scales,
    seed_everything,
    trainable_summary,
)
from splice.training.parallel import SingleProcess
from splice.training.precision import autocast, resolve_precision
from splice.training.progress import announce_trainable
from splice.training.report import finish_run
from splice.training.run_checkpoints import RunCheckpoints
from splice.training.run_folder import ResumeMode, claim_run_folder
from splice.training.run_log import RunLog
from splice.training.steps import StepRecord, StepStrategy, synced_records
from splice.training.stream import Batch, BatchSource, as_source
from splice.training.supervised import SupervisedStep
from splice.training.threads import torch_threads

__all__ = [  # NonFinite*Error live in nan_guard, the optimizer helpers in optimizer
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "Trainer",
    "build_optimizer",
    "param_lr_scales",
    "seed_everything",
    "trainable_summary",
]


class Trainer(MovedTrainerAttributes):
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
            generator (``splice.rl.rollout.Rollouts``); ``train_batches`` then yields
            prompt batches, and each step is one rollout plus its updates (``OnlineStep``).
        step_strategy: how a step trains (default: ``OnlineStep(rollouts)`` for an online
            objective, else ``SupervisedStep()``).
        parallel: how the run spreads over processes (default ``SingleProcess()``).
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
        rollouts: RolloutFactory | None = None,
        step_strategy: StepStrategy | None = None,
        parallel: SingleProcess | None = None,
    ) -> None:
        self.parallel = parallel = parallel or SingleProcess()
        self.is_main = parallel.is_main  # only the main process writes
        self.online = is_online(objective)  # decided on the objective itself, not a wrapper
        if step_strategy is None:
            step_strategy = OnlineStep(rollouts) if self.online else SupervisedStep()
        self.step_strategy, self.rollouts = step_strategy, rollouts
        parallel.check(objective, regularizers)
        self.model = model = parallel.wrap_model(model)
        self.policy = unwrap(model)  # what generates (DDP wrappers have no `new_cache`)
        self.objective = objective  # as given: its optional capabilities are checked on it
        self.loss_objective = parallel.wrap_objective(objective)  # computes the step's loss
        self.config = config
        self.regularizers = list(regularizers)
        self.regularizer_data = regularizer_data
        self.device = next(model.parameters()).device
        self.extra_modules: dict[str, nn.Module] = {}
        step_strategy.setup_at_init(self, regularizer_data)  # e.g. makes a value head
        self.extra_modules = step_strategy.trainable_modules(self.objective)
        self.source = parallel.wrap_source(as_source(train_batches))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed, self.evals = seed, EvalSchedule(evaluator, eval_every)
        self.run_config, self.title = run_config, title
        self.log = RunLog(self.run_dir, is_main=self.is_main, title=title)
        if config.compile:
            compile_blocks(model)
        self.optimizer = build_run_optimizer(model, self.extra_modules, config.optimizer)
        parallel.bind_optimizer(lambda m: build_optimizer(m, config.optimizer))
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.precision = resolve_precision(config.precision, self.device, self.policy)
        if config.retain_host_memory and self.device.type == "cpu":
            retain_freed_host_memory()  # process-wide, once; a no-op off glibc
        self.step = self.micro_batches = self.tokens_seen = 0
        self.train_time = 0.0  # seconds spent in training steps, carried across resumes
        self.checkpoints = RunCheckpoints(
            self.run_dir, keep_last=config.keep_last, parallel=parallel, device=self.device
        )
        self.pending: list[StepRecord] = []  # steps not yet flushed
        self.last_loss = math.nan
        self.step_started: float | None = None  # start of the step being timed

    # ------------------------------------------------------------------ helpers
    @property
    def last_checkpoint(self) -> Path | None:
        """The newest checkpoint written or loaded (after a divergence: the last good one)."""
        return self.checkpoints.last

    def to_device(self, batch: Batch) -> Mapping[str, Any]:
        return batch_to(batch, self.device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when the run's precision is bf16 (weights stay as they are)."""
        return autocast(self.precision, self.device)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """The trainer's own resumable state (besides model, optimizer and RNG)."""
        return {
            "micro_batches": self.micro_batches,
            "examples": self.step_strategy.examples(self.micro_batches, self.config),
            "schedule_step": self.step,
            "train_time_s": self.train_time,
            "tokens_seen": self.tokens_seen,
        }

    def guard_finite(self) -> None:
        """Flush, then stop if the last update left non-finite weights (they are never
        checkpointed); under data parallelism every process stops when any found one.

        Raises:
            NonFiniteLossError: naming the tensors, the step and the last good checkpoint.
        """
        self.flush()
        what = self.parallel.non_finite(non_finite_weights(self.policy, self.extra_modules))
        if what:  # the last update overflowed: its loss (next step) would be the first NaN
            good = self.checkpoints.last_good()
            raise NonFiniteLossError(divergence_message(what, self.step, good, []))

    def save_checkpoint(self) -> Path | None:
        """Flush (so only verified-finite steps are saved), check the weights are finite,
        then write checkpoint ``step`` (pruning never removes the newest good one)."""
        if self.checkpoints.manager is None:
            self.flush()
            return None
        self.guard_finite()

        def contents() -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
            tensors, extra_state = self.step_strategy.checkpoint_extra(self.objective)
            return {**self.state(), **extra_state}, tensors

        return self.checkpoints.save(
            self.step, self.model, self.optimizer, contents, config=self.run_config
        )

    def resume(self) -> bool:
        """Load the newest intact checkpoint of ``run_dir`` if there is one; True when resumed.

        Damaged newer checkpoints are reported, set aside (``step-N.corrupt``) and skipped;
        metrics logged after the checkpoint are dropped (the resumed run logs them again).

        Raises:
            CorruptCheckpointError: there are checkpoints but none is intact.
        """
        loaded = self.checkpoints.load_latest(self.model, self.optimizer)
        if loaded is None:
            return False
        path, st = loaded
        self.step_strategy.restore_extra(self.objective, st, path)
        self.step, self.micro_batches = int(st["step"]), int(st["micro_batches"])
        self.train_time = float(st.get("train_time_s", 0.0))
        self.tokens_seen = int(st.get("tokens_seen", 0))
        self.log.truncate_after(self.step)
        return True

    # ------------------------------------------------------------------ one step
    def train_step(self, batches: Iterator[Batch]) -> StepRecord:
        """One step of the step strategy; its record waits for the next flush."""
        record = self.step_strategy(self, batches)
        self.micro_batches += record.micro_batches
        self.step = record.step
        self.pending.append(record)
        return record

    # ------------------------------------------------------------------ flush
    def flush(self) -> None:
        """Sync pending step values once, stop on a non-finite one, log the rest.

        Raises:
            NonFiniteLossError: a step's loss or gradient norm is non-finite; the checkpoints
                it may have reached are set aside and the message names the last good one.
        """
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        tokens = self.parallel.global_tokens([p.tokens for p in pending])
        records, bad = synced_records(pending, tokens)
        if bad is not None:  # records before it are logged; the bad step is not
            self.log.train(records)
            self.checkpoints.stop_diverged(*bad)
        self.checkpoints.finite_through = pending[-1].step
        self.tokens_seen += sum(r["tokens"] for r in records)
        self.last_loss = records[-1]["loss"]
        elapsed = self.elapsed()
        for rec in records:
            rec["elapsed_s"] = round(elapsed, 3)
        self.log.train(records, self.tokens_seen / max(elapsed, 1e-9))

    def elapsed(self) -> float:
        """Training seconds so far, across resumes, including the step now running."""
        started = self.step_started
        return self.train_time + (time.perf_counter() - started if started is not None else 0.0)

    # ------------------------------------------------------------------ eval
    def evaluate(self) -> dict[str, Any]:
        """Run the evaluator (eval mode, no grad) and log an ``eval`` record.

        Under data parallelism every process evaluates (an FSDP2 forward needs them all);
        only the main one writes and prints.
        """
        self.flush()
        plain = self.parallel.eval_model(self.model)
        rec = self.evals.run(self.model, step=self.step, evaluated=plain, context=self.autocast())
        if rec is not None:
            self.log.eval(rec)
        return rec or {}

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
            return self.run(resume=bool(resume))

    def start(self, *, resume: bool) -> bool:
        """Set up at the starting weights, then resume if asked; True when resumed."""
        if self.config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        # Regularizers (and objectives with a reference model) snapshot the *starting*
        # weights, so set up before loading a checkpoint.
        self.step_strategy.setup_at_start(self, self.regularizer_data)
        for reg in self.regularizers:
            reg.setup(self.model, self.regularizer_data)
        seed_everything(self.seed)
        resumed = self.resume() if resume else False
        check_start_weights(
            self.model,
            step=self.step,
            source=self.checkpoints.last if resumed else "the model given to the trainer",
        )
        return resumed

    def run(self, *, resume: bool) -> dict[str, Any]:
        """``fit`` without claiming the run folder (the caller holds it)."""
        cfg = self.config
        resumed = self.start(resume=resume)
        self.step_started = None
        if self.is_main:  # every run says what it trains
            announce_trainable(self.title, trainable_summary(self.model))
        if resumed and self.step >= cfg.steps:  # a finished run: its final eval is logged
            self.evals.take_back_logged(self.log.path, self.step)
        self.model.train()
        bar = self.log.open(steps=cfg.steps, step=self.step, fresh=not resumed, show=cfg.progress)
        with bar, torch_threads(cfg.num_threads):  # the thread count for this run only
            batches = self.source.batches(self.micro_batches)
            while self.step < cfg.steps:
                self.step_started = time.perf_counter()
                self.train_step(batches)
                step = self.step
                if step % cfg.log_every == 0 or step == cfg.steps:
                    self.flush()
                self.train_time += time.perf_counter() - self.step_started
                self.step_started = None
                if self.evals.due(step):
                    self.evaluate()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
            self.flush()
            # The final checkpoint comes first: a failing final evaluation loses no training.
            if not self.checkpoints.has_step(self.step):
                self.save_checkpoint()
            final = self.evals.final(self.step) or self.evaluate()
            self.checkpoints.prune()  # the final checkpoint is verified finite: keep_last
        return finish_run(self, final, resumed=resumed)
