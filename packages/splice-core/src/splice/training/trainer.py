"""The training loop: any ``Objective`` (+ ``Regularizer`` terms) over a batch stream.

The Trainer is a loop, checkpoints and a flush; what differs between algorithms lives
elsewhere. Each step calls the *step strategy* (``SupervisedStep``: ``grad_accum``
micro-batches, clip, one update; ``OnlineStep``: one rollout, then one update per
minibatch), which returns a ``StepRecord`` (``splice.training.steps``). How the run spreads
over processes is the *parallel strategy* it is given (``SingleProcess``, or
``splice.training.distributed.DataParallel``).

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
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from splice.checkpoint import CheckpointManager
from splice.data.device import batch_to
from splice.training.compile import compile_blocks, eager
from splice.training.configs import TrainConfig
from splice.training.host_memory import retain_freed_host_memory
from splice.training.metrics import MetricsLog, read_metrics
from splice.training.nan_guard import (
    NonFiniteLossError,
    NonFiniteWeightsError,
    check_start_weights,
    divergence_message,
    newest_good,
    non_finite_tensors,
    set_aside_unverified,
)
from splice.training.online import OnlineStep, is_online, unwrap
from splice.training.optimizer import (
    build_optimizer,
    param_lr_scales,
    seed_everything,
    trainable_summary,
)
from splice.training.parallel import SingleProcess
from splice.training.precision import resolve_precision
from splice.training.progress import Progress, announce_trainable
from splice.training.report import finish_run
from splice.training.run_folder import ResumeMode, claim_run_folder
from splice.training.steps import StepRecord, StepStrategy, record_dict
from splice.training.stream import Batch, BatchSource, as_source
from splice.training.supervised import SupervisedStep

Evaluator = Callable[[nn.Module], Mapping[str, float]]
__all__ = [  # NonFinite*Error live in nan_guard, the optimizer helpers in optimizer
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "Trainer",
    "build_optimizer",
    "param_lr_scales",
    "seed_everything",
    "trainable_summary",
]


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
        rollouts: Any = None,
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
        self.objective = parallel.wrap_objective(objective)
        self.config = config
        self.regularizers = list(regularizers)
        self.regularizer_data = regularizer_data
        self.device = next(model.parameters()).device
        self.extra_modules: dict[str, nn.Module] = {}
        step_strategy.setup_at_init(self, regularizer_data)  # e.g. makes a value head
        self.extra_modules = step_strategy.trainable_modules(self.objective)
        self.source = parallel.wrap_source(as_source(train_batches))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed, self.eval_every = seed, eval_every
        self.evaluator = evaluator
        self.run_config, self.title = run_config, title
        if config.compile:
            compile_blocks(model)
        trained: nn.Module = model
        if self.extra_modules:  # the policy's parameters first, then e.g. a value head's
            trained = nn.ModuleList([model, *self.extra_modules.values()])
        self.optimizer = build_optimizer(trained, config.optimizer)
        parallel.bind_optimizer(lambda m: build_optimizer(m, config.optimizer))
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.precision = resolve_precision(config.precision, self.device, self.policy)
        if config.retain_host_memory and self.device.type == "cpu":
            retain_freed_host_memory()  # process-wide, once; a no-op off glibc
        self.step = 0
        self.micro_batches = 0
        self.train_time = 0.0  # seconds spent in training steps, carried across resumes
        self.tokens_seen = 0
        self.last_checkpoint: Path | None = None
        # names this run's checkpoints; kept across resumes; one id on every process
        self.run_id = parallel.shared_run_id(uuid.uuid4().hex, self.device)
        self.finite_through = 0  # the last step whose loss was seen finite (nan_guard)
        self.history: list[dict[str, Any]] = []  # eval records
        self.pending: list[StepRecord] = []  # steps not yet flushed
        self.last_loss = math.nan
        self.progress: Progress | None = None  # while ``fit`` runs
        self.step_started: float | None = None  # start of the step being timed

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

    def metrics_log(self) -> MetricsLog:
        """``metrics.jsonl`` of the run (writes nothing off the main process or without a run_dir)."""
        path = self.run_dir / "metrics.jsonl" if self.run_dir is not None and self.is_main else None
        return MetricsLog(path)

    def to_device(self, batch: Batch) -> dict[str, Any]:
        return batch_to(batch, self.device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when the run's precision is bf16 (weights stay as they are)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The trainer's own resumable state (besides model, optimizer and RNG)."""
        return {
            "micro_batches": self.micro_batches,
            "examples": self.step_strategy.examples(self.micro_batches, self.config),
            "schedule_step": self.step,
            "train_time_s": self.train_time,
            "tokens_seen": self.tokens_seen,
        }

    def non_finite_weights(self) -> list[str]:
        """Up to 5 names of this process's non-finite parameters and buffers: the policy's,
        then the objective's own modules' (``<module>.<param>``, e.g. a value head's)."""
        bad = non_finite_tensors(self.policy)
        for name, module in self.extra_modules.items():
            bad += [f"{name}.{n}" for n in non_finite_tensors(module)]
        return bad[:5]

    def check_weights_finite(self) -> None:
        """Stop if the last update left non-finite weights (they are never checkpointed);
        under data parallelism every process stops when any found one.

        Raises:
            NonFiniteLossError: naming the tensors, the step and the last good checkpoint.
        """
        what = self.parallel.non_finite(self.non_finite_weights())
        if what:  # the last update overflowed: its loss (next step) would be the first NaN
            raise NonFiniteLossError(
                divergence_message(what, self.step, self.last_good_checkpoint(), [])
            )

    def logged_final_eval(self) -> int:
        """A resumed run that had already finished: take its logged evaluation of the last
        step back into ``history`` (so it is not run and logged twice); returns that step,
        or -1 when there is none."""
        path = self.run_dir / "metrics.jsonl" if self.run_dir is not None else None
        if self.step < self.config.steps or path is None or not path.is_file():
            return -1
        evals = [r for r in read_metrics(path) if r.get("kind") == "eval"]
        if not evals or evals[-1].get("step") != self.step:
            return -1
        self.history.append(evals[-1])
        return self.step

    def guard_finite(self) -> None:
        """Flush, then check the weights: the NaN guard at a point of the step's choosing
        (an online step, before every rollout, whatever ``log_every`` is)."""
        self.flush()
        self.check_weights_finite()

    def save_checkpoint(self) -> Path | None:
        """Flush (so only verified-finite steps are saved), check the weights are finite,
        then write checkpoint ``step`` (pruning never removes the newest good one)."""
        self.flush()
        mgr = self.checkpoints
        if mgr is None:
            return None
        self.check_weights_finite()

        def write(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> Path:
            assert mgr is not None
            extra, extra_state = self.step_strategy.checkpoint_extra(self.objective)
            return mgr.save(
                self.step,
                model=model,
                optimizer=optimizer,
                state={**self.state(), **extra_state},
                config=self.run_config,
                protect=[self.last_good_checkpoint()],
                extra_tensors=extra,
            )

        path = self.parallel.save_checkpoint(mgr, self.step, self.model, self.optimizer, write)
        self.last_checkpoint = path
        return path

    def resume(self) -> bool:
        """Load the newest intact checkpoint of ``run_dir`` if there is one; True when resumed.

        Damaged newer checkpoints are reported, set aside (``step-N.corrupt``) and skipped.

        Raises:
            CorruptCheckpointError: there are checkpoints but none is intact.
        """
        mgr = self.checkpoints
        latest = self.parallel.checkpoint_to_resume(mgr)
        if latest is None or mgr is None:
            return False
        st = self.parallel.load_checkpoint(mgr, latest, self.model, self.optimizer)
        self.step_strategy.restore_extra(self.objective, st, latest)
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
        self.metrics_log().truncate_after(self.step)

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
        """Sync pending step values once, stop on a non-finite one, log the rest."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        tokens = self.parallel.global_tokens([p.tokens for p in pending])
        losses = torch.stack([p.loss.float() for p in pending]).tolist()
        norms = [float(p.grad_norm) if p.grad_norm is not None else None for p in pending]
        records: list[dict[str, Any]] = []
        for p, loss, norm, n in zip(pending, losses, norms, tokens):
            if not math.isfinite(loss) or (norm is not None and not math.isfinite(norm)):
                self.metrics_log().write(records)
                what = f"loss={loss}" if not math.isfinite(loss) else f"gradient norm={norm}"
                self.stop_diverged(what, p.step)
            records.append(record_dict(p, loss, norm, int(n)))
        self.finite_through = pending[-1].step
        self.tokens_seen += sum(r["tokens"] for r in records)
        self.last_loss = losses[-1]
        elapsed = self.elapsed()
        for rec in records:
            rec["elapsed_s"] = round(elapsed, 3)
        self.metrics_log().write(records)
        if self.progress is not None:
            self.progress.update(records, self.tokens_seen / max(elapsed, 1e-9))

    def stop_diverged(self, what: str, step: int) -> None:
        """Step ``step`` gave ``what`` (non-finite): set aside the checkpoints it may have
        reached and raise, naming the last good one.

        Raises:
            NonFiniteLossError: always.
        """
        # Step `step`'s loss is the first bad one: the weights it saw (step - 1) are bad.
        self.finite_through = step - 1
        mgr = self.checkpoints if self.is_main else None
        aside = set_aside_unverified(mgr, self.finite_through)
        good = newest_good(self.checkpoints, self.finite_through)  # on every rank
        self.last_checkpoint = good
        raise NonFiniteLossError(divergence_message(what, step, good, aside))

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
        if self.evaluator is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self.autocast(), eager():  # generation shapes change per step
            result = dict(self.evaluator(self.parallel.eval_model(self.model)))
        self.model.train(was_training)
        rec = {"kind": "eval", "step": self.step, **result}
        self.history.append(rec)
        self.metrics_log().write([rec])
        if self.progress is not None and self.is_main:
            self.progress.write_eval(self.step, result)
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
            source=self.last_checkpoint if resumed else "the model given to the trainer",
        )
        if self.run_dir is not None and self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resumed:  # a fresh run starts a fresh log
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        return resumed

    def run(self, *, resume: bool) -> dict[str, Any]:
        """``fit`` without claiming the run folder (the caller holds it)."""
        cfg = self.config
        resumed = self.start(resume=resume)
        self.step_started = None
        threads_before = torch.get_num_threads()
        if cfg.num_threads is not None:  # for this run only (tiny models run best on 1 thread)
            torch.set_num_threads(cfg.num_threads)
        enabled = cfg.progress and self.is_main
        self.progress = Progress(cfg.steps, self.step, self.title, enabled=enabled)
        if self.is_main:  # every run says what it trains
            announce_trainable(self.title, trainable_summary(self.model))
        self.model.train()
        batches = self.source.batches(self.micro_batches)
        evaluated_at = self.logged_final_eval() if resumed else -1
        try:
            while self.step < cfg.steps:
                self.step_started = time.perf_counter()
                self.train_step(batches)
                step = self.step
                if step % cfg.log_every == 0 or step == cfg.steps:
                    self.flush()
                self.train_time += time.perf_counter() - self.step_started
                self.step_started = None
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
            mgr = self.checkpoints if self.is_main else None
            if mgr is not None:  # the final checkpoint is verified finite: keep_last exactly
                mgr.prune()
        finally:
            self.progress.close()  # type: ignore[union-attr]
            self.progress = None
            torch.set_num_threads(threads_before)
        return finish_run(self, final, resumed=resumed)
